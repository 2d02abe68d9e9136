"""The aggregation functions of a streaming ``summarize``: IR call → :class:`Aggregate`.

An aggregate keeps one small mutable state per group (``new``), folds rows into it (``step``) and
gives its output values (``result``), one per output column. Every state is bounded: ``dcount``
is exact up to :data:`DCOUNT_EXACT` distinct values and then an estimate, ``make_set`` and
``make_list`` keep at most :data:`MAKE_SET_MAX` values (less if the call's ``max_size`` says so).
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Callable
from typing import Any

from etwsensor.rules.errors import CompileError
from etwsensor.rules.expr import ExprCompiler
from etwsensor.rules.kqlir import ir
from etwsensor.rules.plan import Fn, Row
from etwsensor.rules.scope import Scope, constant_value

DCOUNT_EXACT = 10_000  # distinct values counted exactly; beyond, a k-minimum-values estimate
MAKE_SET_MAX = 1_024  # values kept by make_set/make_list whatever max_size asks

State = list[Any]


class Aggregate:
    """One aggregation call: its output columns, and how a group's state is made, fed and read."""

    __slots__ = ("monotone", "names", "new", "result", "step", "types")

    def __init__(
        self,
        names: tuple[str, ...],
        types: tuple[str, ...],
        new: Callable[[], State],
        step: Callable[[State, Row], None],
        result: Callable[[State], tuple[Any, ...]],
        monotone: str | None = None,
    ) -> None:
        self.names = names
        self.types = types
        self.new = new
        self.step = step
        self.result = result
        # "up": the value never decreases as rows arrive (count, dcount, max); "down": never increases.
        self.monotone = monotone


def _hash64(value: Any) -> int:
    text = repr(value).encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")


class _Distinct:
    """Distinct values: exact up to DCOUNT_EXACT, then the K smallest 64-bit hashes (KMV estimate,
    relative standard error about 1/sqrt(K) = 1%)."""

    __slots__ = ("exact", "kmv", "kmv_set")

    def __init__(self) -> None:
        self.exact: set[Any] | None = set()
        self.kmv: list[int] = []  # max-heap by negation of the K smallest hashes
        self.kmv_set: set[int] = set()

    def add(self, value: Any) -> None:
        if self.exact is not None:
            self.exact.add(value)
            if len(self.exact) <= DCOUNT_EXACT:
                return
            values, self.exact = self.exact, None
            for v in values:
                self._add_hash(_hash64(v))
            return
        self._add_hash(_hash64(value))

    def _add_hash(self, h: int) -> None:
        if h in self.kmv_set:
            return
        if len(self.kmv) < DCOUNT_EXACT:
            heapq.heappush(self.kmv, -h)
            self.kmv_set.add(h)
        elif h < -self.kmv[0]:
            old = -heapq.heapreplace(self.kmv, -h)
            self.kmv_set.discard(old)
            self.kmv_set.add(h)

    def count(self) -> int:
        if self.exact is not None:
            return len(self.exact)
        kth = -self.kmv[0]
        return round((DCOUNT_EXACT - 1) * (1 << 64) / (kth + 1))


def _derived(prefix: str, node: ir.Expr) -> str:
    if isinstance(node, (ir.ColumnRef, ir.LetRef)):
        return f"{prefix}_{node.name}"
    return f"{prefix}_"


def _max_size(node: ir.FunctionCall, scope: Scope, index: int) -> int:
    if len(node.args) <= index:
        return MAKE_SET_MAX
    is_const, value = constant_value(node.args[index], scope)
    if not is_const or not isinstance(value, int) or value < 1:
        raise CompileError(
            f"the max_size of '{node.name}' must be a positive constant",
            anchor=node.name,
            segment=scope.segment,
        )
    return min(value, MAKE_SET_MAX)


def _arity(node: ir.FunctionCall, lo: int, hi: int, scope: Scope) -> None:
    if not lo <= len(node.args) <= hi:
        raise CompileError(
            f"aggregation '{node.name}' takes {lo}..{hi} arguments, got {len(node.args)}",
            anchor=node.name,
            segment=scope.segment,
        )


