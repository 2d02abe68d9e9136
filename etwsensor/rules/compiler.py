"""duckdb-kql IR → per-table streaming plans made of Python closures.

A query becomes a list of *branches*, one per table leg of its ``union``s (tabular ``let``s are
inlined). A branch is a chain of stages (``where``, ``extend``, ``project``…) that takes one
input row and returns the projected output row or None. Operators after a ``union`` are
compiled once and shared by every leg. Nothing here evaluates rule text: the IR is turned into
closures over constants.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import re2
from duckdb_kql import ir

from etwsensor.rules import scalars as S
from etwsensor.rules.errors import CompileError
from etwsensor.tables import TABLE_NAMES, schema

Row = dict[str, Any]
Fn = Callable[[Row], Any]
Stage = Callable[[Row], "Row | None"]


class Clock:
    """Per-evaluation context shared by a rule set's plans.

    ``now`` is the stream clock ``now()``/``ago()`` read, set by the caller. ``row``/``lowered``
    cache the lower-cased text of the input row's string columns, so that the prefilter and every
    case-insensitive test of every rule lower a column once per row, not once per test.
    """

    __slots__ = ("lowered", "now", "row")

    def __init__(self) -> None:
        self.now: datetime | None = None
        self.row: Row | None = None
        self.lowered: dict[str, str] = {}


def lowered_column(clock: Clock, column: str) -> Fn:
    """The lower-cased text of ``column`` of the input row, cached per row in ``clock``.

    Only for tests on the unchanged input row (before any extend/project/union): the cache is
    keyed by the identity of the row object, which the clock holds, so it cannot be reused.
    """

    def get(r: Row) -> str:
        if clock.row is not r:
            clock.row = r
            clock.lowered = {}
        cache = clock.lowered
        text = cache.get(column)
        if text is None:
            value = r.get(column)
            text = "" if not value else (value if type(value) is str else S.as_text(value)).lower()
            cache[column] = text
        return text

    return get


@dataclass(slots=True)
class Branch:
    """One leg: rows of ``table`` go through ``stages`` to an output row."""

    table: str
    stages: list[Stage]
    label: str = ""
    # Still the unchanged input row (only wheres so far): needles are only valid then.
    raw: bool = True
    # Prefilter: each group is a set of (column, lower-cased literal, exact) needles one of which
    # must hold in a matching row; every group must be satisfied. Empty: no guarantee.
    needle_groups: list[frozenset[tuple[str, str, bool]]] = field(default_factory=list)
    # The conjuncts of the wheres before any reshaping, tested on the input row itself: the
    # common case (and the whole of a Sigma rule) costs one call per conjunct, no stage calls.
    filters: list[Fn] = field(default_factory=list)

    @property
    def needles(self) -> frozenset[tuple[str, str, bool]] | None:
        """One needle group (any one is a necessary condition): an ActionType-only one if any."""
        for group in self.needle_groups:
            if all(c == "ActionType" for c, _n, _e in group):
                return group
        return self.needle_groups[0] if self.needle_groups else None

    def run(self, row: Row) -> Row | None:
        for test in self.filters:
            if test(row) is not True:
                return None
        out: Row | None = row
        for stage in self.stages:
            out = stage(out)  # type: ignore[arg-type]
            if out is None:
                return None
        return out


@dataclass(slots=True)
class Plan:
    branches: list[Branch]
    columns: tuple[str, ...]
    types: dict[str, str]
    columns_read: dict[str, set[str]] = field(default_factory=dict)
    clock: Clock = field(default_factory=Clock)  # the clock now()/ago() of this plan read


USE_LOWERED_CACHE = True  # share lower-cased column texts between tests of the raw row

# Operators accepted at the end of a pipeline and documented as no-ops on a stream.
_STREAM_NOOPS = (ir.Sort, ir.Take, ir.Top)

_REFUSED: dict[type, str] = {
    ir.Summarize: "summarize",
    ir.Join: "join",
    ir.Lookup: "lookup",
    ir.MvExpand: "mv-expand",
    ir.Count: "count",
    ir.Distinct: "distinct",
    ir.Parse: "parse",
}


def _default(kql_type: str) -> Any:
    return "" if kql_type == "string" else None


# --- expressions --------------------------------------------------------------------------------


class _Scope:
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


def _literal(node: ir.Literal, segment: str | None) -> tuple[Any, str]:
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


def _const(value: Any) -> Fn:
    return lambda _r: value


def _constant_value(node: ir.Expr, scope: _Scope) -> tuple[bool, Any]:
    """(True, value) when ``node`` is a literal (possibly through a scalar ``let``)."""
    if isinstance(node, ir.LetRef) and node.name not in scope.columns:
        return _constant_value(node.value, scope)
    if isinstance(node, ir.Literal):
        return True, _literal(node, scope.segment)[0]
    if isinstance(node, ir.UnaryOp) and node.op == "-" and isinstance(node.operand, ir.Literal):
        value = _literal(node.operand, scope.segment)[0]
        return True, (None if value is None else -value)
    return False, None


_STRING_OPS = {
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


# Case-insensitive string operators: on the raw row they test the cached lower-cased column.
_LOWERED_OPS = frozenset(
    {
        "contains",
        "!contains",
        "startswith",
        "!startswith",
        "endswith",
        "!endswith",
        "has",
        "!has",
        "hasprefix",
        "!hasprefix",
        "hassuffix",
        "!hassuffix",
        "=~",
        "!~",
    }
)


def _string_test(
    op: str, needle: str, segment: str | None, prelowered: bool = False
) -> Callable[[str], bool]:
    """A test of one text against a constant needle (positive form; negation is the caller's).

    ``prelowered``: the text is already lower-cased (a case-insensitive operator on the raw row).
    """
    if prelowered:
        base = "=~" if op == "!~" else op.lstrip("!")
        low = needle.lower()
        if base == "=~":
            return lambda s: s == low
        if base == "contains":
            return lambda s: low in s
        if base == "startswith":
            return lambda s: s.startswith(low)
        if base == "endswith":
            return lambda s: s.endswith(low)
        if base == "has":
            return lambda s: S.has_term_cs(s, low)
        if base == "hasprefix":
            return lambda s: S.has_prefix(s, low)
        if base == "hassuffix":
            return lambda s: S.has_suffix(s, low)
    base = "=~" if op == "!~" else op.lstrip("!")
    cs = base.endswith("_cs")
    kind = base.removesuffix("_cs")
    if kind == "matches regex":
        try:
            return S.regex_tester(needle)
        except re2.error as exc:
            raise CompileError(f"bad regular expression {needle!r}: {exc}", segment=segment) from exc
    if kind == "=~":
        low = needle.lower()
        return lambda s: s.lower() == low
    n = needle if cs else needle.lower()
    if kind == "contains":
        return (lambda s: n in s) if cs else (lambda s: n in s.lower())
    if kind == "startswith":
        return (lambda s: s.startswith(n)) if cs else (lambda s: s.lower().startswith(n))
    if kind == "endswith":
        return (lambda s: s.endswith(n)) if cs else (lambda s: s.lower().endswith(n))
    if kind == "has":
        return (lambda s: S.has_term_cs(s, n)) if cs else (lambda s: S.has_term_cs(s.lower(), n))
    if kind == "hasprefix":
        return (lambda s: S.has_prefix(s, n)) if cs else (lambda s: S.has_prefix(s.lower(), n))
    if kind == "hassuffix":
        return (lambda s: S.has_suffix(s, n)) if cs else (lambda s: S.has_suffix(s.lower(), n))
    raise CompileError(f"unsupported operator {op!r}", anchor=op, segment=segment)


def _text_of(fn: Fn, kql_type: str) -> Fn:
    """The operand as text: strings pass through, everything else goes through ``as_text``."""
    if kql_type == "string":
        return fn
    return lambda r: S.as_text(fn(r))


def _column_fn(name: str, kql_type: str) -> Fn:
    default = _default(kql_type)
    return lambda r: r.get(name, default)


class _ExprCompiler:
    def __init__(self, scope: _Scope) -> None:
        self.scope = scope

    def err(self, message: str, anchor: str | None = None) -> CompileError:
        return CompileError(message, anchor=anchor, segment=self.scope.segment)

    def compile(self, node: ir.Expr) -> tuple[Fn, str]:
        sc = self.scope
        if isinstance(node, ir.ColumnRef):
            kql_type = sc.columns.get(node.name)
            if kql_type is None:
                raise self.err(
                    f"unknown column '{node.name}': {sc.table} has no such column "
                    f"(Kusto: Failed to resolve scalar expression named '{node.name}')",
                    anchor=node.name,
                )
            sc.read.add(node.name)
            return _column_fn(node.name, kql_type), kql_type
        if isinstance(node, ir.LetRef):
            if node.name in sc.columns:
                return self.compile(ir.ColumnRef(node.name))
            return self.compile(node.value)
        if isinstance(node, ir.Literal):
            value, kql_type = _literal(node, sc.segment)
            return _const(value), kql_type
        if isinstance(node, ir.BinaryOp):
            return self.binary(node)
        if isinstance(node, ir.UnaryOp):
            fn, t = self.compile(node.operand)
            if node.op == "-":
                return (lambda r: None if (v := fn(r)) is None else -v), t
            if node.op == "+":
                return fn, t
            raise self.err(f"unsupported unary operator {node.op!r}", anchor=node.op)
        if isinstance(node, ir.FunctionCall):
            return self.call(node)
        if isinstance(node, ir.InList):
            return self.in_list(node)
        if isinstance(node, ir.HasList):
            return self.has_list(node)
        if isinstance(node, ir.Between):
            return self.between(node)
        if isinstance(node, ir.PathAccess):
            return self.path(node)
        raise self.err(f"unsupported expression {type(node).__name__}")

    # -- operators

    def binary(self, node: ir.BinaryOp) -> tuple[Fn, str]:
        op = node.op
        if op in ("and", "or"):
            return self.logical(node)
        if op in _STRING_OPS:
            return self.string_op(node)
        left, lt = self.compile(node.left)
        right, rt = self.compile(node.right)
        if op == "==":
            is_const, value = _constant_value(node.right, self.scope)
            if is_const and value is not None and lt == "string":
                return (lambda r: left(r) == value), "bool"
            return (lambda r: S.eq(left(r), right(r))), "bool"
        if op == "!=":
            is_const, value = _constant_value(node.right, self.scope)
            if is_const and value is not None and lt == "string":
                return (lambda r: left(r) != value), "bool"
            return (lambda r: S.ne(left(r), right(r))), "bool"
        if op in ("<", "<=", ">", ">="):
            return (lambda r: S.compare(op, left(r), right(r))), "bool"
        if op in ("+", "-", "*", "/", "%"):
            return (lambda r: S.arith(op, left(r), right(r))), _arith_type(op, lt, rt)
        raise self.err(f"unsupported operator {op!r}", anchor=op)

    def logical(self, node: ir.BinaryOp) -> tuple[Fn, str]:
        terms = _flatten_logical(node, node.op)
        fns = self._grouped(terms) if node.op == "or" else [self.compile(t)[0] for t in terms]
        if all(_never_null(t, self.scope) for t in terms):
            # Two-valued: plain short-circuit loops (the common case in Sigma rules). Written out
            # rather than all()/any() over a generator, which costs a frame per row.
            if node.op == "and":

                def all_true(r: Row) -> bool:
                    for f in fns:  # noqa: SIM110
                        if not f(r):
                            return False
                    return True

                return all_true, "bool"

            def any_true(r: Row) -> bool:
                for f in fns:  # noqa: SIM110
                    if f(r):
                        return True
                return False

            return any_true, "bool"
        if node.op == "and":

            def conj(r: Row) -> bool | None:
                unknown = False
                for f in fns:
                    v = f(r)
                    if v is False:
                        return False
                    if v is None:
                        unknown = True
                return None if unknown else True

            return conj, "bool"

        def disj(r: Row) -> bool | None:
            unknown = False
            for f in fns:
                v = f(r)
                if v is True:
                    return True
                if v is None:
                    unknown = True
            return None if unknown else False

        return disj, "bool"

    def _grouped(self, terms: list[ir.Expr]) -> list[Fn]:
        """OR of many ``col endswith/startswith/contains/=~ "lit"`` on one column → one test.

        Sigma rules are long chains of these; these leaves are never null, so grouping them
        keeps three-valued logic exact.
        """
        groups: dict[tuple[str, str], list[str]] = {}
        order: list[tuple[str, str] | ir.Expr] = []
        for t in terms:
            key = _groupable(t, self.scope)
            if key is None:
                order.append(t)
                continue
            col, op, needle = key
            if (col, op) not in groups:
                groups[(col, op)] = []
                order.append((col, op))
            groups[(col, op)].append(needle)
        fns: list[Fn] = []
        for item in order:
            if isinstance(item, tuple):
                col, op = item
                fns.append(_group_test(col, op, groups[item], self.scope))
            else:
                fns.append(self.compile(item)[0])
        return fns

    def string_op(self, node: ir.BinaryOp) -> tuple[Fn, str]:
        op = node.op
        left, lt = self.compile(node.left)
        text = _text_of(left, lt)
        negated = op.startswith("!")
        is_const, value = _constant_value(node.right, self.scope)
        column = _string_column(node.left, self.scope)
        if is_const and self.scope.raw and column is not None and op in _LOWERED_OPS:
            self.scope.read.add(column)
            low = lowered_column(self.scope.clock, column)
            test = _string_test(op, S.as_text(value), self.scope.segment, prelowered=True)
            if negated:
                return (lambda r: not test(low(r))), "bool"
            return (lambda r: test(low(r))), "bool"
        if is_const:
            test = _string_test(op, S.as_text(value), self.scope.segment)
            if negated:
                return (lambda r: not test(text(r))), "bool"
            return (lambda r: test(text(r))), "bool"
        if op == "matches regex":
            raise self.err("the pattern of 'matches regex' must be a constant", anchor="matches")
        right, rt = self.compile(node.right)
        rtext = _text_of(right, rt)
        seg = self.scope.segment

        def dynamic_test(r: Row) -> bool:
            result = _string_test(op, rtext(r), seg)(text(r))
            return not result if negated else result

        return dynamic_test, "bool"

    def in_list(self, node: ir.InList) -> tuple[Fn, str]:
        if node.subquery is not None:
            raise self.err("'in' over a tabular expression is not supported in a streaming rule", "in")
        value, vt = self.compile(node.value)
        consts: list[Any] = []
        dynamic_items: list[Fn] = []
        for item in node.items:
            is_const, v = _constant_value(item, self.scope)
            if is_const:
                consts.extend(S.flatten(v))
            else:
                dynamic_items.append(self.compile(item)[0])
        ci, neg = node.case_insensitive, node.negated
        if dynamic_items:

            def members(r: Row) -> list[Any]:
                out = list(consts)
                for f in dynamic_items:
                    out.extend(S.flatten(f(r)))
                return out

            def dyn(r: Row) -> bool:
                v = value(r)
                items = members(r)
                if v is None:
                    found = False
                elif ci:
                    low = S.as_text(v).lower()
                    found = any(S.as_text(i).lower() == low for i in items if i is not None)
                else:
                    found = any(i == v for i in items if i is not None)
                return not found if neg else found

            return dyn, "bool"
        if ci:
            lowered = frozenset(S.as_text(i).lower() for i in consts if i is not None)
            text = _text_of(value, vt)
            if vt == "string":
                if neg:
                    return (lambda r: text(r).lower() not in lowered), "bool"
                return (lambda r: text(r).lower() in lowered), "bool"

            def ci_test(r: Row) -> bool:
                v = value(r)
                found = v is not None and S.as_text(v).lower() in lowered
                return not found if neg else found

            return ci_test, "bool"
        try:
            members_set: frozenset[Any] | tuple[Any, ...] = frozenset(i for i in consts if i is not None)
        except TypeError:  # unhashable dynamic members
            members_set = tuple(i for i in consts if i is not None)

        def cs_test(r: Row) -> bool:
            v = value(r)
            try:
                found = v is not None and v in members_set
            except TypeError:
                found = False
            return not found if neg else found

        return cs_test, "bool"

    def has_list(self, node: ir.HasList) -> tuple[Fn, str]:
        if node.subquery is not None:
            raise self.err("has_any over a tabular expression is not supported in a streaming rule")
        value, vt = self.compile(node.value)
        text = _text_of(value, vt)
        needles: list[str] = []
        for item in node.items:
            is_const, v = _constant_value(item, self.scope)
            if not is_const:
                raise self.err("has_any/has_all take constant values in a streaming rule")
            needles.extend(S.as_text(x).lower() for x in S.flatten(v))
        has = S.has_term_cs
        if node.require_all:

            def has_all(r: Row) -> bool:
                low = text(r).lower()
                return all(has(low, n) for n in needles)

            return has_all, "bool"

        def has_any(r: Row) -> bool:
            low = text(r).lower()
            return any(has(low, n) for n in needles)

        return has_any, "bool"

    def between(self, node: ir.Between) -> tuple[Fn, str]:
        value, _ = self.compile(node.value)
        low, _ = self.compile(node.low)
        high, _ = self.compile(node.high)
        neg = node.negated

        def test(r: Row) -> bool | None:
            v, lo, hi = value(r), low(r), high(r)
            if v is None or lo is None or hi is None:
                return None
            if isinstance(hi, timedelta) and isinstance(lo, datetime):
                hi = lo + hi
            try:
                inside = lo <= v <= hi
            except TypeError:
                return None
            return not inside if neg else inside

        return test, "bool"

    def path(self, node: ir.PathAccess) -> tuple[Fn, str]:
        base, _ = self.compile(node.base)
        steps: list[str | int] = []
        for step in node.steps:
            if step.name is not None:
                steps.append(step.name)
                continue
            assert step.index is not None
            is_const, v = _constant_value(step.index, self.scope)
            if not is_const or not isinstance(v, (int, str)):
                raise self.err("dynamic indexes must be constants in a streaming rule")
            steps.append(v)
        path = tuple(steps)
        return (lambda r: S.dynamic_path(base(r), path)), "dynamic"

    # -- functions

    def call(self, node: ir.FunctionCall) -> tuple[Fn, str]:
        name = node.name
        sc = self.scope
        if name in ("now", "ago"):
            return self.clock_call(node)
        spec = _FUNCTIONS.get(name)
        if spec is None:
            raise self.err(f"unknown or unsupported function '{name}'", anchor=name)
        lo, hi, builder = spec
        if not lo <= len(node.args) <= hi:
            raise self.err(f"function '{name}' takes {lo}..{hi} arguments, got {len(node.args)}", anchor=name)
        if name in ("extract", "trim") and node.args:
            is_const, pattern = _constant_value(node.args[0], sc)
            if not is_const or not isinstance(pattern, str):
                raise self.err(f"the pattern of '{name}' must be a constant string", anchor=name)
            try:
                re2.compile(pattern)
            except re2.error as exc:
                raise self.err(f"bad regular expression {pattern!r}: {exc}", anchor=name) from exc
        args = [self.compile(a) for a in node.args]
        return builder(args, node, self)

    def clock_call(self, node: ir.FunctionCall) -> tuple[Fn, str]:
        clock = self.scope.clock
        if len(node.args) > 1:
            raise self.err(f"'{node.name}' takes at most one argument", anchor=node.name)
        offset: Fn = _const(timedelta(0))
        if node.args:
            offset = self.compile(node.args[0])[0]
        sign = -1 if node.name == "ago" else 1

        def moment(r: Row) -> datetime | None:
            now, off = clock.now, offset(r)
            if now is None or not isinstance(off, timedelta):
                return None
            return now + sign * off

        return moment, "datetime"


def _arith_type(op: str, lt: str, rt: str) -> str:
    if "datetime" in (lt, rt):
        return "timespan" if op == "-" and lt == rt == "datetime" else "datetime"
    if lt == rt == "timespan":
        return "real" if op == "/" else "timespan"
    if "real" in (lt, rt):
        return "real"
    return lt


def _flatten_logical(node: ir.Expr, op: str) -> list[ir.Expr]:
    out: list[ir.Expr] = []
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, ir.BinaryOp) and n.op == op:
            stack.append(n.right)
            stack.append(n.left)
        else:
            out.append(n)
    return out


def _balanced(terms: list[ir.Expr], op: str) -> ir.Expr:
    if len(terms) == 1:
        return terms[0]
    mid = len(terms) // 2
    return ir.BinaryOp(op, _balanced(terms[:mid], op), _balanced(terms[mid:], op))


def _rebalance_value(value: Any) -> Any:
    if isinstance(value, list):
        return [_rebalance_value(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_rebalance_value(v) for v in value)
    if isinstance(value, ir.Node):
        return rebalance(value)
    return value


def rebalance(node: Any) -> Any:
    """The same IR with every ``and``/``or`` chain as a balanced tree.

    Sigma conversions write chains of a thousand ``or``s, which the parser nests a thousand deep:
    deep enough to overflow pickling (the compiled-rule cache) and any recursive walk. Both
    operators are associative in Kusto's three-valued logic, so this changes nothing else.
    """
    if isinstance(node, ir.BinaryOp) and node.op in ("and", "or"):
        return _balanced([rebalance(t) for t in _flatten_logical(node, node.op)], node.op)
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        changes = {}
        for f in dataclasses.fields(node):
            if not f.init:
                continue
            old = getattr(node, f.name)
            new = _rebalance_value(old)
            if new is not old:
                changes[f.name] = new
        return dataclasses.replace(node, **changes) if changes else node
    return node


_GROUPABLE = {"contains", "startswith", "endswith", "=~", "contains_cs", "startswith_cs", "endswith_cs", "=="}


def _groupable(node: ir.Expr, scope: _Scope) -> tuple[str, str, str] | None:
    if not isinstance(node, ir.BinaryOp) or node.op not in _GROUPABLE:
        return None
    left = node.left
    if isinstance(left, ir.LetRef) and left.name in scope.columns:
        left = ir.ColumnRef(left.name)
    if not isinstance(left, ir.ColumnRef) or scope.columns.get(left.name) != "string":
        return None
    is_const, value = _constant_value(node.right, scope)
    if not is_const or not isinstance(value, str):
        return None
    return left.name, node.op, value


def _group_test(col: str, op: str, needles: list[str], scope: _Scope) -> Fn:
    scope.read.add(col)
    cs = op.endswith("_cs") or op == "=="
    ns = tuple(needles) if cs else tuple(n.lower() for n in needles)
    kind = op.removesuffix("_cs")
    if not cs and scope.raw:
        return _lowered_group_test(lowered_column(scope.clock, col), kind, ns)
    if kind in ("endswith", "startswith"):
        affix = S.suffix_tester(ns) if kind == "endswith" else S.prefix_tester(ns)
        if cs:
            return lambda r: affix(r.get(col, ""))
        return lambda r: affix(r.get(col, "").lower())
    if kind in ("=~", "=="):
        members = frozenset(ns)
        if cs:
            return lambda r: r.get(col, "") in members
        return lambda r: r.get(col, "").lower() in members
    if len(ns) > 16:
        # Many substrings: one RE2 automaton pass instead of a Python loop.
        test = S.regex_tester("|".join(re2.escape(n) for n in ns))
        if cs:
            return lambda r: test(r.get(col, ""))
        return lambda r: test(r.get(col, "").lower())

    def contains_any(r: Row) -> bool:
        text = r.get(col, "") if cs else r.get(col, "").lower()
        return any(n in text for n in ns)

    return contains_any


def _lowered_group_test(low: Fn, kind: str, ns: tuple[str, ...]) -> Fn:
    """A case-insensitive group test on the cached lower-cased column of the raw row."""
    if kind in ("endswith", "startswith"):
        affix = S.suffix_tester(ns) if kind == "endswith" else S.prefix_tester(ns)
        return lambda r: affix(low(r))
    if kind == "=~":
        members = frozenset(ns)
        return lambda r: low(r) in members
    if len(ns) > 16:
        test = S.regex_tester("|".join(re2.escape(n) for n in ns))
        return lambda r: test(low(r))

    def contains_any(r: Row) -> bool:
        text = low(r)
        for n in ns:  # noqa: SIM110 - no generator frame on the hot path
            if n in text:
                return True
        return False

    return contains_any


# --- the function table -------------------------------------------------------------------------

Args = list[tuple[Fn, str]]
Builder = Callable[[Args, ir.FunctionCall, _ExprCompiler], tuple[Fn, str]]


def _unary(f: Callable[[Any], Any], result: str) -> Builder:
    def build(args: Args, _n: ir.FunctionCall, _c: _ExprCompiler) -> tuple[Fn, str]:
        a = args[0][0]
        return (lambda r: f(a(r))), result

    return build


def _text_unary(f: Callable[[str], Any], result: str) -> Builder:
    def build(args: Args, _n: ir.FunctionCall, _c: _ExprCompiler) -> tuple[Fn, str]:
        a = _text_of(*args[0])
        return (lambda r: f(a(r))), result

    return build


def _b_not(args: Args, node: ir.FunctionCall, c: _ExprCompiler) -> tuple[Fn, str]:
    a = args[0][0]
    if _never_null(node.args[0], c.scope):
        return (lambda r: not a(r)), "bool"
    return (lambda r: None if (v := a(r)) is None else not v), "bool"


# Predicates whose value is always true or false, never null: every string test (strings are
# never null, and non-strings are tested as text), list membership, the is* functions.
_TOTAL_FUNCTIONS = frozenset({"isempty", "isnotempty", "isnull", "isnotnull"})


def _never_null(node: ir.Expr, scope: _Scope) -> bool:
    if isinstance(node, ir.BinaryOp):
        if node.op in ("and", "or"):
            return all(_never_null(t, scope) for t in _flatten_logical(node, node.op))
        if node.op in _STRING_OPS:
            return True
        if node.op in ("==", "!="):
            # A string column against a non-null constant: plain equality, never null.
            if _string_column(node.left, scope) is None:
                return False
            is_const, value = _constant_value(node.right, scope)
            return is_const and value is not None
        return False
    if isinstance(node, (ir.InList, ir.HasList)):
        return True
    if isinstance(node, ir.FunctionCall):
        if node.name in _TOTAL_FUNCTIONS:
            return True
        if node.name == "not" and len(node.args) == 1:
            return _never_null(node.args[0], scope)
    return False


def _b_strcat(args: Args, _n: ir.FunctionCall, _c: _ExprCompiler) -> tuple[Fn, str]:
    parts = [_text_of(f, t) for f, t in args]
    return (lambda r: "".join(p(r) for p in parts)), "string"


def _b_substring(args: Args, _n: ir.FunctionCall, _c: _ExprCompiler) -> tuple[Fn, str]:
    text = _text_of(*args[0])
    start = args[1][0]
    length = args[2][0] if len(args) > 2 else _const(None)

    def sub(r: Row) -> str:
        s, st = text(r), S.to_long(start(r))
        if st is not None and st < 0:
            st = max(0, len(s) + st)
        return S.substring(s, st, S.to_long(length(r)) if len(args) > 2 else None)

    return sub, "string"


def _b_split(args: Args, _n: ir.FunctionCall, _c: _ExprCompiler) -> tuple[Fn, str]:
    text, delim = _text_of(*args[0]), _text_of(*args[1])
    index = args[2][0] if len(args) > 2 else None
    if index is None:
        return (lambda r: S.split(text(r), delim(r))), "dynamic"
    idx = index
    return (lambda r: S.split(text(r), delim(r), S.to_long(idx(r)))), "dynamic"


def _b_extract(args: Args, node: ir.FunctionCall, c: _ExprCompiler) -> tuple[Fn, str]:
    _ok, pattern = _constant_value(node.args[0], c.scope)
    regex = re2.compile(pattern)
    group, text = args[1][0], _text_of(*args[2])
    return (lambda r: S.extract(regex, S.to_long(group(r)) or 0, text(r))), "string"


def _b_replace_string(args: Args, _n: ir.FunctionCall, _c: _ExprCompiler) -> tuple[Fn, str]:
    text, old, new = (_text_of(*a) for a in args)
    return (
        lambda r: t.replace(o, new(r)) if (o := old(r)) and (t := text(r)) is not None else text(r)
    ), "string"


def _b_trim(args: Args, node: ir.FunctionCall, c: _ExprCompiler) -> tuple[Fn, str]:
    _ok, pattern = _constant_value(node.args[0], c.scope)
    regex = re2.compile(f"^(?:{pattern})+|(?:{pattern})+$")
    text = _text_of(*args[1])
    return (lambda r: str(regex.sub("", text(r)))), "string"


def _b_iff(args: Args, _n: ir.FunctionCall, _c: _ExprCompiler) -> tuple[Fn, str]:
    cond, (then, tt), (other, _ot) = args[0][0], args[1], args[2]
    return (lambda r: then(r) if cond(r) is True else other(r)), tt


def _b_case(args: Args, node: ir.FunctionCall, c: _ExprCompiler) -> tuple[Fn, str]:
    if len(args) % 2 == 0:
        raise c.err("case() needs pairs of predicate, value and a final else value", anchor="case")
    pairs = [(args[i][0], args[i + 1][0]) for i in range(0, len(args) - 1, 2)]
    otherwise = args[-1][0]

    def case(r: Row) -> Any:
        for pred, val in pairs:
            if pred(r) is True:
                return val(r)
        return otherwise(r)

    return case, args[1][1]


def _b_coalesce(args: Args, _n: ir.FunctionCall, _c: _ExprCompiler) -> tuple[Fn, str]:
    fns = [f for f, _ in args]

    def coalesce(r: Row) -> Any:
        for f in fns:
            v = f(r)
            if v is not None and v != "":
                return v
        return fns[-1](r)

    return coalesce, args[0][1]


def _b_tostring(args: Args, _n: ir.FunctionCall, _c: _ExprCompiler) -> tuple[Fn, str]:
    a = args[0][0]
    return (lambda r: S.as_text(a(r))), "string"


def _b_bin(args: Args, _n: ir.FunctionCall, _c: _ExprCompiler) -> tuple[Fn, str]:
    (v, vt), (size, _) = args
    return (lambda r: S.bin_value(v(r), size(r))), vt


def _b_array_length(args: Args, _n: ir.FunctionCall, _c: _ExprCompiler) -> tuple[Fn, str]:
    a = args[0][0]
    return (lambda r: len(v) if isinstance(v := a(r), list) else None), "long"


def _b_set_has_element(args: Args, _n: ir.FunctionCall, _c: _ExprCompiler) -> tuple[Fn, str]:
    arr, item = args[0][0], args[1][0]
    return (lambda r: (item(r) in v) if isinstance(v := arr(r), list) else None), "bool"


def _b_strlen(args: Args, _n: ir.FunctionCall, _c: _ExprCompiler) -> tuple[Fn, str]:
    a = _text_of(*args[0])
    return (lambda r: len(a(r))), "long"


_FUNCTIONS: dict[str, tuple[int, int, Builder]] = {
    "not": (1, 1, _b_not),
    "isempty": (1, 1, _unary(S.is_empty, "bool")),
    "isnotempty": (1, 1, _unary(lambda v: not S.is_empty(v), "bool")),
    "isnull": (1, 1, _unary(lambda v: v is None, "bool")),
    "isnotnull": (1, 1, _unary(lambda v: v is not None, "bool")),
    "tolower": (1, 1, _text_unary(str.lower, "string")),
    "toupper": (1, 1, _text_unary(str.upper, "string")),
    "strcat": (1, 64, _b_strcat),
    "strlen": (1, 1, _b_strlen),
    "substring": (2, 3, _b_substring),
    "split": (2, 3, _b_split),
    "extract": (3, 3, _b_extract),
    "replace_string": (3, 3, _b_replace_string),
    "trim": (2, 2, _b_trim),
    "iff": (3, 3, _b_iff),
    "iif": (3, 3, _b_iff),
    "case": (3, 255, _b_case),
    "coalesce": (2, 64, _b_coalesce),
    "tostring": (1, 1, _b_tostring),
    "toint": (1, 1, _unary(S.to_long, "int")),
    "tolong": (1, 1, _unary(S.to_long, "long")),
    "todouble": (1, 1, _unary(S.to_real, "real")),
    "toreal": (1, 1, _unary(S.to_real, "real")),
    "tobool": (1, 1, _unary(S.to_bool, "bool")),
    "toboolean": (1, 1, _unary(S.to_bool, "bool")),
    "todatetime": (1, 1, _unary(S.to_datetime, "datetime")),
    "totimespan": (1, 1, _unary(S.to_timespan, "timespan")),
    "bin": (2, 2, _b_bin),
    "floor": (2, 2, _b_bin),
    "array_length": (1, 1, _b_array_length),
    "set_has_element": (2, 2, _b_set_has_element),
    "parse_json": (1, 1, _unary(S.parse_json, "dynamic")),
    "todynamic": (1, 1, _unary(S.parse_json, "dynamic")),
}

SUPPORTED_FUNCTIONS: tuple[str, ...] = (*sorted(_FUNCTIONS), "ago", "now")


# --- tabular operators -------------------------------------------------------------------------


@dataclass(slots=True)
class _Stream:
    branches: list[Branch]
    columns: dict[str, str]  # name -> type, in output order
    table: str  # the source table, for messages
    plain_table: bool = False  # a bare table reference: withsource names it


def _derived_name(expr: ir.Expr, taken: Iterable[str], counter: list[int]) -> str:
    if isinstance(expr, ir.ColumnRef):
        return expr.name
    if isinstance(expr, ir.LetRef):
        return expr.name
    taken_set = set(taken)
    while True:
        counter[0] += 1
        name = f"Column{counter[0]}"
        if name not in taken_set:
            return name


class QueryCompiler:
    """Compiles one rule's IR into a :class:`Plan`."""

    def __init__(self, query: ir.Query, clock: Clock) -> None:
        self.query = query
        self.clock = clock
        self.tabular: dict[str, ir.Query] = {}
        for name, bound in query.lets:
            if isinstance(bound, ir.Query):
                self.tabular[name] = bound
        self.read: dict[str, set[str]] = {}

    def compile(self) -> Plan:
        stream = self.pipeline(self.query, None, [])
        out = tuple(stream.columns)
        for b in stream.branches:
            b.stages.append(_align(stream.columns))
        return Plan(stream.branches, out, dict(stream.columns), self.read, self.clock)

    def pipeline(self, q: ir.Query, segment: str | None, stack: list[str]) -> _Stream:
        stream = self.source(q.source, segment, stack)
        ops = list(q.operators)
        for i, op in enumerate(ops):
            if isinstance(op, _STREAM_NOOPS):
                if any(not isinstance(o, _STREAM_NOOPS) for o in ops[i + 1 :]):
                    raise CompileError(
                        "sort/take/top must come last in a streaming rule (they have no effect on a stream)",
                        anchor=_op_word(op),
                        segment=segment,
                    )
                continue
            stream = self.operator(op, stream, segment, stack)
        return stream

    def source(self, src: ir.Source, segment: str | None, stack: list[str]) -> _Stream:
        if not isinstance(src, ir.TableRef) or src.database is not None or src.cluster is not None:
            raise CompileError(
                f"unsupported source {type(src).__name__}: a rule reads one of {', '.join(TABLE_NAMES)}",
                segment=segment,
            )
        name = src.name
        if name in self.tabular:
            if name in stack:
                raise CompileError(f"'{name}' refers to itself", anchor=name, segment=segment)
            inner = self.pipeline(self.tabular[name], name, [*stack, name])
            inner.plain_table = False
            return inner
        if name not in TABLE_NAMES:
            raise CompileError(
                f"unknown table '{name}' (a rule reads {', '.join(TABLE_NAMES)})",
                anchor=name,
                segment=segment,
            )
        cols: dict[str, str] = {c.name: c.type for c in schema(name).columns}
        return _Stream([Branch(name, [], label=name)], cols, name, plain_table=True)

    def scope(self, stream: _Stream, segment: str | None) -> _Scope:
        return _Scope(stream.columns, stream.table, segment, self.clock)

    def _note_reads(self, stream: _Stream, scope: _Scope) -> None:
        for b in stream.branches:
            table_cols = {c.name for c in schema(b.table).columns}
            self.read.setdefault(b.table, set()).update(scope.read & table_cols)

    def operator(self, op: ir.Operator, stream: _Stream, segment: str | None, stack: list[str]) -> _Stream:
        for kind, word in _REFUSED.items():
            if isinstance(op, kind):
                raise CompileError(
                    f"'{word}' is not supported in a streaming rule (windowed aggregation is a later issue)",
                    anchor=word,
                    segment=segment,
                )
        if isinstance(op, ir.Where):
            scope = self.scope(stream, segment)
            scope.raw = USE_LOWERED_CACHE and all(b.raw for b in stream.branches)
            compiler = _ExprCompiler(scope)
            terms = _flatten_logical(op.predicate, "and")
            conjuncts = [compiler.compile(t)[0] for t in terms]
            self._note_reads(stream, scope)
            groups = [g for g in (_needles(t, scope) for t in terms) if g]
            for b in stream.branches:
                if b.raw:
                    b.filters.extend(conjuncts)
                else:
                    b.stages.append(_where(conjuncts))
                if b.raw and groups:
                    b.needle_groups = _best_groups([*b.needle_groups, *groups])
            stream.plain_table = False
            return stream
        if isinstance(op, ir.Extend):
            return self.extend(op, stream, segment)
        if isinstance(op, ir.Project):
            return self.project(op, stream, segment)
        if isinstance(op, ir.ProjectAway):
            for c in op.columns:
                if c not in stream.columns and not any(ch in c for ch in "*"):
                    raise CompileError(f"project-away: unknown column '{c}'", anchor=c, segment=segment)
            keep = {k: v for k, v in stream.columns.items() if not _matches_any(k, op.columns)}
            return self._reshape(stream, keep, {k: k for k in keep})
        if isinstance(op, ir.ProjectRename):
            mapping: dict[str, str] = {}
            renamed = dict(stream.columns)
            for old, new in op.renames:  # duckdb-kql keeps (old, new)
                if old not in stream.columns:
                    raise CompileError(f"project-rename: unknown column '{old}'", anchor=old, segment=segment)
                mapping[old] = new
            new_cols = {mapping.get(k, k): v for k, v in renamed.items()}
            sources = {mapping.get(k, k): k for k in renamed}
            return self._reshape(stream, new_cols, sources)
        if isinstance(op, ir.Union):
            return self.union(op, stream, segment, stack)
        raise CompileError(
            f"'{_op_word(op)}' is not supported in a streaming rule", anchor=_op_word(op), segment=segment
        )

    def _reshape(self, stream: _Stream, cols: dict[str, str], sources: dict[str, str]) -> _Stream:
        defaults = {n: _default(stream.columns[src]) for n, src in sources.items()}
        pairs = tuple((n, sources[n], defaults[n]) for n in cols)

        def reshape(r: Row) -> Row:
            return {n: r.get(src, d) for n, src, d in pairs}

        for b in stream.branches:
            b.stages.append(reshape)
            b.raw = False
        stream.columns = cols
        stream.plain_table = False
        return stream

    def extend(self, op: ir.Extend, stream: _Stream, segment: str | None) -> _Stream:
        cols = dict(stream.columns)
        assigns: list[tuple[str, Fn]] = []
        counter = [0]
        scope = _Scope(cols, stream.table, segment, self.clock)
        for named in op.expressions:
            fn, t = _ExprCompiler(scope).compile(named.expr)
            name = named.name or _derived_name(named.expr, cols, counter)
            cols.pop(name, None)  # an existing name moves to the end
            cols[name] = t
            assigns.append((name, fn))
        self._note_reads(stream, scope)
        steps = tuple(assigns)

        def extend(r: Row) -> Row:
            out = dict(r)
            for name, fn in steps:
                value = fn(out)
                out.pop(name, None)
                out[name] = value
            return out

        for b in stream.branches:
            b.stages.append(extend)
            b.raw = False
        stream.columns = cols
        stream.plain_table = False
        return stream

    def project(self, op: ir.Project, stream: _Stream, segment: str | None) -> _Stream:
        scope = self.scope(stream, segment)
        cols: dict[str, str] = {}
        outs: list[tuple[str, Fn]] = []
        counter = [0]
        for named in op.expressions:
            fn, t = _ExprCompiler(scope).compile(named.expr)
            name = named.name or _derived_name(named.expr, cols, counter)
            cols[name] = t
            outs.append((name, fn))
        self._note_reads(stream, scope)
        pairs = tuple(outs)

        def project(r: Row) -> Row:
            return {name: fn(r) for name, fn in pairs}

        for b in stream.branches:
            b.stages.append(project)
            b.raw = False
        stream.columns = cols
        stream.plain_table = False
        return stream

    def union(self, op: ir.Union, stream: _Stream, segment: str | None, stack: list[str]) -> _Stream:
        if op.kind != "outer":
            raise CompileError(
                "only the default union kind=outer is supported", anchor="union", segment=segment
            )
        legs = [stream] + [self.pipeline(b, segment, stack) for b in op.branches]
        merged: dict[str, str] = {}
        if op.with_source:
            merged[op.with_source] = "string"
        for leg in legs:
            for name, t in leg.columns.items():
                if name in merged and merged[name] != t:
                    raise CompileError(
                        f"union: column '{name}' has types {merged[name]} and {t}; "
                        "project it to one type in every leg",
                        anchor=name,
                        segment=segment,
                    )
                merged.setdefault(name, t)
        branches: list[Branch] = []
        for i, leg in enumerate(legs):
            label = leg.table if leg.plain_table else f"union_arg{i}"
            align = _align(merged, op.with_source, label)
            for b in leg.branches:
                b.stages.append(align)
                b.raw = False
                branches.append(b)
        return _Stream(branches, merged, stream.table)


def _matches_any(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _op_word(op: ir.Operator) -> str:
    return {
        "Sort": "sort",
        "Take": "take",
        "Top": "top",
        "Union": "union",
        "GetSchema": "getschema",
    }.get(type(op).__name__, type(op).__name__.lower())


def _where(conjuncts: list[Fn]) -> Stage:
    tests = tuple(conjuncts)

    def where(r: Row) -> Row | None:
        for test in tests:
            if test(r) is not True:
                return None
        return r

    return where


def _align(columns: dict[str, str], source_col: str | None = None, label: str = "") -> Stage:
    # Most Sigma rules output their table's ~60 columns unchanged: one stage per distinct shape.
    return _align_shape(tuple(columns.items()), source_col, label)


@functools.lru_cache(maxsize=1024)
def _align_shape(columns: tuple[tuple[str, str], ...], source_col: str | None, label: str) -> Stage:
    pairs = tuple((n, _default(t)) for n, t in columns if n != source_col)

    if source_col:

        def align_src(r: Row) -> Row:
            out: Row = {source_col: label}
            for n, d in pairs:
                out[n] = r.get(n, d)
            return out

        return align_src

    def align(r: Row) -> Row:
        return {n: r.get(n, d) for n, d in pairs}

    return align


# --- prefilter needles ------------------------------------------------------------------------

_NEEDLE_OPS = {
    "contains",
    "contains_cs",
    "startswith",
    "startswith_cs",
    "endswith",
    "endswith_cs",
    "==",
    "=~",
    "has",
    "has_cs",
    "hasprefix",
    "hassuffix",
    "hasprefix_cs",
    "hassuffix_cs",
}


_LOW_SELECTIVITY = frozenset(
    {
        "ActionType",
        "DeviceName",
        "RegistryValueType",
        "InitiatingProcessAccountName",
        "AccountName",
        "AccountDomain",
        "InitiatingProcessAccountDomain",
        "ProcessIntegrityLevel",
        "InitiatingProcessIntegrityLevel",
    }
)
# (column, lower-cased literal, exact): the column's lower-cased text equals (exact) or contains it.
Needle = tuple[str, str, bool]


def _needles(node: ir.Expr, scope: _Scope) -> frozenset[Needle] | None:
    """(column, literal) pairs one of which must hold for ``node`` to be true, or None.

    Only positive tests of string *columns* of the input give needles; anything else (negation,
    computed values, non-string columns) gives None: no guarantee, the branch always runs.
    """
    if isinstance(node, ir.BinaryOp):
        if node.op == "and":
            best: frozenset[Needle] | None = None
            for t in _flatten_logical(node, "and"):
                n = _needles(t, scope)
                if n is not None and (best is None or _weaker(best, n)):
                    best = n
            return best
        if node.op == "or":
            acc: set[Needle] = set()
            for t in _flatten_logical(node, "or"):
                n = _needles(t, scope)
                if n is None:
                    return None
                acc |= n
            return frozenset(acc)
        if node.op == "matches regex":
            column = _string_column(node.left, scope)
            pattern = _string_col_const(node.left, node.right, scope)
            literal = regex_literal(pattern) if pattern is not None else None
            if column is None or literal is None:
                return None
            return frozenset({(column, literal.lower(), False)})
        if node.op in _NEEDLE_OPS:
            column = _string_column(node.left, scope)
            text = _string_col_const(node.left, node.right, scope)
            if text is not None and node.op.startswith("has"):
                text = _strip_punct(text)
            if column is None or not text:
                return None
            return frozenset({(column, text.lower(), node.op in ("==", "=~"))})
        return None
    if isinstance(node, ir.InList) and not node.negated and node.subquery is None:
        column = _string_column(node.value, scope)
        items = _const_strings(node.items, scope)
        if column is None or not items or not all(items):
            return None
        return frozenset((column, i.lower(), True) for i in items)
    if isinstance(node, ir.HasList) and node.subquery is None:
        column = _string_column(node.value, scope)
        items = _const_strings(node.items, scope)
        if column is None or not items:
            return None
        stripped = [_strip_punct(i).lower() for i in items]
        if node.require_all:
            longest = max(stripped, key=len)
            return frozenset({(column, longest, False)}) if longest else None
        if not all(stripped):
            return None
        return frozenset((column, i, False) for i in stripped)
    return None


_REGEX_ESCAPED_LITERAL = frozenset("\\.+*?()|[]{}^$/-:#&~=!<>'\" ,;%@`")
_QUANTIFIERS = "?*+{"


def regex_literal(pattern: str) -> str | None:
    """The longest literal every match of ``pattern`` must contain (3+ characters), or None.

    Conservative: only the top level is read (a group or class ends a run), any top-level ``|``,
    ``(?x)`` or ``\\Q`` gives up, and a character made optional by ``?``, ``*`` or ``{0`` is
    dropped. Case does not matter: the prefilter compares lower-cased text.
    """
    if "(?x" in pattern or "\\Q" in pattern:
        return None
    runs: list[str] = []
    run: list[str] = []
    i, n = 0, len(pattern)

    def cut() -> None:
        if run:
            runs.append("".join(run))
            run.clear()

    while i < n:
        ch = pattern[i]
        literal: str | None = None
        step = 1
        if ch == "\\" and i + 1 < n:
            nxt = pattern[i + 1]
            step = 2
            if nxt in _REGEX_ESCAPED_LITERAL:
                literal = nxt
        elif ch == "|":
            return None
        elif ch in "([":
            close = ")" if ch == "(" else "]"
            depth, j = 0, i
            while j < n:
                c = pattern[j]
                if c == "\\":
                    j += 2
                    continue
                if c == ch and ch == "(":
                    depth += 1
                elif c == close:
                    depth -= 1
                    if depth <= 0:
                        break
                j += 1
            step = j - i + 1
        elif ch == "{":
            close_at = pattern.find("}", i)
            step = (close_at - i + 1) if close_at > i else 1
        elif ch not in ".^$?*+}":
            literal = ch
        nxt_ch = pattern[i + step] if i + step < n else ""
        if literal is None:
            cut()
            i += step
            continue
        optional = nxt_ch in ("?", "*") or pattern.startswith("{0", i + step)
        if optional:
            cut()
        else:
            run.append(literal)
            if nxt_ch in _QUANTIFIERS:
                cut()
        i += step
    cut()
    best = max(runs, key=len, default="")
    return best if len(best) >= 3 else None


def _strip_punct(s: str) -> str:
    # has ignores leading/trailing punctuation, so only the inner part is certain to occur.
    start, end = 0, len(s)
    while start < end and not s[start].isalnum():
        start += 1
    while end > start and not s[end - 1].isalnum():
        end -= 1
    return s[start:end]


MAX_NEEDLE_GROUPS = 3


def _best_groups(groups: list[frozenset[Needle]]) -> list[frozenset[Needle]]:
    """The most selective needle groups (each is a necessary condition, so any subset is too).

    An ActionType-only group is kept as well: it is cheap (a dict lookup) and live tracing reads
    it to subscribe only to the events a rule can match.
    """
    # Groups on few-valued columns (ActionType) come last whatever their score: they pass most rows.
    unique = sorted(dict.fromkeys(groups), key=lambda g: (_is_weak(g), _score(g)))
    best = unique[:MAX_NEEDLE_GROUPS]
    action = next((g for g in unique if all(c == "ActionType" for c, _n, _e in g)), None)
    if action is not None and action not in best:
        best.append(action)
    return best


def _is_weak(ns: frozenset[Needle]) -> bool:
    """A group most rows satisfy: on a few-valued column, or with a short ASCII substring."""
    return any(c in _LOW_SELECTIVITY or (not e and len(n) < 3 and n.isascii()) for c, n, e in ns)


def _score(ns: frozenset[Needle]) -> float:
    """Lower is rarer: fewer, longer, exact needles on columns with many distinct values."""
    if not ns:
        return float("inf")
    # A column with a handful of values (ActionType) passes most rows whatever the needle.
    weak = 50.0 if any(c in _LOW_SELECTIVITY for c, _n, _e in ns) else 1.0
    exact = 0.25 if all(e for _c, _n, e in ns) else 1.0  # a dict lookup, and rarer
    return weak * exact * len(ns) / (1 + min(len(n) for _c, n, _e in ns))


def _weaker(current: frozenset[Needle], candidate: frozenset[Needle]) -> bool:
    """Prefer the needle set that is rarer: fewer and longer needles."""

    return _score(candidate) < _score(current)


def _string_column(node: ir.Expr, scope: _Scope) -> str | None:
    if isinstance(node, ir.LetRef) and node.name in scope.columns:
        node = ir.ColumnRef(node.name)
    if isinstance(node, ir.ColumnRef) and scope.columns.get(node.name) == "string":
        return node.name
    return None


def _string_col_const(left: ir.Expr, right: ir.Expr, scope: _Scope) -> str | None:
    if _string_column(left, scope) is None:
        return None
    is_const, value = _constant_value(right, scope)
    if not is_const or not isinstance(value, str):
        return None
    return value


def _const_strings(items: tuple[ir.Expr, ...], scope: _Scope) -> list[str] | None:
    out: list[str] = []
    for item in items:
        is_const, value = _constant_value(item, scope)
        if not is_const:
            return None
        for v in S.flatten(value):
            if not isinstance(v, str):
                return None
            out.append(v)
    return out
