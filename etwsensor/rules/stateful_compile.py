"""IR of a ``summarize`` or ``join`` → a stateful operator (:mod:`etwsensor.rules.stateful`).

What a streaming rule may say, and what it is refused with:

* ``summarize aggs by keys`` needs a window: a ``bin(Timestamp, W)`` key (tumbling windows of W),
  or else a lookback ``where Timestamp > ago(W)`` before it (then tumbling windows of W too, not
  shown as a column).
* ``join`` is ``kind=inner``, ``leftsemi`` or ``leftanti``. ``inner`` needs its time band in the
  first ``where`` after it: ``<time> between (<other time> [± span] .. <other time> + span)`` (or
  ``.. span``), one time column from each side. ``leftsemi``/``leftanti`` see no right columns
  after the join, so their band is ± the lookback ``ago(W)`` of either side (the right's first),
  else ± :data:`~etwsensor.rules.stateful.DEFAULT_JOIN_WINDOW`, on both sides' ``Timestamp``.
* One ``summarize`` or ``join`` per rule, in its main pipeline (not in a ``union`` leg or a
  ``let``); whatever follows it is ``where``/``extend``/``project``….
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any

from etwsensor.rules.aggregates import Aggregate, compile_aggregate
from etwsensor.rules.errors import CompileError
from etwsensor.rules.expr import ExprCompiler
from etwsensor.rules.irnorm import flatten_logical
from etwsensor.rules.kqlir import ir
from etwsensor.rules.plan import Clock, Fn, Row
from etwsensor.rules.scope import Scope, column_fn, constant_value
from etwsensor.rules.stateful import (
    DEFAULT_JOIN_WINDOW,
    JoinSide,
    TimeBoundedJoin,
    WindowedSummarize,
)

JOIN_KINDS = ("inner", "leftsemi", "leftanti")


def _no_post(row: Row) -> Row | None:
    return row


def lookback(predicate: ir.Expr, scope: Scope) -> timedelta | None:
    """W of a ``Timestamp > ago(W)`` (or ``>=``) conjunct of a where, if it has one."""
    for term in flatten_logical(predicate, "and"):
        if not isinstance(term, ir.BinaryOp) or term.op not in (">", ">="):
            continue
        left, right = term.left, term.right
        if not isinstance(left, (ir.ColumnRef, ir.LetRef)) or left.name != "Timestamp":
            continue
        if isinstance(right, ir.FunctionCall) and right.name == "ago" and len(right.args) == 1:
            is_const, span = constant_value(right.args[0], scope)
            if is_const and isinstance(span, timedelta) and span > timedelta(0):
                return span
    return None


def _unique(name: str, taken: Iterable[str]) -> str:
    taken_set = set(taken)
    if name not in taken_set:
        return name
    i = 1
    while f"{name}{i}" in taken_set:
        i += 1
    return f"{name}{i}"


def _refuse(message: str, anchor: str, scope: Scope) -> CompileError:
    return CompileError(message, anchor=anchor, segment=scope.segment)


# --- summarize ------------------------------------------------------------------------------------


def _bin_key(node: ir.Expr, scope: Scope) -> tuple[str, timedelta] | None:
    """(time column, W) of a ``bin(<datetime column>, W)`` key."""
    if not isinstance(node, ir.FunctionCall) or node.name not in ("bin", "floor") or len(node.args) != 2:
        return None
    col, size = node.args
    if not isinstance(col, (ir.ColumnRef, ir.LetRef)) or scope.columns.get(col.name) != "datetime":
        return None
    is_const, span = constant_value(size, scope)
    if not is_const or not isinstance(span, timedelta) or span <= timedelta(0):
        raise _refuse(
            "the window of bin() in a streaming summarize must be a positive timespan", "bin", scope
        )
    return col.name, span


def _monotone(later: Sequence[ir.Operator], aggs: dict[str, str], scope: Scope) -> bool:
    """Whether the operators after a summarize only filter on conditions that, once true, stay
    true as rows arrive (``count_ >= N``, ``dcount_X > N``, ``max_X > V``, ``min_X < V``): then a
    group is reported as soon as it passes."""
    seen_where = reshaped = False
    for op in later:
        if isinstance(op, (ir.Sort, ir.Take, ir.Top)):
            continue
        if not isinstance(op, ir.Where):
            reshaped = True
            continue
        if reshaped:  # a where after an extend/project may test a computed value
            return False
        seen_where = True
        for term in flatten_logical(op.predicate, "and"):
            if not isinstance(term, ir.BinaryOp) or term.op not in (">", ">=", "<", "<="):
                return False
            left, right, cmp = term.left, term.right, term.op
            if isinstance(right, (ir.ColumnRef, ir.LetRef)) and right.name in aggs:
                left, right = right, left
                cmp = {">": "<", ">=": "<=", "<": ">", "<=": ">="}[cmp]
            if not isinstance(left, (ir.ColumnRef, ir.LetRef)) or left.name not in aggs:
                return False
            is_const, value = constant_value(right, scope)
            if not is_const or value is None:
                return False
            direction = aggs[left.name]
            if not (
                (direction == "up" and cmp in (">", ">=")) or (direction == "down" and cmp in ("<", "<="))
            ):
                return False
    return seen_where


def compile_summarize(
    op: ir.Summarize,
    columns: dict[str, str],
    scope: Scope,
    window: timedelta | None,
    later: Sequence[ir.Operator],
    clock: Clock,
) -> tuple[WindowedSummarize, dict[str, str]]:
    """The operator and its output columns (keys first, then aggregates, as in Kusto)."""
    compiler = ExprCompiler(scope)
    keys: list[tuple[str, Fn]] = []
    out: dict[str, str] = {}
    time: Fn | None = None
    span: timedelta | None = None
    window_key: int | None = None
    counter = 0
    for named in op.by:
        binned = _bin_key(named.expr, scope)
        if binned is not None and window_key is None:
            column, span = binned
            name = named.name or column
            time = column_fn(column, "datetime")
            scope.read.add(column)
            window_key = len(keys)
            keys.append((name, time))
            out[name] = "datetime"
            continue
        fn, kql_type = compiler.compile(named.expr)
        if named.name:
            name = named.name
        elif isinstance(named.expr, (ir.ColumnRef, ir.LetRef)):
            name = named.expr.name
        else:
            counter += 1
            name = _unique(f"Column{counter}", out)
        keys.append((name, fn))
        out[name] = kql_type
    if window_key is None:
        if window is None:
            raise _refuse(
                "a streaming summarize needs a window: group by bin(Timestamp, W), "
                "or filter 'where Timestamp > ago(W)' before it",
                "summarize",
                scope,
            )
        if columns.get("Timestamp") != "datetime":
            raise _refuse("a windowed summarize needs a Timestamp column before it", "summarize", scope)
        span = window
        time = column_fn("Timestamp", "datetime")
        scope.read.add("Timestamp")
    assert time is not None and span is not None
    aggregates: list[Aggregate] = []
    directions: dict[str, str] = {}
    key_names = set(out)
    for named in op.aggregates:
        agg = compile_aggregate(named, scope, columns, key_names)
        names = tuple(_unique(n, out) for n in agg.names)
        agg.names = names
        for n, t in zip(names, agg.types, strict=True):
            out[n] = t
        if agg.monotone is not None and len(names) == 1:
            directions[names[0]] = agg.monotone
        aggregates.append(agg)
    early = _monotone(later, directions, scope)
    operator = WindowedSummarize(keys, aggregates, time, span, window_key, _no_post, early, clock)
    return operator, out


# --- join ----------------------------------------------------------------------------------------


def _time_term(node: ir.Expr, scope: Scope) -> tuple[str, timedelta] | None:
    """``column`` or ``column ± span`` → (column, offset)."""
    if isinstance(node, (ir.ColumnRef, ir.LetRef)):
        return node.name, timedelta(0)
    if (
        isinstance(node, ir.BinaryOp)
        and node.op in ("+", "-")
        and isinstance(node.left, (ir.ColumnRef, ir.LetRef))
    ):
        is_const, span = constant_value(node.right, scope)
        if is_const and isinstance(span, timedelta):
            return node.left.name, span if node.op == "+" else -span
    return None


def _band(
    later: Sequence[ir.Operator], left_names: dict[str, str], right_names: dict[str, str], scope: Scope
) -> tuple[str, str, timedelta, timedelta] | None:
    """(left time column, right time column, low, high) with ``low <= right - left <= high``,
    from a ``between`` in the first where after the join. Names are output names → side columns."""
    for op in later:
        if isinstance(op, ir.Where):
            for term in flatten_logical(op.predicate, "and"):
                if not isinstance(term, ir.Between) or term.negated:
                    continue
                if not isinstance(term.value, (ir.ColumnRef, ir.LetRef)):
                    continue
                x = term.value.name
                lo = _time_term(term.low, scope)
                if lo is None:
                    continue
                y, a = lo
                hi = _time_term(term.high, scope)
                if hi is not None and hi[0] == y:
                    b = hi[1]
                else:
                    is_const, span = constant_value(term.high, scope)
                    if not is_const or not isinstance(span, timedelta):
                        continue
                    b = a + span
                if b < a:
                    continue
                if x in right_names and y in left_names:  # right in [left + a, left + b]
                    return left_names[y], right_names[x], a, b
                if x in left_names and y in right_names:  # left in [right + a, right + b]
                    return left_names[x], right_names[y], -b, -a
            return None
        if not isinstance(op, (ir.Sort, ir.Take, ir.Top)):
            return None
    return None


def compile_join(
    op: ir.Join,
    left: dict[str, str],
    right: dict[str, str],
    scope: Scope,
    window: timedelta | None,
    later: Sequence[ir.Operator],
    clock: Clock,
) -> tuple[TimeBoundedJoin, dict[str, str]]:
    """The operator and its output columns: the left's, then (inner) the right's, renamed with a
    numeric suffix when the left has the name already (Kusto's rule)."""
    if op.kind not in JOIN_KINDS:
        raise _refuse(
            f"join kind={op.kind} is not supported in a streaming rule "
            f"(kind={', kind='.join(JOIN_KINDS)}; Kusto's default is innerunique: say kind=inner)",
            "join",
            scope,
        )
    if not op.keys:
        raise _refuse("a streaming join needs 'on' keys", "join", scope)
    for key in op.keys:
        if key.left not in left:
            raise _refuse(f"join: the left side has no column '{key.left}'", key.left, scope)
        if key.right not in right:
            raise _refuse(f"join: the right side has no column '{key.right}'", key.right, scope)
    left_keys = tuple(column_fn(k.left, left[k.left]) for k in op.keys)
    right_keys = tuple(column_fn(k.right, right[k.right]) for k in op.keys)
    out = dict(left)
    renamed: dict[str, str] = {}
    if op.kind == "inner":
        for name, kql_type in right.items():
            new = _unique(name, out)
            renamed[name] = new
            out[new] = kql_type
        band = _band(later, {n: n for n in left}, {new: old for old, new in renamed.items()}, scope)
        if band is None:
            raise _refuse(
                "a streaming join kind=inner needs a time band in the first where after it, e.g. "
                "'where Timestamp1 between (Timestamp .. 5m)'",
                "join",
                scope,
            )
        left_time, right_time, low, high = band
    else:
        if left.get("Timestamp") != "datetime" or right.get("Timestamp") != "datetime":
            raise _refuse(f"join kind={op.kind} needs a Timestamp column on both sides", "join", scope)
        span = window or DEFAULT_JOIN_WINDOW
        left_time, right_time, low, high = "Timestamp", "Timestamp", -span, span
        out = dict(left)
    pairs = tuple(renamed.items())

    def combine(lrow: Row, rrow: Row) -> Row:
        joined: dict[str, Any] = dict(lrow)
        for old, new in pairs:
            joined[new] = rrow.get(old)
        return joined

    operator = TimeBoundedJoin(
        op.kind,
        JoinSide(left_keys, column_fn(left_time, "datetime")),
        JoinSide(right_keys, column_fn(right_time, "datetime")),
        low,
        high,
        combine,
        _no_post,
        clock,
    )
    return operator, out
