"""Defender rows in DuckDB: one table per Defender table, with Defender's column types.

Rows are appended in column batches (one ``INSERT … SELECT unnest(?) …`` per table and batch), so loading
a large input holds at most one batch per table in Python. ``dynamic`` columns are DuckDB ``JSON``,
``datetime`` is ``TIMESTAMPTZ`` (UTC), ``timespan`` is ``INTERVAL``; the others map one to one.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb

from etwsensor.tables import TableSchema, schemas

SQL_TYPES: dict[str, str] = {
    "string": "VARCHAR",
    "long": "BIGINT",
    "int": "INTEGER",
    "bool": "BOOLEAN",
    "datetime": "TIMESTAMPTZ",
    "real": "DOUBLE",
    "dynamic": "JSON",
    "guid": "VARCHAR",
    "timespan": "INTERVAL",
}

INPUTS_TABLE = "etwsensor_inputs"  # what a --db database already holds, so an input is loaded once
BATCH_ROWS = 20_000


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def column_defs(table: TableSchema) -> str:
    return ", ".join(f"{quote(c.name)} {SQL_TYPES[c.type]}" for c in table.columns)


def connect(database: str | Path | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection in UTC with every Defender table etwsensor produces (created when missing)."""
    con = duckdb.connect(str(database) if database is not None else ":memory:")
    con.execute("SET TimeZone='UTC'")
    for table in schemas().values():
        con.execute(f"CREATE TABLE IF NOT EXISTS {quote(table.name)} ({column_defs(table)})")
    con.execute(
        f"CREATE TABLE IF NOT EXISTS {INPUTS_TABLE} (path VARCHAR, size BIGINT, mtime DOUBLE, rows BIGINT,"
        " loaded_at TIMESTAMPTZ)"
    )
    return con


def _json_value(value: Any) -> Any:
    """A dynamic value as JSON text (DuckDB JSON); strings that already are JSON pass through."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


class RowLoader:
    """Buffers rows per table and appends them to DuckDB ``batch`` rows at a time."""

    def __init__(self, con: duckdb.DuckDBPyConnection, batch: int = BATCH_ROWS, prefix: str = "") -> None:
        self.con = con
        self.batch = batch
        self.prefix = prefix  # staging tables (export) are named prefix + Defender table name
        self.pending: dict[str, list[dict[str, Any]]] = {}
        self.loaded: dict[str, int] = {}
        self._inserts: dict[str, str] = {}

    def _insert_sql(self, table: TableSchema) -> str:
        sql = self._inserts.get(table.name)
        if sql is None:
            select = ", ".join(
                f"unnest(${i}::{SQL_TYPES[c.type]}[])" for i, c in enumerate(table.columns, start=1)
            )
            sql = f"INSERT INTO {quote(self.prefix + table.name)} SELECT {select}"
            self._inserts[table.name] = sql
        return sql

    def add(self, table: str, row: dict[str, Any]) -> None:
        rows = self.pending.get(table)
        if rows is None:
            if table not in schemas():
                return  # a table this build does not know (cannot happen for rows our sources make)
            rows = self.pending[table] = []
        rows.append(row)
        if len(rows) >= self.batch:
            self._write(table)

    def flush(self) -> None:
        for table in list(self.pending):
            self._write(table)

    def _write(self, name: str) -> None:
        rows = self.pending.get(name)
        if not rows:
            return
        table = schemas()[name]
        columns: list[list[Any]] = []
        for c in table.columns:
            missing = "" if c.type == "string" else None  # as Defender leaves unfilled columns
            column = c.name
            values = [r.get(column, missing) for r in rows]
            if c.type == "dynamic":
                values = [_json_value(v) for v in values]
            columns.append(values)
        self.pending[name] = []  # first: a Ctrl-C after the insert must not insert these rows again
        self.con.execute(self._insert_sql(table), columns)
        self.loaded[name] = self.loaded.get(name, 0) + len(rows)


@dataclass
class LoadReport:
    """What loading inputs did: rows per table, inputs skipped as already loaded, damage."""

    rows: dict[str, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    damage: list[str] = field(default_factory=list)
    events: int = 0
    loaded: list[str] = field(default_factory=list)  # inputs loaded whole (each committed)


def _fingerprint(path: Path) -> tuple[str, int, float]:
    st = path.stat()
    return str(path.resolve()), st.st_size, st.st_mtime


def load_inputs(
    con: duckdb.DuckDBPyConnection,
    paths: Iterable[Path],
    device_map: str | None = None,
    batch: int = BATCH_ROWS,
    report: LoadReport | None = None,
) -> LoadReport:
    """Load the rows of every input (as ``replay`` reads them) into the connection's tables.

    An input whose path, size and modification time the database already lists is skipped, so a
    ``--db`` database grows input by input. Each input is one transaction. Never raises on bad input:
    damage (and inputs that are not traces at all) is listed in the report. A given ``report`` is
    filled input by input, so after a Ctrl-C it tells what the committed inputs loaded.
    """
    from etwsensor.pipeline import ReplaySummary, input_rows
    from etwsensor.sources import SourceOpenError

    report = report if report is not None else LoadReport()
    for path in paths:
        key = _fingerprint(path)
        seen = con.execute(
            f"SELECT count(*) FROM {INPUTS_TABLE} WHERE path = ? AND size = ? AND mtime = ?", list(key)
        ).fetchone()
        if seen is not None and seen[0]:
            report.skipped.append(str(path))
            continue
        summary = ReplaySummary()
        loader = RowLoader(con, batch)
        con.execute("BEGIN TRANSACTION")
        try:
            for table, row in input_rows(path, device_map, summary):
                loader.add(table, row)
            loader.flush()
        except SourceOpenError as exc:
            summary.damage.append(str(exc))
        except BaseException:
            con.execute("ROLLBACK")
            raise
        total = sum(loader.loaded.values())
        con.execute(
            f"INSERT INTO {INPUTS_TABLE} VALUES (?, ?, ?, ?, ?)",
            [*key, total, datetime.now().astimezone()],
        )
        con.execute("COMMIT")
        for t, n in loader.loaded.items():
            report.rows[t] = report.rows.get(t, 0) + n
        report.events += summary.events
        report.damage.extend(summary.damage)
        report.loaded.append(str(path))
    return report


def newest_time(con: duckdb.DuckDBPyConnection) -> datetime | None:
    """The newest Timestamp over every Defender table (or view) the connection holds."""
    parts = " UNION ALL ".join(f"SELECT max(Timestamp) AS t FROM {quote(n)}" for n in schemas())
    got = con.execute(f"SELECT max(t) FROM ({parts})").fetchone()
    value = got[0] if got else None
    return value if isinstance(value, datetime) else None
