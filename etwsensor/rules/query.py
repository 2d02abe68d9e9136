"""The query (tabular operator) compiler: one rule's IR → a :class:`~etwsensor.rules.plan.Plan`.

Operators after a ``union`` are compiled once and shared by every leg; ``where``s on the
unchanged input row become the branch's filters and prefilter needles.
"""

from __future__ import annotations

import fnmatch
import functools
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from etwsensor.rules.errors import CompileError
from etwsensor.rules.expr import ExprCompiler
from etwsensor.rules.irnorm import flatten_logical
from etwsensor.rules.kqlir import ir
from etwsensor.rules.plan import Branch, Clock, Fn, Plan, Row, Stage
from etwsensor.rules.prefilter import best_groups, needle_group, regex_group
from etwsensor.rules.scope import Scope, default
from etwsensor.rules.stateful import TimeBoundedJoin, WindowedSummarize
from etwsensor.rules.stateful_compile import compile_join, compile_summarize, lookback
from etwsensor.tables import TABLE_NAMES, schema

USE_LOWERED_CACHE = True  # share lower-cased column texts between tests of the raw row

# Operators accepted at the end of a pipeline and documented as no-ops on a stream.
_STREAM_NOOPS = (ir.Sort, ir.Take, ir.Top)

_REFUSED: dict[type, str] = {
    ir.Lookup: "lookup",
    ir.MvExpand: "mv-expand",
    ir.Count: "count",
    ir.Distinct: "distinct",
    ir.Parse: "parse",
}


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
        self.stateful: WindowedSummarize | TimeBoundedJoin | None = None
        self.fed: list[Branch] = []  # the branches that feed the stateful operator
        self.lookbacks: list[timedelta] = []  # of the wheres compiled so far, in order

    def compile(self) -> Plan:
        stream = self.pipeline(self.query, None, [], top=True)
        out = tuple(stream.columns)
        for b in stream.branches:
            b.stages.append(_align(stream.columns))
        if self.stateful is not None:
            (post,) = stream.branches
            self.stateful.post = post.run
            return Plan(self.fed, out, dict(stream.columns), self.read, self.clock, self.stateful)
        return Plan(stream.branches, out, dict(stream.columns), self.read, self.clock)

    def pipeline(self, q: ir.Query, segment: str | None, stack: list[str], top: bool = False) -> _Stream:
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
            if isinstance(op, (ir.Summarize, ir.Join)):
                stream = self.stateful_operator(op, stream, segment, stack, ops[i + 1 :], top)
                continue
            stream = self.operator(op, stream, segment, stack)
        return stream

    def stateful_operator(
        self,
        op: ir.Summarize | ir.Join,
        stream: _Stream,
        segment: str | None,
        stack: list[str],
        later: list[ir.Operator],
        top: bool,
    ) -> _Stream:
        """The summarize/join that ends the per-row branches; what follows runs on what it emits."""
        word = "summarize" if isinstance(op, ir.Summarize) else "join"
        if not top or self.stateful is not None:
            raise CompileError(
                f"'{word}' in a streaming rule must be in its main pipeline (not in a union leg or a let), "
                "and there may be only one summarize or join",
                anchor=word,
                segment=segment,
            )
        scope = self.scope(stream, segment)
        window = self.lookbacks[0] if self.lookbacks else None
        fed = list(stream.branches)
        operator: WindowedSummarize | TimeBoundedJoin
        if isinstance(op, ir.Summarize):
            operator, columns = compile_summarize(op, stream.columns, scope, window, later, self.clock)
            self._note_reads(stream, scope)
            sides = [(0, fed)]
        else:
            before = len(self.lookbacks)
            right = self.pipeline(op.right, segment, stack)
            right_window = self.lookbacks[before] if len(self.lookbacks) > before else None
            operator, columns = compile_join(
                op, stream.columns, right.columns, scope, right_window or window, later, self.clock
            )
            self._note_reads(stream, scope)
            for b in right.branches:
                self.read.setdefault(b.table, set()).update(
                    {k.right for k in op.keys} & {c.name for c in schema(b.table).columns}
                )
            sides = [(0, fed), (1, list(right.branches))]
        for side, branches in sides:
            for b in branches:
                b.sink = functools.partial(operator.feed, side)
                self.fed.append(b)
        self.stateful = operator
        post = Branch(stream.table, [], label=word, raw=False)
        return _Stream([post], columns, stream.table)

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

    def scope(self, stream: _Stream, segment: str | None) -> Scope:
        return Scope(stream.columns, stream.table, segment, self.clock)

    def _note_reads(self, stream: _Stream, scope: Scope) -> None:
        for b in stream.branches:
            table_cols = {c.name for c in schema(b.table).columns}
            self.read.setdefault(b.table, set()).update(scope.read & table_cols)

    def operator(self, op: ir.Operator, stream: _Stream, segment: str | None, stack: list[str]) -> _Stream:
        for kind, word in _REFUSED.items():
            if isinstance(op, kind):
                raise CompileError(
                    f"'{word}' is not supported in a streaming rule",
                    anchor=word,
                    segment=segment,
                )
        if isinstance(op, ir.Where):
            scope = self.scope(stream, segment)
            scope.raw = USE_LOWERED_CACHE and all(b.raw for b in stream.branches)
            compiler = ExprCompiler(scope)
            terms = flatten_logical(op.predicate, "and")
            span = lookback(op.predicate, scope)
            if span is not None:
                self.lookbacks.append(span)
            conjuncts = [compiler.compile(t)[0] for t in terms]
            self._note_reads(stream, scope)
            groups = [g for g in (needle_group(t, scope) for t in terms) if g]
            for b in stream.branches:
                if b.raw:
                    b.filters.extend(conjuncts)
                else:
                    b.stages.append(_where(conjuncts))
                if b.raw and groups:
                    b.needle_groups = best_groups([*b.needle_groups, *groups])
                if b.raw and not b.regex_group:
                    b.regex_group = next(filter(None, (regex_group(t, scope) for t in terms)), frozenset())
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
        defaults = {n: default(stream.columns[src]) for n, src in sources.items()}
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
        scope = Scope(cols, stream.table, segment, self.clock)
        for named in op.expressions:
            fn, t = ExprCompiler(scope).compile(named.expr)
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
            fn, t = ExprCompiler(scope).compile(named.expr)
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
    pairs = tuple((n, default(t)) for n, t in columns if n != source_col)

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
