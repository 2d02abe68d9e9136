"""Running an Advanced Hunting query: KQL → DuckDB SQL (duckdb-kql) → a DuckDB relation.

Every failure becomes a ``HuntQueryError`` with a 1-based line and column in the query text when one
can be found: the parser's own position for syntax errors and unsupported constructs, the first
occurrence of the unknown table or column for errors DuckDB reports while binding.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

import duckdb
import duckdb_kql

from etwsensor.tables import schemas


@dataclass
class HuntQueryError(Exception):
    """Why a query cannot run, and where (line and column 1-based; 0 when unknown)."""

    message: str
    line: int = 0
    column: int = 0
    kind: str = "error"  # syntax | unsupported | schema | unknown table | unknown column | runtime

    def __str__(self) -> str:
        where = f"line {self.line}, column {self.column}: " if self.line else ""
        return f"{where}{self.message}"


_UNKNOWN_TABLE = re.compile(r'Table with name "?([^"\s]+?)"? does not exist')
_UNKNOWN_COLUMN = re.compile(r'Referenced column "?([^"\s]+?)"? not found')


def _locate(kql: str, name: str) -> tuple[int, int]:
    """Line and column (1-based) of the first whole-word ``name`` in the query, (0, 0) if absent."""
    m = re.search(r"(?<![\w$])" + re.escape(name) + r"(?![\w$])", kql)
    if m is None:
        return 0, 0
    before = kql[: m.start()]
    return before.count("\n") + 1, m.start() - (before.rfind("\n") + 1) + 1


def _first_line(message: str) -> str:
    return message.strip().splitlines()[0] if message.strip() else message


def translate_error(kql: str, exc: Exception) -> HuntQueryError:
    """The user-facing form of a duckdb-kql or DuckDB exception raised by ``run``."""
    if isinstance(exc, duckdb_kql.KqlSyntaxError):
        if exc.diagnostics:
            d = exc.diagnostics[0]
            return HuntQueryError(f"syntax error: {d.message}", d.span.line, d.span.column + 1, "syntax")
        return HuntQueryError(f"syntax error: {exc}", kind="syntax")
    if isinstance(exc, duckdb_kql.KqlUnsupportedError):
        span = exc.span
        hint = f" ({exc.hint})" if exc.hint else ""
        message = f"not supported by the hunt engine (duckdb-kql): {exc.construct}{hint}"
        if span is not None:
            return HuntQueryError(message, span.line, span.column + 1, "unsupported")
        return HuntQueryError(message, kind="unsupported")
    if isinstance(exc, duckdb_kql.KqlError):
        return HuntQueryError(str(exc), kind="schema")
    text = _first_line(str(exc))
    m = _UNKNOWN_TABLE.search(text)
    if m:
        name = m.group(1)
        line, col = _locate(kql, name)
        known = ", ".join(schemas())
        return HuntQueryError(
            f"unknown table {name!r}: etwsensor records {known}", line, col, "unknown table"
        )
    m = _UNKNOWN_COLUMN.search(text)
    if m:
        line, col = _locate(kql, m.group(1))
        return HuntQueryError(f"unknown column {m.group(1)!r}", line, col, "unknown column")
    return HuntQueryError(text, kind="runtime")


@dataclass
class Result:
    """An executed query: the cursor to fetch from, and the SQL it ran (for COPY … TO)."""

    cursor: duckdb.DuckDBPyConnection
    sql: str
    parameters: dict[str, object]

    @property
    def columns(self) -> list[str]:
        return [d[0] for d in self.cursor.description or []]

    @property
    def types(self) -> list[str]:
        return [str(d[1]) for d in self.cursor.description or []]


# Kusto's deprecated spellings of functions that queries written years ago still use; duckdb-kql knows
# only the current names. Rewritten outside string literals and comments, where they are calls.
_ALIASES = {"makeset": "make_set", "makelist": "make_list", "parsejson": "parse_json"}
_ALIAS_OR_SKIP = re.compile(
    r"""(//[^\n]*|@"(?:[^"]|"")*"|@'(?:[^']|'')*'|"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*')"""
    r"|\b(" + "|".join(_ALIASES) + r")(?=\s*\()"
)


def current_names(kql: str) -> str:
    """The query with Kusto's deprecated function aliases (makeset, makelist, parsejson) renamed."""
    return _ALIAS_OR_SKIP.sub(lambda m: m.group(1) or _ALIASES[m.group(2)], kql)


def translate(
    con: duckdb.DuckDBPyConnection, kql: str, now: datetime | None
) -> tuple[str, dict[str, object]]:
    """The query as DuckDB SQL and its bound values (the clock); raises HuntQueryError."""
    from duckdb_kql.engine import schema

    try:
        sql = duckdb_kql.to_sql(current_names(kql), schema=schema(con), query_now=now, allow_write=False)
    except (duckdb_kql.KqlError, duckdb.Error) as exc:
        raise translate_error(kql, exc) from exc
    if sql.unbound:
        raise HuntQueryError(
            f"declared query parameter(s) with no value: {', '.join(sql.unbound)}", kind="schema"
        )
    return str(sql), dict(sql.parameters)


def run(con: duckdb.DuckDBPyConnection, kql: str, now: datetime | None) -> Result:
    """Run the query; ``now`` is what now()/ago() read. Raises HuntQueryError.

    Errors DuckDB raises while rows are fetched go through ``translate_error`` at the caller.
    """
    sql, params = translate(con, kql, now)
    try:
        cursor = con.execute(sql, params) if params else con.execute(sql)
    except duckdb.Error as exc:
        raise translate_error(kql, exc) from exc
    return Result(cursor, sql, params)
