"""Row files: NDJSON, one Defender table row per line, its table in ``"$table"``.

Used to test rules without ETW: ``{"$table": "DeviceProcessEvents", "FileName": "cmd.exe", ...}``.
Values are coerced to the column types of ``etwsensor.tables`` (datetimes from ISO-8601, numbers
from numbers or numeric strings); missing columns take the table default ("" for strings, null
otherwise); ActionType is not validated. A line that is not a JSON object, names no known table or
column, or holds a value that cannot be coerced is counted and skipped with its line number.
``.ndjson.zst`` files are read through zstandard.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any

from etwsensor.rules import scalars
from etwsensor.tables import TABLE_NAMES, schema

TABLE_KEY = "$table"


class RowValueError(ValueError):
    pass


def _coerce(kql_type: str, value: Any) -> Any:
    if value is None:
        return "" if kql_type == "string" else None
    if kql_type in ("string", "guid"):
        return value if isinstance(value, str) else scalars.as_text(value)
    if kql_type in ("long", "int"):
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise RowValueError(f"not an integer: {value!r}")
    if kql_type == "real":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        converted = scalars.to_real(value) if isinstance(value, str) else None
        if converted is None:
            raise RowValueError(f"not a number: {value!r}")
        return converted
    if kql_type == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise RowValueError(f"not a bool: {value!r}")
    if kql_type == "datetime":
        parsed = scalars.parse_datetime(value) if isinstance(value, str) else None
        if parsed is None:
            raise RowValueError(f"not an ISO-8601 datetime: {value!r}")
        return parsed
    if kql_type == "timespan":
        span = scalars.parse_timespan(value) if isinstance(value, str) else None
        if span is None:
            raise RowValueError(f"not a timespan: {value!r}")
        return span
    return value  # dynamic


def coerce_row(table: str, raw: dict[str, Any]) -> dict[str, Any]:
    """A full row of ``table`` from a JSON object; raises RowValueError naming the column."""
    sch = schema(table)
    row: dict[str, Any] = sch.empty_row()
    for key, value in raw.items():
        if key == TABLE_KEY:
            continue
        kql_type = sch.type_of(key)
        if kql_type is None:
            raise RowValueError(f"{table} has no column {key!r}")
        try:
            row[key] = _coerce(kql_type, value)
        except RowValueError as exc:
            raise RowValueError(f"column {key!r} ({kql_type}): {exc}") from None
    return row


@dataclass
class RowFile:
    """Iterates ``(table, row)``; ``bad_lines`` lists ``(line number, reason)`` of skipped lines."""

    path: Path
    bad_lines: list[tuple[int, str]] = field(default_factory=list)

    @property
    def bad(self) -> int:
        return len(self.bad_lines)

    def _open(self) -> IO[str]:
        if self.path.name.lower().endswith(".zst"):
            import zstandard

            raw = self.path.open("rb")
            return io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(raw), encoding="utf-8")
        return self.path.open("r", encoding="utf-8")

    def __iter__(self) -> Iterator[tuple[str, dict[str, Any]]]:
        with self._open() as fh:
            for number, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    self.bad_lines.append((number, f"not JSON: {exc.msg} at column {exc.colno}"))
                    continue
                if not isinstance(obj, dict):
                    self.bad_lines.append((number, "not a JSON object"))
                    continue
                table = obj.get(TABLE_KEY)
                if table not in TABLE_NAMES:
                    self.bad_lines.append((number, f"unknown or missing {TABLE_KEY}: {table!r}"))
                    continue
                try:
                    row = coerce_row(table, obj)
                except RowValueError as exc:
                    self.bad_lines.append((number, str(exc)))
                    continue
                yield table, row


def read_row_file(path: Path) -> RowFile:
    """Open a row file; iterate it for ``(table, row)``, then read ``.bad``/``.bad_lines``."""
    return RowFile(Path(path))


def row_to_json(row: dict[str, Any]) -> dict[str, Any]:
    """Output form: datetimes ISO-8601 UTC with ``Z``, timespans Kusto text, numbers as numbers."""
    out: dict[str, Any] = {}
    for k, v in row.items():
        if isinstance(v, datetime):
            out[k] = scalars.format_datetime(v)
        elif isinstance(v, timedelta):
            out[k] = scalars.format_timespan(v)
        else:
            out[k] = v
    return out
