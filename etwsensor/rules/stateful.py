"""Stateful operators of a streaming rule: windowed ``summarize`` and time-bounded ``join``.

Both sit at the end of a rule's per-row branches (``Branch.sink``) and keep bounded state that
event time expires. The *watermark* is the newest event time seen (the rule set's stream clock)
minus :data:`ALLOWED_LATENESS`: a window whose end is at or before the watermark is closed, and a
row that arrives for a closed window is late (counted, dropped). In a live stream an idle
sensor moves the watermark with the wall clock (``RuleSet.advance``); a replay closes every
window at its end (``flush``). What an operator emits goes through the operators that followed
it in the rule (``post``) and becomes an :class:`Emit`: the output row, the input row that
completed it (the alert's host and time) and the ReportIds of at most :data:`MAX_REPORT_IDS` rows
behind it.
"""

from __future__ import annotations

import contextlib
import heapq
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from etwsensor.rules.aggregates import Aggregate, State
from etwsensor.rules.plan import Clock, Emit, Fn, Row, StatefulOperator, StateStats

ALLOWED_LATENESS = timedelta(minutes=2)
MAX_GROUPS = 10_000  # open groups per summarize rule; the oldest is evicted (and counted) beyond
MAX_JOIN_ROWS = 50_000  # buffered rows per join side; the oldest is evicted (and counted) beyond
MAX_REPORT_IDS = 20  # ReportIds an alert carries
DEFAULT_JOIN_WINDOW = timedelta(minutes=10)  # leftsemi/leftanti without a lookback

Post = Callable[[Row], "Row | None"]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _ids(row: Row) -> tuple[int, ...]:
    rid = row.get("ReportId")
    return (rid,) if isinstance(rid, int) else ()


# --- summarize ------------------------------------------------------------------------------------


class _Group:
    __slots__ = ("end", "fired", "ids", "key", "source", "states", "table")

    def __init__(
        self, key: tuple[Any, ...], end: datetime, states: list[State], source: Row, table: str
    ) -> None:
        self.key = key
        self.end = end
        self.states = states
        self.source = source
        self.table = table
        self.ids: list[int] = []
        self.fired = False


