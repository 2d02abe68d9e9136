"""The compiled form of a rule: per-table :class:`Branch` es of closures, grouped in a :class:`Plan`.

A query becomes a list of *branches*, one per table leg of its ``union``s (tabular ``let``s are
inlined). A branch is a chain of stages (``where``, ``extend``, ``project``…) that takes one
input row and returns the projected output row or None. Nothing here evaluates rule text: the
compilers (:mod:`etwsensor.rules.query`) turn the IR into closures over constants.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from etwsensor.rules import scalars as S

Row = dict[str, Any]
Fn = Callable[[Row], Any]
Stage = Callable[[Row], "Row | None"]


class Clock:
    """Per-evaluation context shared by a rule set's plans.

    ``now`` is the stream clock ``now()``/``ago()`` read, set by the caller. ``row``/``lowered``
    cache the lower-cased text of the input row's string columns, so that the prefilter and every
    case-insensitive test of every rule lower a column once per row, not once per test.
    ``watermark`` is the event time up to which stateful operators have closed their windows.
    """

    __slots__ = ("lowered", "now", "row", "watermark")

    def __init__(self) -> None:
        self.now: datetime | None = None
        self.watermark: datetime | None = None
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
    # For a branch without needle groups: (column, RE2 pattern) pairs one of which must match the
    # raw column text (a Sigma rule made of regexes only); empty: no guarantee.
    regex_group: frozenset[tuple[str, str]] = frozenset()
    # The conjuncts of the wheres before any reshaping, tested on the input row itself: the
    # common case (and the whole of a Sigma rule) costs one call per conjunct, no stage calls.
    filters: list[Fn] = field(default_factory=list)
    # Set when the branch feeds a stateful operator: its output rows go there (table, row, input
    # row), and what the operator emits are the rule's results.
    sink: Callable[[str, Row, Row], list[Emit]] | None = None

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
    stateful: StatefulOperator | None = None  # the summarize/join the branches feed, if any


@dataclass(slots=True)
class Emit:
    """One result of a stateful operator, after the operators that followed it in the rule."""

    row: Row
    source: Row  # the input row that completed it: the alert's host and time
    table: str  # the source row's table
    report_ids: tuple[int, ...]  # of (at most MAX_REPORT_IDS) rows behind it


@dataclass(slots=True)
class StateStats:
    """What a stateful rule holds and has lost: reported in the summary."""

    evicted: int = 0
    late: int = 0
    emitted: int = 0

    def as_json(self) -> dict[str, int]:
        return {"evicted": self.evicted, "late": self.late, "emitted": self.emitted}


class StatefulOperator:
    """What a rule set drives: rows in (``feed``), windows closed by the watermark (``advance``),
    everything closed at the end of a stream (``flush``). See :mod:`etwsensor.rules.stateful`."""

    stats: StateStats

    def feed(self, side: int, table: str, row: Row, source: Row) -> list[Emit]:
        raise NotImplementedError

    def size(self) -> int:
        """Open groups (summarize) or held rows (join)."""
        raise NotImplementedError

    def next_deadline(self) -> datetime | None:
        """The watermark at which something next closes (None: nothing open)."""
        raise NotImplementedError

    def advance(self, watermark: datetime) -> list[Emit]:
        raise NotImplementedError

    def flush(self) -> list[Emit]:
        raise NotImplementedError
