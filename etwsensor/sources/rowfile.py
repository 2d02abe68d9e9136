"""Row files: NDJSON, one Defender table row per line, its table in ``"$table"``.

Used to test rules without ETW: ``{"$table": "DeviceProcessEvents", "FileName": "cmd.exe", ...}``.
Values are coerced to the column types of ``etwsensor.tables`` (datetimes from ISO-8601, numbers
from numbers or numeric strings); missing columns take the table default ("" for strings, null
otherwise); ActionType is not validated. A line that is not a JSON object, names no known table or
column, holds a value that cannot be coerced, is not UTF-8 or is nested too deeply is counted and
skipped with its line number; a corrupt ``.zst`` stream ends the reading with its line number. A lone
UTF-16 surrogate (``"\ud800"``) becomes U+FFFD, the one policy of every input (``etwsensor.sources.text``).
``.ndjson.zst`` files are read through zstandard.

Defender Advanced Hunting exports are row files too: CSV or JSON (JSON Lines, an array, or the API's
``{"Results": [...]}``), as the portal, the API and Sentinel / Log Analytics write them. Their table
is the row's ``$table`` or ``Type`` column, else a table name in the file name
(``DeviceProcessEvents.csv``), else the one its ActionType belongs to. Log Analytics' extra columns
(``TenantId``, ``Type``, ``SourceSystem``, ``TimeGenerated``, ``MachineGroup``, ``_BilledSize``, …) are
dropped, a ``X_string``/``X_long``/… twin fills ``X`` when ``X`` is empty, ``Timestamp`` falls back to
``TimeGenerated``, CSV headers lose their `` [UTC]`` suffix, empty CSV cells are nulls; columns the
table does not have are dropped and counted (``dropped_columns``), not errors.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from etwsensor.rules import scalars
from etwsensor.sources.jsondocs import is_wrapper
from etwsensor.sources.text import clean_strings
from etwsensor.tables import TABLE_NAMES, schema

TABLE_KEY = "$table"
_NOT_UTF8 = re.compile("[\udc80-\udcff]")  # bytes surrogateescape kept: the line was not UTF-8
# Columns Log Analytics / Sentinel add to its copies of the Defender tables
_LOG_ANALYTICS = frozenset({
    "TenantId", "Type", "SourceSystem", "TimeGenerated", "MachineGroup", "_BilledSize", "_IsBillable",
    "_ResourceId", "_SubscriptionId", "_ItemId", "_Internal_WorkspaceResourceId",
})  # fmt: skip
_TWIN = re.compile(r"^(.+)_(string|long|int|real|bool|datetime|dynamic|guid|timespan)$")
_ACTION_TABLES = {"ProcessCreated": "DeviceProcessEvents", "ImageLoaded": "DeviceImageLoadEvents"}
# Log Analytics' CSV export writes times as "5/1/2023, 12:34:56.789 PM"
_US_TIME_FORMATS = ("%m/%d/%Y, %I:%M:%S.%f %p", "%m/%d/%Y, %I:%M:%S %p", "%m/%d/%Y %I:%M:%S %p")


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


def _table_of_action(action: Any) -> str | None:
    if not isinstance(action, str):
        return None
    if action in _ACTION_TABLES:
        return _ACTION_TABLES[action]
    if action.startswith("Registry"):
        return "DeviceRegistryEvents"
    if action.startswith("File"):
        return "DeviceFileEvents"
    return None


def _export_time(value: str) -> datetime | None:
    parsed = scalars.parse_datetime(value)
    if parsed is not None:
        return parsed
    for fmt in _US_TIME_FORMATS:
        try:
            return datetime.strptime(value.strip(), fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    return None


def coerce_export_row(
    table: str, raw: dict[str, Any], dropped: Counter[str], from_csv: bool
) -> dict[str, Any]:
    """A full row of ``table`` from one row of a Defender / Log Analytics export (see the module doc)."""
    sch = schema(table)
    values: dict[str, Any] = {}
    twins: dict[str, Any] = {}
    for key, value in raw.items():
        name = key[:-6].rstrip() if key.endswith(" [UTC]") else key
        if from_csv and value == "":
            value = None
        if sch.type_of(name) is not None:
            values[name] = value
            continue
        m = _TWIN.match(name)
        if m is not None and sch.type_of(m.group(1)) is not None:
            twins[m.group(1)] = value
        elif name == "TimeGenerated":
            twins.setdefault("Timestamp", value)
        elif name not in _LOG_ANALYTICS and name != TABLE_KEY and value not in (None, ""):
            dropped[name] += 1  # (an empty cell of another table's column in a mixed file is not news)
    for name, value in twins.items():
        if values.get(name) in (None, ""):
            values[name] = value
    row: dict[str, Any] = sch.empty_row()
    for name, value in values.items():
        kql_type = sch.type_of(name)
        assert kql_type is not None
        if kql_type == "datetime" and isinstance(value, str):
            parsed = _export_time(value)
            if parsed is None:
                raise RowValueError(f"column {name!r} (datetime): not a time: {value!r}")
            row[name] = parsed
            continue
        if kql_type == "string" and isinstance(value, (dict, list)):
            row[name] = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
            continue
        try:
            row[name] = _coerce(kql_type, value)
        except RowValueError as exc:
            raise RowValueError(f"column {name!r} ({kql_type}): {exc}") from None
    return row


@dataclass
class RowFile:
    """Iterates ``(table, row)``; ``bad_lines`` lists ``(line number, reason)`` of skipped lines."""

    path: Path
    bad_lines: list[tuple[int, str]] = field(default_factory=list)
    dropped_columns: Counter[str] = field(default_factory=Counter)  # export columns no table has
    kind: str = "rows"  # "rows" ($table NDJSON), "defender-csv" or "defender-json"
    _line: int = 0  # the last line read, for damage that ends the reading

    @property
    def bad(self) -> int:
        return len(self.bad_lines)

    def _file_table(self) -> str | None:
        name = self.path.name.lower()
        return next((t for t in TABLE_NAMES if t.lower() in name), None)

    def _table(self, obj: dict[str, Any], file_table: str | None) -> str | None:
        for key in (TABLE_KEY, "Type"):
            if obj.get(key) in TABLE_NAMES:
                return str(obj[key])
        return file_table or _table_of_action(obj.get("ActionType"))

    def _export_rows(
        self, items: Iterator[tuple[int, Any]], from_csv: bool
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        from etwsensor.sources.jsondocs import BadItem

        file_table = self._file_table()
        for number, obj in items:
            if isinstance(obj, BadItem):
                self.bad_lines.append((number, obj.reason))
                continue
            if TABLE_KEY in obj and not from_csv:
                table = obj.get(TABLE_KEY)
                if table not in TABLE_NAMES:
                    self.bad_lines.append((number, f"unknown or missing {TABLE_KEY}: {table!r}"))
                    continue
                try:
                    yield table, coerce_row(table, obj)
                except RowValueError as exc:
                    self.bad_lines.append((number, str(exc)))
                continue
            table = self._table(obj, file_table)
            if table is None:
                self.bad_lines.append((number, "no table: no $table/Type column, file name or ActionType"))
                continue
            try:
                yield table, coerce_export_row(table, obj, self.dropped_columns, from_csv)
            except RowValueError as exc:
                self.bad_lines.append((number, str(exc)))

    def _csv_items(self) -> Iterator[tuple[int, Any]]:
        from etwsensor.sources.jsondocs import BadItem

        with self._open() as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []
            if any(_NOT_UTF8.search(name) for name in header):  # reported once; U+FFFD names the column
                bad = next(name for name in header if _NOT_UTF8.search(name))
                yield 1, BadItem(f"not UTF-8 (header cell {header.index(bad) + 1})")
                reader.fieldnames = [_NOT_UTF8.sub("\ufffd", name) for name in header]
            end = reader.line_num
            for row in reader:
                start, end = end + 1, reader.line_num  # a quoted cell may span lines: report the first
                extra = row.pop(None, None)  # type: ignore[call-overload]
                if extra:
                    yield end, BadItem(f"{len(extra)} more cells than the header has")
                    continue
                # Bytes that are not UTF-8 arrive as lone surrogates: the row is skipped and reported, as
                # a line of a row file is, instead of reaching the rules as escaped bytes.
                if _NOT_UTF8.search("".join(v for v in row.values() if v)):  # one pass; rarely true
                    column = next(k for k, v in row.items() if v and _NOT_UTF8.search(v))
                    yield start, BadItem(f"not UTF-8 (column {column})")
                    continue
                yield (
                    end,
                    clean_strings({k.lstrip("\ufeff"): v for k, v in row.items() if k is not None}),
                )

    def _is_csv(self) -> bool:
        name = self.path.name.lower()
        if name.endswith((".csv", ".csv.zst")):
            return True
        with self._open() as fh:
            head = fh.read(4096).lstrip("\ufeff \t\r\n")
        return bool(head) and head[0] not in "{["

    def _whole_json(self) -> bool:
        """True when the file is one JSON document (an array, a wrapper object), not JSON Lines."""
        with self._open() as fh:
            head = fh.read(1 << 20).lstrip("\ufeff \t\r\n")
        if head[:1] == "[":
            return True
        if head[:1] != "{":
            return False
        try:
            first = json.loads(head.split("\n", 1)[0])
            return is_wrapper(first)  # a one-line API answer is one document, not JSON Lines
        except (ValueError, RecursionError):
            pass
        try:
            with self._open() as fh:
                json.load(fh)
            return True
        except (ValueError, RecursionError):
            return False

    def _open(self) -> IO[str]:
        # Bytes that are not UTF-8 arrive as lone surrogates (surrogateescape): the line holding them
        # is reported, nothing raises while the file is being sniffed.
        if self.path.name.lower().endswith(".zst"):
            import zstandard

            raw = self.path.open("rb")
            stream = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
            return io.TextIOWrapper(stream, encoding="utf-8", errors="surrogateescape")
        return self.path.open("r", encoding="utf-8", errors="surrogateescape")

    def __iter__(self) -> Iterator[tuple[str, dict[str, Any]]]:
        try:
            yield from self._rows()
        except RecursionError:  # a whole-file JSON document nested too deeply
            self.bad_lines.append((self._line + 1, "nested too deeply; the rest is unreadable"))
        except (OSError, ValueError, EOFError) as exc:  # zstandard.ZstdError is a ValueError
            self.bad_lines.append((self._line + 1, f"stream broken, the rest is unreadable: {exc}"))

    def _rows(self) -> Iterator[tuple[str, dict[str, Any]]]:
        if self._is_csv():
            self.kind = "defender-csv"
            yield from self._export_rows(self._csv_items(), from_csv=True)
            return
        if self._whole_json():
            from etwsensor.sources.jsondocs import iter_objects

            self.kind = "defender-json"
            yield from self._export_rows(iter_objects(self.path), from_csv=False)
            return
        file_table = self._file_table()
        with self._open() as fh:
            for number, line in enumerate(fh, start=1):
                self._line = number
                if not line.strip():
                    continue
                bad_byte = _NOT_UTF8.search(line)
                if bad_byte is not None:
                    where = bad_byte.start() + 1
                    self.bad_lines.append((number, f"not UTF-8 (character {where} of the line)"))
                    continue
                try:
                    obj = clean_strings(json.loads(line))
                except json.JSONDecodeError as exc:
                    self.bad_lines.append((number, f"not JSON: {exc.msg} at column {exc.colno}"))
                    continue
                except RecursionError:
                    self.bad_lines.append((number, "nested too deeply"))
                    continue
                if not isinstance(obj, dict):
                    self.bad_lines.append((number, "not a JSON object"))
                    continue
                if TABLE_KEY not in obj and self._table(obj, file_table) is not None:
                    self.kind = "defender-json"  # an export in JSON Lines
                    yield from self._export_rows(iter([(number, obj)]), from_csv=False)
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
