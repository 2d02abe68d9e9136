"""`trace --export DIR`: a live sensor writes the Parquet dataset as it runs, rolled hourly.

The live path runs on Linux with the simulated advapi32 of tests/live (the perfview trace's records fed
through the real callback, queue, worker and normalizer); the dataset it leaves must hold the same rows a
recording of the same run gives to `hunt`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from etwsensor.cli import app
from etwsensor.hunt.dataset import HourlyExport
from etwsensor.sources.live import cli as live_cli
from tests.live.simadvapi import SimulatedAdvapi32
from tests.live.test_live_command import _feed, _records, run


def _counts(*args: str) -> dict[str, int]:
    q = "union withsource=T DeviceProcessEvents, DeviceImageLoadEvents, DeviceFileEvents"
    r = CliRunner().invoke(app, ["hunt", q + " | summarize n = count() by T", *args])
    assert r.exit_code in (0, 3), r.stderr
    return {row["T"]: row["n"] for row in map(json.loads, r.stdout.splitlines())}


def test_trace_export_writes_the_rows_a_recording_of_the_same_run_gives(tmp_path: Path) -> None:
    sim = SimulatedAdvapi32()
    records = _records()
    dataset = tmp_path / "dataset"
    recording = tmp_path / "live.jsonl.zst"

    def drive() -> None:
        _feed(sim, records)
        (tmp_path / "stop").touch()

    run(tmp_path, sim, drive, record=recording, options=live_cli.LiveOptions(export=dataset))
    parts = list(dataset.glob("table=*/date=*/device=*/part-*.parquet"))
    assert parts
    exported = _counts(str(dataset))
    assert sum(exported.values()) >= 50  # the perfview trace: 35 image loads, 14 files, 1 process
    assert exported == _counts(str(recording))


def test_hourly_export_rolls_at_each_full_hour(tmp_path: Path) -> None:
    now = [3600.0 * 100 + 10]  # ten seconds into an hour
    writer = HourlyExport(tmp_path, clock=lambda: now[0])
    t0 = datetime(2026, 11, 20, 9, tzinfo=UTC)

    def row(i: int) -> dict[str, Any]:
        return {"Timestamp": t0 + timedelta(seconds=i), "DeviceName": "ws01", "FileName": f"{i}.txt"}

    def parts() -> int:
        return len(list(tmp_path.glob("table=DeviceFileEvents/*/*/part-*.parquet")))

    for i in range(5):
        writer.add("DeviceFileEvents", row(i))
    assert parts() == 0  # held until the hour is over
    now[0] += 3600
    writer.add("DeviceFileEvents", row(5))  # the first row of the next hour writes the hour's rows
    assert parts() == 1
    for i in range(6, 9):
        writer.add("DeviceFileEvents", row(i))
    assert parts() == 1
    writer.close()
    assert parts() == 2 and writer.written == {"DeviceFileEvents": 9}
