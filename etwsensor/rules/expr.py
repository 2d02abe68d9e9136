"""The scalar expression compiler: one IR expression → a closure over a row and its KQL type.

Kusto's three-valued logic is kept exact; predicates known never to be null compile to plain
short-circuit loops, and Sigma-style ``or`` chains on one column to one grouped test.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import re2

from etwsensor.rules import scalars as S
from etwsensor.rules.errors import CompileError
from etwsensor.rules.functions import FUNCTIONS
from etwsensor.rules.irnorm import flatten_logical
from etwsensor.rules.kqlir import ir
from etwsensor.rules.multimatch import any_substring, any_term
from etwsensor.rules.plan import Fn, Row, lowered_column
from etwsensor.rules.scope import (
    STRING_OPS,
    Scope,
    column_fn,
    const,
    constant_value,
    literal,
    never_null,
    string_column,
    text_of,
)

# Case-insensitive string operators: on the raw row they test the cached lower-cased column.
_HAS_ANY_LOOP = 32  # has_any needles tested one by one; more go through one automaton pass
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
            reason = S.re2_reason(exc)
            raise CompileError(f"bad regular expression {needle!r}: {reason}", segment=segment) from exc
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


class ExprCompiler:
    def __init__(self, scope: Scope) -> None:
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
            return column_fn(node.name, kql_type), kql_type
        if isinstance(node, ir.LetRef):
            if node.name in sc.columns:
                return self.compile(ir.ColumnRef(node.name))
            return self.compile(node.value)
        if isinstance(node, ir.Literal):
            value, kql_type = literal(node, sc.segment)
            return const(value), kql_type
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
        if op in STRING_OPS:
            return self.string_op(node)
        left, lt = self.compile(node.left)
        right, rt = self.compile(node.right)
        if op == "==":
            is_const, value = constant_value(node.right, self.scope)
            if is_const and value is not None and lt == "string":
                return (lambda r: left(r) == value), "bool"
            return (lambda r: S.eq(left(r), right(r))), "bool"
        if op == "!=":
            is_const, value = constant_value(node.right, self.scope)
            if is_const and value is not None and lt == "string":
                return (lambda r: left(r) != value), "bool"
            return (lambda r: S.ne(left(r), right(r))), "bool"
        if op in ("<", "<=", ">", ">="):
            return (lambda r: S.compare(op, left(r), right(r))), "bool"
        if op in ("+", "-", "*", "/", "%"):
            return (lambda r: S.arith(op, left(r), right(r))), _arith_type(op, lt, rt)
        raise self.err(f"unsupported operator {op!r}", anchor=op)

    def logical(self, node: ir.BinaryOp) -> tuple[Fn, str]:
        terms = flatten_logical(node, node.op)
        fns = self._grouped(terms) if node.op == "or" else [self.compile(t)[0] for t in terms]
        if all(never_null(t, self.scope) for t in terms):
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
        text = text_of(left, lt)
        negated = op.startswith("!")
        is_const, value = constant_value(node.right, self.scope)
        column = string_column(node.left, self.scope)
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
        rtext = text_of(right, rt)
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
            is_const, v = constant_value(item, self.scope)
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
            text = text_of(value, vt)
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
        text = text_of(value, vt)
        needles: list[str] = []
        for item in node.items:
            is_const, v = constant_value(item, self.scope)
            if not is_const:
                raise self.err("has_any/has_all take constant values in a streaming rule")
            needles.extend(S.as_text(x).lower() for x in S.flatten(v))
        has = S.has_term_cs
        if node.require_all:

            def has_all(r: Row) -> bool:
                low = text(r).lower()
                return all(has(low, n) for n in needles)

            return has_all, "bool"

        if len(needles) > _HAS_ANY_LOOP:  # an IOC list: one automaton pass, boundaries checked per hit
            term_hit = any_term(needles, S.is_term_char)
            return lambda r: term_hit(text(r).lower()), "bool"

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
            is_const, v = constant_value(step.index, self.scope)
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
        spec = FUNCTIONS.get(name)
        if spec is None:
            raise self.err(f"unknown or unsupported function '{name}'", anchor=name)
        lo, hi, builder = spec
        if not lo <= len(node.args) <= hi:
            raise self.err(f"function '{name}' takes {lo}..{hi} arguments, got {len(node.args)}", anchor=name)
        if name in ("extract", "trim") and node.args:
            is_const, pattern = constant_value(node.args[0], sc)
            if not is_const or not isinstance(pattern, str):
                raise self.err(f"the pattern of '{name}' must be a constant string", anchor=name)
            try:
                re2.compile(pattern, S.QUIET)
            except re2.error as exc:
                reason = S.re2_reason(exc)
                raise self.err(f"bad regular expression {pattern!r}: {reason}", anchor=name) from exc
        args = [self.compile(a) for a in node.args]
        return builder(args, node, self.scope)

    def clock_call(self, node: ir.FunctionCall) -> tuple[Fn, str]:
        clock = self.scope.clock
        if len(node.args) > 1:
            raise self.err(f"'{node.name}' takes at most one argument", anchor=node.name)
        offset: Fn = const(timedelta(0))
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


_GROUPABLE = {"contains", "startswith", "endswith", "=~", "contains_cs", "startswith_cs", "endswith_cs", "=="}


def _groupable(node: ir.Expr, scope: Scope) -> tuple[str, str, str] | None:
    if not isinstance(node, ir.BinaryOp) or node.op not in _GROUPABLE:
        return None
    left = node.left
    if isinstance(left, ir.LetRef) and left.name in scope.columns:
        left = ir.ColumnRef(left.name)
    if not isinstance(left, ir.ColumnRef) or scope.columns.get(left.name) != "string":
        return None
    is_const, value = constant_value(node.right, scope)
    if not is_const or not isinstance(value, str):
        return None
    return left.name, node.op, value


def _group_test(col: str, op: str, needles: list[str], scope: Scope) -> Fn:
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
        # Many substrings: one automaton pass (RE2, or Aho-Corasick for IOC lists) instead of a loop.
        test = any_substring(ns, S.regex_tester)
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
        test = any_substring(ns, S.regex_tester)
        return lambda r: test(low(r))

    def contains_any(r: Row) -> bool:
        text = low(r)
        for n in ns:  # noqa: SIM110 - no generator frame on the hot path
            if n in text:
                return True
        return False

    return contains_any
