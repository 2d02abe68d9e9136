"""Hive-partitioned Parquet datasets of Defender rows: ``DIR/table=T/date=D/device=NAME/part-*.parquet``.

DuckDB writes the files (``COPY … PARTITION_BY (date, device)``, zstd). Each file holds exactly the
columns of its Defender table with Defender's types; ``table``, ``date`` (the UTC day of Timestamp) and
``device`` (DeviceName) exist only in the path. Part names are unique (a UUID each), so any number of
writers — hosts, runs, hourly rolls — add files to the same dataset without touching each other's.
Reading selects the partition directories first (``--since/--until/--device``), then DuckDB uses the
files' row-group statistics for the rest of the query's filters.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import duckdb

from etwsensor.hunt.store import RowLoader, column_defs, quote
from etwsensor.tables import schemas

STAGE = "stage_"  # staging tables: rows wait here until they are written out
UNKNOWN = "unknown"  # partition value for a row without Timestamp or DeviceName


def is_dataset(path: Path) -> bool:
    """A directory that holds (or is meant to hold) ``table=…`` partitions."""
    return path.is_dir() and any(p.is_dir() and p.name.startswith("table=") for p in path.iterdir())


def copy_to_dataset(con: duckdb.DuckDBPyConnection, source: str, table: str, out: Path) -> None:
    """Append the rows of ``source`` (a table or view of ``table``'s columns) to the dataset ``out``."""
    target = out / f"table={table}"
    target.mkdir(parents=True, exist_ok=True)
    path = str(target).replace("'", "''")
    con.execute(
        f"COPY (SELECT *, coalesce(strftime(Timestamp, '%Y-%m-%d'), '{UNKNOWN}') AS date,"
        f" coalesce(nullif(DeviceName, ''), '{UNKNOWN}') AS device FROM {quote(source)})"
        f" TO '{path}' (FORMAT parquet, PARTITION_BY (date, device), COMPRESSION zstd,"
        " FILENAME_PATTERN 'part-{uuid}', APPEND)"
    )


class DatasetWriter:
    """Rows in, Parquet parts out: rows are staged in DuckDB and written when ``roll`` is called
    (or when ``max_rows`` are staged), so memory stays bounded whatever the input size."""

    def __init__(self, out: Path, max_rows: int = 1_000_000, batch: int = 20_000) -> None:
        self.out = out
        self.max_rows = max_rows
        self.con = duckdb.connect(":memory:")
        self.con.execute("SET TimeZone='UTC'")
        self.con.execute("SET preserve_insertion_order=false")
        for t in schemas().values():
            self.con.execute(f"CREATE TABLE {quote(STAGE + t.name)} ({column_defs(t)})")
        self.loader = RowLoader(self.con, batch, prefix=STAGE)
        self.staged = 0
        self.written: dict[str, int] = {}
        self.parts = 0

    def add(self, table: str, row: dict[str, Any]) -> None:
        self.loader.add(table, row)
        self.staged += 1
        if self.staged >= self.max_rows:
            self.roll()

    def add_all(self, rows: Iterable[tuple[str, dict[str, Any]]]) -> None:
        for table, row in rows:
            self.add(table, row)

    def roll(self) -> None:
        """Write every staged row as new parts of the dataset, then empty the staging tables."""
        self.loader.flush()
        for name in schemas():
            stage = STAGE + name
            got = self.con.execute(f"SELECT count(*) FROM {quote(stage)}").fetchone()
            n = int(got[0]) if got else 0
            if not n:
                continue
            copy_to_dataset(self.con, stage, name, self.out)
            self.con.execute(f"DELETE FROM {quote(stage)}")
            self.written[name] = self.written.get(name, 0) + n
            self.parts += 1
        self.staged = 0

    def close(self) -> None:
        self.roll()
        self.con.close()


class HourlyExport(DatasetWriter):
    """A live sensor's dataset writer: staged rows are written at every full hour of the wall clock (checked
    as rows arrive), when ``max_rows`` are staged, and at ``close``."""

    def __init__(self, out: Path, clock: Callable[[], float] = time.time, every: float = 3600.0) -> None:
        super().__init__(out)
        self.clock = clock
        self.every = every
        self.next_roll = self._boundary()

    def _boundary(self) -> float:
        return (self.clock() // self.every + 1) * self.every

    def add(self, table: str, row: dict[str, Any]) -> None:
        super().add(table, row)
        if self.clock() >= self.next_roll:
            self.roll()
            self.next_roll = self._boundary()


@dataclass
class Partitions:
    """Which partitions to read: days from ``since`` to ``until`` (inclusive), devices by name."""

    since: datetime | None = None
    until: datetime | None = None
    devices: frozenset[str] = field(default_factory=frozenset)

    def wants(self, day: str, device: str) -> bool:
        if self.devices and device.lower() not in self.devices:
            return False
        if day == UNKNOWN:
            return self.since is None and self.until is None
        try:
            d = date.fromisoformat(day)
        except ValueError:
            return True  # not ours to judge: read it
        if self.since is not None and d < self.since.date():
            return False
        return not (self.until is not None and d > self.until.date())


def dataset_files(root: Path, table: str, parts: Partitions) -> list[str]:
    """The Parquet files of one table that the partition filter keeps."""
    base = root / f"table={table}"
    if not base.is_dir():
        return []
    files: list[str] = []
    for day_dir in sorted(base.glob("date=*")):
        day = unquote(day_dir.name[len("date=") :])
        for dev_dir in sorted(day_dir.glob("device=*")):
            device = unquote(dev_dir.name[len("device=") :])
            if parts.wants(day, device):
                files.extend(str(f) for f in sorted(dev_dir.glob("*.parquet")))
    return files


def attach_datasets(con: duckdb.DuckDBPyConnection, roots: list[Path], parts: Partitions) -> dict[str, int]:
    """Make each Defender table name read the loaded rows plus the datasets' files (temporary views).

    Returns the number of files per table that the partition filter kept.
    """
    kept: dict[str, int] = {}
    got = con.execute("SELECT current_database()").fetchone()
    catalog = quote(str(got[0])) if got else "memory"  # the loaded rows, under the view's own name
    for name, table in schemas().items():
        files = [f for root in roots for f in dataset_files(root, name, parts)]
        kept[name] = len(files)
        filtered = parts.since is not None or parts.until is not None or bool(parts.devices)
        if not files and not filtered:
            continue
        cols = ", ".join(quote(c.name) for c in table.columns)
        listed = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
        where = []
        if parts.since is not None:
            where.append(f"Timestamp >= '{parts.since.isoformat()}'::TIMESTAMPTZ")
        if parts.until is not None:
            where.append(f"Timestamp <= '{parts.until.isoformat()}'::TIMESTAMPTZ")
        if parts.devices:
            names = ", ".join("'" + d.replace("'", "''") + "'" for d in sorted(parts.devices))
            where.append(f"lower(DeviceName) IN ({names})")
        cond = f" WHERE {' AND '.join(where)}" if where else ""
        sql = f"SELECT {cols} FROM {catalog}.main.{quote(name)}{cond}"
        if files:  # union_by_name: files written before a column was added read it as null
            sql += f" UNION ALL SELECT {cols} FROM read_parquet([{listed}], union_by_name=true){cond}"
        con.execute(f"CREATE OR REPLACE TEMP VIEW {quote(name)} AS {sql}")
    return kept
