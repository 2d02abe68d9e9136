"""What an expression may name (its :class:`Scope`) and what is known of an IR node before it is
compiled: literal values, constants, string columns, and whether a predicate can be null.
"""

from __future__ import annotations

import json
from typing import Any

from etwsensor.rules import scalars as S
from etwsensor.rules.errors import CompileError
from etwsensor.rules.irnorm import flatten_logical
from etwsensor.rules.kqlir import ir
from etwsensor.rules.plan import Clock, Fn


def default(kql_type: str) -> Any:
    return "" if kql_type == "string" else None


class Scope:
    """What an expression may name: the current columns and their types."""

    def __init__(
        self, columns: dict[str, str], table: str, segment: str | None, clock: Clock, raw: bool = False
    ) -> None:
        self.columns = columns
        self.table = table
        self.segment = segment
        self.clock = clock
        self.read: set[str] = set()
        # True while expressions read the unchanged input row: lowered texts may come from the cache.
        self.raw = raw


def literal(node: ir.Literal, segment: str | None) -> tuple[Any, str]:
    kind, value = node.kind, node.value
    if value is None or kind == "null":
        return None, ("dynamic" if kind == "null" else kind)
    if kind in ("long", "int"):
        return int(value), "long"
    if kind in ("real", "decimal"):
        return float(value), "real"
    if kind == "bool":
        return bool(value), "bool"
    if kind in ("string", "guid"):
        return str(value), "string"
    if kind == "datetime":
        parsed = S.parse_datetime(str(value))
        if parsed is None:
            raise CompileError(f"bad datetime literal {value!r}", segment=segment)
        return parsed, "datetime"
    if kind == "timespan":
        span = S.parse_timespan(str(value))
        if span is None:
            raise CompileError(f"bad timespan literal {value!r}", segment=segment)
        return span, "timespan"
    if kind == "dynamic":
        return json.loads(str(value)), "dynamic"
    raise CompileError(f"unsupported literal kind {kind!r}", segment=segment)


def const(value: Any) -> Fn:
    return lambda _r: value


def constant_value(node: ir.Expr, scope: Scope) -> tuple[bool, Any]:
    """(True, value) when ``node`` is a literal (possibly through a scalar ``let``)."""
    if isinstance(node, ir.LetRef) and node.name not in scope.columns:
        return constant_value(node.value, scope)
    if isinstance(node, ir.Literal):
        return True, literal(node, scope.segment)[0]
    if isinstance(node, ir.UnaryOp) and node.op == "-" and isinstance(node.operand, ir.Literal):
        value = literal(node.operand, scope.segment)[0]
        return True, (None if value is None else -value)
    return False, None


STRING_OPS = {
    "contains",
    "!contains",
    "contains_cs",
    "!contains_cs",
    "startswith",
    "!startswith",
    "startswith_cs",
    "!startswith_cs",
    "endswith",
    "!endswith",
    "endswith_cs",
    "!endswith_cs",
    "has",
    "!has",
    "has_cs",
    "!has_cs",
    "hasprefix",
    "!hasprefix",
    "hasprefix_cs",
    "!hasprefix_cs",
    "hassuffix",
    "!hassuffix",
    "hassuffix_cs",
    "!hassuffix_cs",
    "=~",
    "!~",
    "matches regex",
}


def text_of(fn: Fn, kql_type: str) -> Fn:
    """The operand as text: strings pass through, everything else goes through ``as_text``."""
    if kql_type == "string":
        return fn
    return lambda r: S.as_text(fn(r))


def column_fn(name: str, kql_type: str) -> Fn:
    fallback = default(kql_type)
    return lambda r: r.get(name, fallback)


def string_column(node: ir.Expr, scope: Scope) -> str | None:
    if isinstance(node, ir.LetRef) and node.name in scope.columns:
        node = ir.ColumnRef(node.name)
    if isinstance(node, ir.ColumnRef) and scope.columns.get(node.name) == "string":
        return node.name
    return None


# Predicates whose value is always true or false, never null: every string test (strings are
# never null, and non-strings are tested as text), list membership, the is* functions.
_TOTAL_FUNCTIONS = frozenset({"isempty", "isnotempty", "isnull", "isnotnull"})


def never_null(node: ir.Expr, scope: Scope) -> bool:
    if isinstance(node, ir.BinaryOp):
        if node.op in ("and", "or"):
            return all(never_null(t, scope) for t in flatten_logical(node, node.op))
        if node.op in STRING_OPS:
            return True
        if node.op in ("==", "!="):
            # A string column against a non-null constant: plain equality, never null.
            if string_column(node.left, scope) is None:
                return False
            is_const, value = constant_value(node.right, scope)
            return is_const and value is not None
        return False
    if isinstance(node, (ir.InList, ir.HasList)):
        return True
    if isinstance(node, ir.FunctionCall):
        if node.name in _TOTAL_FUNCTIONS:
            return True
        if node.name == "not" and len(node.args) == 1:
            return never_null(node.args[0], scope)
    return False