class WindowedSummarize(StatefulOperator):
    """``summarize aggs by keys`` over tumbling event-time windows of ``span``.

    ``window_key``: position of ``bin(Timestamp, span)`` among the keys (its value is the window
    start), or None when the window comes from the rule's lookback (then hidden: one window per
    ``span`` of ``time``). ``early``: the post-operators' filter only gets truer as rows arrive
    (``count_ >= N``), so a group is emitted as soon as it passes, once per window.
    """

    def __init__(
        self,
        keys: list[tuple[str, Fn]],
        aggregates: list[Aggregate],
        time: Fn,
        span: timedelta,
        window_key: int | None,
        post: Post,
        early: bool,
        clock: Clock,
        max_groups: int = MAX_GROUPS,
    ) -> None:
        self.clock = clock
        self.key_fns = tuple(f for _n, f in keys)
        self.key_names = tuple(n for n, _f in keys)
        self.aggregates = tuple(aggregates)
        self.time = time
        self.span = span
        self.window_key = window_key
        self.post = post
        self.early = early
        self.max_groups = max_groups
        self.groups: dict[tuple[Any, ...], _Group] = {}
        self.heap: list[tuple[datetime, int, tuple[Any, ...]]] = []
        self.seq = 0
        self.stats = StateStats()

    def _window(self, ts: datetime) -> datetime:
        start = ts - ((ts - _EPOCH) % self.span)
        return start

    def feed(self, side: int, table: str, row: Row, source: Row) -> list[Emit]:
        ts = self.time(row)
        if not isinstance(ts, datetime):
            return []  # no event time: in no window (Kusto's bin of null is null, a group of its own)
        start = self._window(ts)
        end = start + self.span
        watermark = self.clock.watermark
        if watermark is not None and end <= watermark:
            self.stats.late += 1
            return []
        key = tuple(f(row) for f in self.key_fns)
        if self.window_key is None:
            key = (*key, start)
        else:
            key = (*key[: self.window_key], start, *key[self.window_key + 1 :])
        group = self.groups.get(key)
        if group is None:
            if len(self.groups) >= self.max_groups:
                self._evict()
            group = _Group(key, end, [a.new() for a in self.aggregates], source, table)
            self.groups[key] = group
            self.seq += 1
            heapq.heappush(self.heap, (end, self.seq, key))
        for agg, state in zip(self.aggregates, group.states, strict=True):
            agg.step(state, row)
        group.source = source
        group.table = table
        rid = source.get("ReportId")
        if isinstance(rid, int) and len(group.ids) < MAX_REPORT_IDS:
            group.ids.append(rid)
        if self.early and not group.fired:
            emitted = self._emit(group)
            if emitted is not None:
                group.fired = True
                return [emitted]
        return []

    def _evict(self) -> None:
        oldest = next(iter(self.groups))
        del self.groups[oldest]
        self.stats.evicted += 1

    def _row(self, group: _Group) -> Row:
        out: Row = {}
        key = group.key if self.window_key is not None else group.key[:-1]
        for name, value in zip(self.key_names, key, strict=True):
            out[name] = value
        for agg, state in zip(self.aggregates, group.states, strict=True):
            for name, value in zip(agg.names, agg.result(state), strict=True):
                out[name] = value
        return out

    def _emit(self, group: _Group) -> Emit | None:
        out = self.post(self._row(group))
        if out is None:
            return None
        self.stats.emitted += 1
        return Emit(out, group.source, group.table, tuple(group.ids))

    def _close(self, group: _Group) -> Emit | None:
        del self.groups[group.key]
        if group.fired:
            return None
        return self._emit(group)

    def size(self) -> int:
        return len(self.groups)

    def next_deadline(self) -> datetime | None:
        heap = self.heap
        while heap and heap[0][2] not in self.groups:
            heapq.heappop(heap)  # evicted
        return heap[0][0] if heap else None

    def advance(self, watermark: datetime) -> list[Emit]:
        out: list[Emit] = []
        heap = self.heap
        while heap and heap[0][0] <= watermark:
            end, _seq, key = heapq.heappop(heap)
            group = self.groups.get(key)
            if group is None or group.end != end:
                continue
            emitted = self._close(group)
            if emitted is not None:
                out.append(emitted)
        return out

    def flush(self) -> list[Emit]:
        out: list[Emit] = []
        for group in sorted(self.groups.values(), key=lambda g: g.end):
            if not group.fired and (emitted := self._emit(group)) is not None:
                out.append(emitted)
        self.groups.clear()
        self.heap.clear()
        return out


# --- join ----------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Held:
    row: Row
    source: Row
    table: str
    time: datetime
    expires: datetime
    done: bool = False  # leftsemi: already emitted; leftanti: matched


@dataclass
class JoinSide:
    """One input of a join: how to read its keys and its event time."""

    keys: tuple[Fn, ...]
    time: Fn
    held: dict[tuple[Any, ...], deque[_Held]] = field(default_factory=dict)
    order: deque[tuple[tuple[Any, ...], _Held]] = field(default_factory=deque)


