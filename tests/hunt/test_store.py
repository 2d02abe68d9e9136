"""The DuckDB row store: batched loading keeps at most one batch per table in memory."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from etwsensor.hunt.dataset import DatasetWriter
from etwsensor.hunt.store import RowLoader, connect


class WatchedList(list[dict[str, Any]]):
    """A pending buffer that remembers the longest it ever was."""

    longest = 0

    def append(self, item: dict[str, Any]) -> None:
        super().append(item)
        WatchedList.longest = max(WatchedList.longest, len(self))


def _rows(n: int) -> list[tuple[str, dict[str, Any]]]:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    return [
        (
            "DeviceFileEvents",
            {
                "Timestamp": t0 + timedelta(seconds=i),
                "FileName": f"f{i}.txt",
                "ReportId": i,
                "DeviceName": f"host{i % 3}",
            },
        )
        for i in range(n)
    ]


def test_loader_holds_at_most_one_batch() -> None:
    con = connect()
    loader = RowLoader(con, batch=100)
    WatchedList.longest = 0
    loader.pending["DeviceFileEvents"] = WatchedList()
    for table, row in _rows(1050):
        loader.add(table, row)
        if not isinstance(loader.pending["DeviceFileEvents"], WatchedList):
            loader.pending["DeviceFileEvents"] = WatchedList(loader.pending["DeviceFileEvents"])
    loader.flush()
    assert WatchedList.longest <= 100
    got = con.execute('SELECT count(*), max(ReportId), min("FolderPath") FROM "DeviceFileEvents"').fetchone()
    assert got == (1050, 1049, "")  # unfilled string columns are "" as in Defender


def test_dataset_writer_rolls_when_full(tmp_path: Any) -> None:
    writer = DatasetWriter(tmp_path, max_rows=400, batch=50)
    writer.add_all(_rows(1000))
    writer.close()
    parts = sorted(tmp_path.glob("table=DeviceFileEvents/date=2026-01-01/device=*/part-*.parquet"))
    assert {p.parent.name for p in parts} == {"device=host0", "device=host1", "device=host2"}
    assert len(parts) == 3 * 3  # rolled at 400 and 800 rows, then closed: three sets of parts
    assert writer.written == {"DeviceFileEvents": 1000}