def _fold_min_max(kind: str) -> Callable[[State, Any], None]:
    def fold(state: State, v: Any) -> None:
        if v is None:
            return
        cur = state[0]
        try:
            if cur is None or (v < cur if kind == "min" else v > cur):
                state[0] = v
        except TypeError:
            pass  # values of mixed types are not ordered: the first kind seen wins

    return fold


AGGREGATIONS = (
    "count",
    "countif",
    "dcount",
    "dcountif",
    "make_set",
    "make_list",
    "min",
    "max",
    "sum",
    "avg",
    "arg_min",
    "arg_max",
    "any",
    "take_any",
)


# Kusto's deprecated spellings, still common in published hunting queries.
ALIASES = {"makeset": "make_set", "makelist": "make_list"}


def compile_aggregate(
    named: ir.NamedExpr, scope: Scope, input_columns: dict[str, str], key_names: set[str]
) -> Aggregate:
    """One ``name = agg(...)`` of a summarize, over rows with ``input_columns``."""
    node = named.expr
    if isinstance(node, ir.FunctionCall) and node.name in ALIASES:
        node = ir.FunctionCall(ALIASES[node.name], node.args)
    if not isinstance(node, ir.FunctionCall) or node.name not in AGGREGATIONS:
        what = node.name if isinstance(node, ir.FunctionCall) else type(node).__name__
        raise CompileError(
            f"'{what}' is not an aggregation a streaming summarize supports ({', '.join(AGGREGATIONS)})",
            anchor=what,
            segment=scope.segment,
        )
    name = node.name
    compiler = ExprCompiler(scope)

    def arg(i: int) -> tuple[Fn, str]:
        return compiler.compile(node.args[i])

    if name == "count":
        _arity(node, 0, 0, scope)

        def count_step(s: State, _r: Row) -> None:
            s[0] += 1

        return Aggregate(
            (named.name or "count_",), ("long",), lambda: [0], count_step, lambda s: (s[0],), "up"
        )
    if name == "countif":
        _arity(node, 1, 1, scope)
        pred = arg(0)[0]

        def countif_step(s: State, r: Row) -> None:
            if pred(r) is True:
                s[0] += 1

        return Aggregate(
            (named.name or "countif_",), ("long",), lambda: [0], countif_step, lambda s: (s[0],), "up"
        )
    if name in ("dcount", "dcountif"):
        _arity(node, 1, 3 if name == "dcountif" else 2, scope)
        value = arg(0)[0]
        cond: Fn | None = arg(1)[0] if name == "dcountif" else None

        def dcount_step(s: State, r: Row) -> None:
            if cond is not None and cond(r) is not True:
                return
            v = value(r)
            if v is not None:
                s[0].add(v)

        return Aggregate(
            (named.name or _derived(name, node.args[0]),),
            ("long",),
            lambda: [_Distinct()],
            dcount_step,
            lambda s: (s[0].count(),),
            "up",
        )
    if name in ("make_set", "make_list"):
        _arity(node, 1, 2, scope)
        value = arg(0)[0]
        bound = _max_size(node, scope, 1)
        unique = name == "make_set"

        def collect_step(s: State, r: Row) -> None:
            items = s[0]
            if len(items) >= bound:
                return
            v = value(r)
            if v is None:
                return
            if unique:
                try:
                    items.setdefault(v, None)
                except TypeError:  # an unhashable dynamic value: compared by its text
                    items.setdefault(repr(v), None)
            else:
                items.append(v)

        prefix = "set" if unique else "list"
        return Aggregate(
            (named.name or _derived(prefix, node.args[0]),),
            ("dynamic",),
            (lambda: [{}]) if unique else (lambda: [[]]),
            collect_step,
            lambda s: (list(s[0]),),
        )
    if name in ("min", "max"):
        _arity(node, 1, 1, scope)
        value, vt = arg(0)
        fold = _fold_min_max(name)
        return Aggregate(
            (named.name or _derived(name, node.args[0]),),
            (vt,),
            lambda: [None],
            lambda s, r: fold(s, value(r)),
            lambda s: (s[0],),
            "up" if name == "max" else "down",
        )
    if name in ("sum", "avg"):
        _arity(node, 1, 1, scope)
        value, vt = arg(0)

        def sum_step(s: State, r: Row) -> None:
            v = value(r)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                s[0] += v
                s[1] += 1

        if name == "sum":
            zero: Any = 0.0 if vt == "real" else 0
            return Aggregate(
                (named.name or _derived("sum", node.args[0]),),
                (vt,),
                lambda: [zero, 0],
                sum_step,
                lambda s: (s[0],),
            )
        return Aggregate(
            (named.name or _derived("avg", node.args[0]),),
            ("real",),
            lambda: [0, 0],
            sum_step,
            lambda s: (s[0] / s[1] if s[1] else None,),
        )
    if name in ("arg_min", "arg_max"):
        return _arg_extreme(named, node, scope, compiler, input_columns, key_names)
    # any / take_any: the first non-null value of each argument.
    if not node.args:
        raise CompileError(f"'{name}' needs at least one argument", anchor=name, segment=scope.segment)
    fns = [arg(i) for i in range(len(node.args))]
    names: list[str] = []
    for i, a in enumerate(node.args):
        if named.name and len(node.args) == 1:
            names.append(named.name)
        elif name == "take_any" and isinstance(a, (ir.ColumnRef, ir.LetRef)):
            names.append(a.name)
        else:
            names.append(
                _derived("any", a) if i == 0 or isinstance(a, (ir.ColumnRef, ir.LetRef)) else f"any_{i}"
            )
    width = len(fns)

    def any_step(s: State, r: Row) -> None:
        for i, (f, _t) in enumerate(fns):
            if s[i] is None:
                s[i] = f(r)

    return Aggregate(
        tuple(names), tuple(t for _f, t in fns), lambda: [None] * width, any_step, lambda s: tuple(s)
    )