class TimeBoundedJoin(StatefulOperator):
    """``left | join kind=inner|leftsemi|leftanti (right) on keys`` within a time band.

    A right row matches a left row with equal keys when ``low <= right_time - left_time <= high``.
    Rows are held until no row still to come can match them (event time past the band, by the
    watermark), at most :data:`MAX_JOIN_ROWS` per side. ``inner`` emits each matching pair as soon
    as its second row arrives; ``leftsemi`` a left row at its first match; ``leftanti`` a left row
    whose band closed without a match.
    """

    def __init__(
        self,
        kind: str,
        left: JoinSide,
        right: JoinSide,
        low: timedelta,
        high: timedelta,
        combine: Callable[[Row, Row], Row],
        post: Post,
        clock: Clock,
        max_rows: int = MAX_JOIN_ROWS,
    ) -> None:
        self.clock = clock
        self.kind = kind
        self.sides = (left, right)
        self.low = low
        self.high = high
        self.combine = combine
        self.post = post
        self.max_rows = max_rows
        self.stats = StateStats()

    def _in_band(self, left_time: datetime, right_time: datetime) -> bool:
        return self.low <= right_time - left_time <= self.high

    def feed(self, side: int, table: str, row: Row, source: Row) -> list[Emit]:
        me, other = self.sides[side], self.sides[1 - side]
        ts = me.time(row)
        if not isinstance(ts, datetime):
            return []
        key = tuple(f(row) for f in me.keys)
        # Until when this row can still meet a row of the other side.
        expires = ts + self.high if side == 0 else ts - self.low
        held = _Held(row, source, table, ts, expires)
        out: list[Emit] = []
        for partner in other.held.get(key, ()):
            if partner.done and self.kind != "inner":
                continue
            left, right = (held, partner) if side == 0 else (partner, held)
            if not self._in_band(left.time, right.time):
                continue
            if self.kind == "inner":
                emitted = self._emit(self.combine(left.row, right.row), held, left, right)
                if emitted is not None:
                    out.append(emitted)
            elif self.kind == "leftsemi":
                left.done = True
                emitted = self._emit(left.row, held, left, right)
                if emitted is not None:
                    out.append(emitted)
                if side == 0:
                    break
            else:  # leftanti
                left.done = True
                if side == 0:
                    break
        if side == 0 and self.kind != "inner" and held.done:
            return out  # a left row already decided needs no holding
        watermark = self.clock.watermark
        if watermark is not None and expires < watermark:
            # Came after its band closed: it met what is still held, nothing to come can match it.
            self.stats.late += 1
            if side == 0 and self.kind == "leftanti":
                emitted = self._emit(row, held, held, None)
                if emitted is not None:
                    out.append(emitted)
            return out
        self._hold(me, key, held)
        return out

    def _hold(self, me: JoinSide, key: tuple[Any, ...], held: _Held) -> None:
        if len(me.order) >= self.max_rows:
            old_key, old = me.order.popleft()
            bucket = me.held.get(old_key)
            if bucket is not None and bucket and bucket[0] is old:
                bucket.popleft()
                if not bucket:
                    del me.held[old_key]
            self.stats.evicted += 1
        me.held.setdefault(key, deque()).append(held)
        me.order.append((key, held))

    def _emit(self, joined: Row, last: _Held, left: _Held, right: _Held | None) -> Emit | None:
        out = self.post(joined)
        if out is None:
            return None
        self.stats.emitted += 1
        ids = _ids(left.source) + (_ids(right.source) if right is not None else ())
        return Emit(out, last.source, last.table, ids)

    def size(self) -> int:
        return sum(len(s.order) for s in self.sides)

    def next_deadline(self) -> datetime | None:
        first = [s.order[0][1].expires for s in self.sides if s.order]
        return min(first) if first else None

    def advance(self, watermark: datetime) -> list[Emit]:
        out: list[Emit] = []
        for index, side in enumerate(self.sides):
            order = side.order
            # Held rows expire in arrival order, near enough: event time is almost monotone.
            while order and order[0][1].expires < watermark:
                key, held = order.popleft()
                bucket = side.held.get(key)
                if bucket is not None:
                    with contextlib.suppress(ValueError):
                        bucket.remove(held)
                    if not bucket:
                        del side.held[key]
                if index == 0 and self.kind == "leftanti" and not held.done:
                    emitted = self._emit(held.row, held, held, None)
                    if emitted is not None:
                        out.append(emitted)
        return out

    def flush(self) -> list[Emit]:
        out: list[Emit] = []
        if self.kind == "leftanti":
            for _key, held in self.sides[0].order:
                if not held.done and (emitted := self._emit(held.row, held, held, None)) is not None:
                    out.append(emitted)
        for side in self.sides:
            side.held.clear()
            side.order.clear()
        return out
