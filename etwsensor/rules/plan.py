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