def _arg_extreme(
    named: ir.NamedExpr,
    node: ir.FunctionCall,
    scope: Scope,
    compiler: ExprCompiler,
    input_columns: dict[str, str],
    key_names: set[str],
) -> Aggregate:
    if not node.args:
        raise CompileError(f"'{node.name}' needs an expression", anchor=node.name, segment=scope.segment)
    value, vt = compiler.compile(node.args[0])
    first = node.args[0]
    first_name = named.name or (
        first.name if isinstance(first, (ir.ColumnRef, ir.LetRef)) else f"{node.name}_"
    )
    carried: list[tuple[str, Fn, str]] = []
    for a in node.args[1:]:
        if isinstance(a, ir.Wildcard):
            for c, t in input_columns.items():
                if c != first_name and c not in key_names and all(c != n for n, _f, _t in carried):
                    carried.append((c, _column(c, t), t))
            continue
        fn, t = compiler.compile(a)
        if not isinstance(a, (ir.ColumnRef, ir.LetRef)):
            raise CompileError(
                f"'{node.name}' carries columns by name or *", anchor=node.name, segment=scope.segment
            )
        carried.append((a.name, fn, t))
    smaller = node.name == "arg_min"
    width = len(carried)

    def step(s: State, r: Row) -> None:
        v = value(r)
        if v is None:
            if s[0] is None and s[1] is None:  # no value yet: keep the first row's columns
                s[1] = tuple(f(r) for _n, f, _t in carried)
            return
        cur = s[0]
        try:
            better = cur is None or (v < cur if smaller else v > cur)
        except TypeError:
            better = False
        if better:
            s[0] = v
            s[1] = tuple(f(r) for _n, f, _t in carried)

    return Aggregate(
        (first_name, *(n for n, _f, _t in carried)),
        (vt, *(t for _n, _f, t in carried)),
        lambda: [None, None],
        step,
        lambda s: (s[0], *(s[1] if s[1] is not None else (None,) * width)),
    )


def _column(name: str, kql_type: str) -> Fn:
    default: Any = "" if kql_type == "string" else None
    return lambda r: r.get(name, default)
