"""Writing a hunt result: a rich table for a terminal, NDJSON, CSV or Parquet otherwise.

NDJSON and CSV stream the relation in chunks. Values take the same forms as etwsensor's rows and
alerts: datetimes ISO-8601 UTC with ``Z``, timespans in Kusto's text form, ``dynamic`` values (DuckDB
JSON, lists, structs) as JSON. Parquet is written by DuckDB itself (zstd) to a file.
"""

from __future__ import annotations

import contextlib
import csv
import json
import sys
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import IO, Any
from uuid import UUID

import duckdb

from etwsensor.hunt.query import Result
from etwsensor.rules import scalars

FORMATS = ("table", "ndjson", "csv", "parquet")
CHUNK = 10_000


def _plain(value: Any) -> Any:
    """A fetched DuckDB value as a JSON-ready Python value."""
    if isinstance(value, datetime):
        return scalars.format_datetime(value)
    if isinstance(value, timedelta):
        return scalars.format_timespan(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def records(rel: Result) -> Iterator[list[Any]]:
    """The result's rows as JSON-ready values, in chunks.

    Kusto strings are never null, so a null string (a column an outer ``union`` leg lacks, in duckdb-kql)
    comes out as ``""``, as Kusto and the streaming rules give it.
    """
    types = [t.upper() for t in rel.types]
    is_json = [t == "JSON" for t in types]  # dynamic values arrive as JSON text
    is_text = [t == "VARCHAR" for t in types]
    while True:
        chunk = rel.cursor.fetchmany(CHUNK)
        if not chunk:
            return
        for row in chunk:
            out = []
            for value, js, text in zip(row, is_json, is_text, strict=True):
                if value is None:
                    out.append("" if text else None)
                    continue
                if js and isinstance(value, str):
                    with contextlib.suppress(ValueError):
                        value = json.loads(value)
                out.append(_plain(value))
            yield out


def write_ndjson(rel: Result, fh: IO[str]) -> int:
    names = rel.columns
    encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    n = 0
    for rec in records(rel):
        fh.write(encode(dict(zip(names, rec, strict=True))) + "\n")
        n += 1
    return n


def write_csv(rel: Result, fh: IO[str]) -> int:
    writer = csv.writer(fh, lineterminator="\n")
    writer.writerow(rel.columns)
    n = 0
    for rec in records(rel):
        writer.writerow(
            json.dumps(v, ensure_ascii=False) if isinstance(v, list | dict) else ("" if v is None else v)
            for v in rec
        )
        n += 1
    return n


def write_parquet(con: duckdb.DuckDBPyConnection, rel: Result, path: Path) -> int:
    """DuckDB writes the result (the query runs again inside COPY; the cursor is left unread)."""
    target = str(path).replace("'", "''")
    copy = f"COPY ({rel.sql}) TO '{target}' (FORMAT parquet, COMPRESSION zstd)"
    got = (con.execute(copy, rel.parameters) if rel.parameters else con.execute(copy)).fetchone()
    return int(got[0]) if got else 0


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return json.dumps(value, ensure_ascii=False) if isinstance(value, list | dict) else str(value)


def print_table(rel: Result, limit: int) -> int:
    """A rich table on stdout with at most ``limit`` rows; returns the number of rows in the result."""
    from rich.console import Console
    from rich.table import Table

    table = Table(*rel.columns, show_lines=False)
    shown = 0
    total = 0
    for rec in records(rel):
        total += 1
        if shown < limit:
            table.add_row(*(_cell(v) for v in rec))
            shown += 1
    Console().print(table)
    if total > shown:
        print(
            f"{total - shown} more row(s) not shown; --format ndjson|csv|parquet gives all", file=sys.stderr
        )
    return total
