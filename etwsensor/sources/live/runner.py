"""The live worker: queue → decode → normalize → detect → sinks (+ recording), on its own thread.

OS-independent: the Windows layer only fills the queue. The same building blocks as
``etwsensor.pipeline.replay`` (Decoder, Normalizer, Detector, newest-event stream clock, flush at the
end), so a recording made with ``--record`` replays to the same alerts.

Events reach the queue out of time order: two sessions flush their buffers independently (each at least
once per FlushTimer, one second) and each session has one buffer per CPU. A file or registry row
whose process started a few milliseconds earlier in the other session would miss its InitiatingProcess,
so the worker holds events in a ``ReorderWindow`` and releases them in timestamp order.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from etwsensor.budget import CpuBudget
from etwsensor.decode.decoder import Decoder
from etwsensor.events import RawEvent, RawRecord
from etwsensor.normalize import Normalizer
from etwsensor.pipeline import AlertSink, Detector, ReplaySummary, add_row_counts, apply_reload
from etwsensor.rules import RowGate, RuleSet
from etwsensor.rules.reload import RuleReloader
from etwsensor.sources.live.callback import RecordQueue
from etwsensor.sources.live.health import EVENT_TRACING, Watchdog
from etwsensor.sources.live.hostfacts import HOSTFACTS_PROVIDER, START_PROVIDERS, HostFacts
from etwsensor.sources.live.probe import WIN32K, Win32kProbe
from etwsensor.sources.recording import RecordingWriter


class RowExporter(Protocol):
    """Where ``trace --export`` sends every row (etwsensor.hunt.dataset.HourlyExport)."""

    def add(self, table: str, row: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


REORDER_SECONDS = 2.0  # the FlushTimer (1 s) of the later session plus a second of slack
REORDER_CAPACITY = 65_536
_NONE: list[RawEvent] = []  # returned when nothing is due; never appended to


class ReorderWindow:
    """Holds events for ``seconds`` of stream time and releases them oldest first.

    An event leaves when the stream has moved ``seconds`` past it (an event that old from the other
    session's buffers would have arrived), when it has waited ``seconds`` of wall time (a quiet stream),
    or when more than ``capacity`` are held (a flood: oldest first, the window shrinks rather than grow).
    Events older than one already released go out at once: they cannot be put back in order.
    """

    def __init__(self, seconds: float = REORDER_SECONDS, capacity: int = REORDER_CAPACITY,
                 monotonic: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.window = timedelta(seconds=seconds)
        self.seconds = seconds
        self.capacity = capacity
        self.monotonic = monotonic
        self._heap: list[tuple[datetime, int, float, RawEvent]] = []
        self._seq = 0
        self.newest: datetime | None = None
        self.released: datetime | None = None
        self.reordered = 0  # events that arrived before one with an earlier timestamp
        self.late = 0  # events older than one already released: passed on out of order

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, ev: RawEvent) -> list[RawEvent]:
        """Add ``ev``; the events now due, in timestamp order."""
        ts = ev.ts
        if self.released is not None and ts < self.released:
            self.late += 1
            return [ev]
        if self.newest is None or ts >= self.newest:
            self.newest = ts
        else:
            self.reordered += 1
        self._seq += 1
        heapq.heappush(self._heap, (ts, self._seq, self.monotonic(), ev))
        heap = self._heap
        due = self.newest - self.window
        if heap[0][0] > due and len(heap) <= self.capacity:
            return _NONE
        out = []
        while heap and (heap[0][0] <= due or len(heap) > self.capacity):
            out.append(self._pop())
        return out

    def idle(self) -> Iterator[RawEvent]:
        """The events that have waited the window in wall time (the stream went quiet)."""
        limit = self.monotonic() - self.seconds
        while self._heap and self._heap[0][2] <= limit:
            yield self._pop()

    def drain(self) -> Iterator[RawEvent]:
        while self._heap:
            yield self._pop()

    def _pop(self) -> RawEvent:
        ts, _, _, ev = heapq.heappop(self._heap)
        self.released = ts
        return ev


class LiveLoop:
    """Drains the record queue through the pipeline. ``run`` until ``stop``; ``finish`` once at the end."""

    def __init__(
        self,
        records: RecordQueue,
        decoder: Decoder,
        normalizer: Normalizer,
        detector: Detector,
        sinks: Iterable[AlertSink],
        recorder: RecordingWriter | None = None,
        watchdog: Watchdog | None = None,
        reorder: ReorderWindow | None = None,
        reloader: RuleReloader | None = None,
        replan: Callable[[RuleSet], dict[str, Any]] | None = None,
        exporter: RowExporter | None = None,
        host_facts: HostFacts | None = None,
        budget: CpuBudget | None = None,
    ) -> None:
        self.records = records
        self.decoder = decoder
        self.normalizer = normalizer
        self.detector = detector
        self.sinks = list(sinks)
        self.recorder = recorder
        self.watchdog = watchdog
        self.reorder = reorder if reorder is not None else ReorderWindow()
        self.reloader = reloader  # hot reload: a rule set compiled aside goes live between two events
        self.replan = replan  # what a reloaded set would need of the sessions (for the reload record)
        self.exporter = exporter  # trace --export: every row also goes to the Parquet dataset
        self.host_facts = host_facts  # tokens and SID names read from this host (sources/live/hostfacts.py)
        self.budget = budget  # a CPU ceiling: over it the lowest-value events are shed (etwsensor.budget)
        self._gates: Mapping[str, RowGate] = detector.ruleset.row_gates()
        self.probe: Win32kProbe | None = None  # set by the live command when the plan enables Win32k
        self.summary = ReplaySummary(inputs=[detector.source])
        self.clock: datetime | None = None
        self.stopping = threading.Event()
        self.errors = 0  # exceptions in a sink or the recorder: counted, the loop goes on
        # The main thread injects VolumeMapping events and health alerts while the worker runs.
        self._lock = threading.RLock()

    def run(self, idle_timeout: float = 0.2) -> None:
        """Process records until ``stop()``, then drain what is already queued."""
        take = self.records.take
        while not self.stopping.is_set():
            rec = take(idle_timeout)
            if rec is not None:
                self.on_record(rec)
            else:
                for ev in self.reorder.idle():
                    self.on_event(ev)
                if self.budget is not None:  # a quiet host: the share falls and shed kinds come back
                    self.budget.check()
                self.idle()
        while (rec := take(0)) is not None:
            self.on_record(rec)
        for ev in self.reorder.drain():
            self.on_event(ev)

    def stop(self) -> None:
        self.stopping.set()

    def _reload(self) -> None:
        assert self.reloader is not None
        self._gates = apply_reload(
            self.reloader,
            self.detector,
            [self.normalizer] if self.exporter is None else [],  # exporting: every row stays built
            self.sinks,
            self._gates,
            self.replan,
        )

    def on_record(self, rec: RawRecord) -> None:
        budget = self.budget
        if budget is not None:  # asked by the record's identity, before decoding (most of an event's cost)
            identity = self.decoder.identify(rec)
            if identity is None:
                self.decoder.decode(rec)  # not an event we decode: only counted by the decoder
                return
            provider = identity[0]
            # the tamper watch's and the probe's own events are handed over first, decoded: asked after
            if provider != EVENT_TRACING and (provider != WIN32K or self.probe is None):
                if not budget.admit(*identity):
                    self.summary.events += 1  # over the CPU ceiling: shed before decoding, counted
                    return
                budget = None  # admitted
        ev = self.decoder.decode(rec)
        if ev is None:
            return  # not a provider we decode (counted by the decoder)
        if ev.provider == EVENT_TRACING:  # the tamper watch's own events are not host activity
            if self.watchdog is not None:
                self.watchdog.on_event(ev)
            return
        if ev.provider == WIN32K and self.probe is not None and self.probe.observe(ev):
            return  # the start-up probe's own test hook
        if budget is not None and not budget.admit(ev.provider, ev.name):
            self.summary.events += 1  # over the CPU ceiling: shed before the reorder window, counted
            return
        if self.host_facts is not None and ev.provider in START_PROVIDERS:
            token = self.host_facts.on_start(ev)
            if token is not None:  # same timestamp, pushed first: it leaves the window just before the start
                for due in self.reorder.push(token):
                    self.on_event(due)
        for due in self.reorder.push(ev):
            self.on_event(due)

    def on_event(self, ev: RawEvent) -> None:
        """One event into the recording and the pipeline (also used for synthetic VolumeMapping events)."""
        with self._lock:
            if self.reloader is not None and self.reloader.ready:
                self._reload()
            if self.host_facts is not None and ev.provider != HOSTFACTS_PROVIDER:
                for account in self.host_facts.take_accounts(ev):  # names learned go before the event
                    self.on_event(account)
            self.summary.events += 1
            if self.clock is None or ev.ts > self.clock:
                self.clock = ev.ts
            rows = self.normalizer.process(ev)
            if self.recorder is not None:
                # Image facts that completed these rows go first, so the recording replays to the same rows.
                facts = self.normalizer.facts
                try:
                    if facts is not None:
                        for fe in facts.take_recorded():
                            self.recorder.write(fe)
                    self.recorder.write(ev)
                except OSError:
                    self.errors += 1
            for table, row in rows:
                self._row(table, row, self.clock)

    def idle(self, now: datetime | None = None) -> None:
        """No event came: stateful rules' windows close by the wall clock (a quiet night still alerts)."""
        with self._lock:
            wall = now or datetime.now(UTC)
            if self.clock is not None and wall < self.clock:
                return  # the events' clock is ahead of this machine's: they keep the time
            for alert in self.detector.tick(wall):
                self.send(alert)

    def _row(self, table: str, row: dict[str, Any], clock: datetime | None) -> None:
        if self.exporter is not None:
            try:
                self.exporter.add(table, row)
            except Exception:  # a full disk must not stop detection: counted like a sink failure
                self.errors += 1
        for alert in self.detector.on_row(table, row, clock):
            self.send(alert)

    def send(self, alert: dict[str, Any]) -> None:
        """To every sink; also how the watchdog's health alerts go out."""
        with self._lock:
            for sink in self.sinks:
                try:
                    sink.send(alert)
                except Exception:  # a sink failure must not stop detection (sinks spool on their own)
                    self.errors += 1

    def finish(self) -> ReplaySummary:
        """End of stream: events still held for reordering, rows waiting on a partner event, the counts."""
        for ev in self.reorder.drain():
            self.on_event(ev)
        with self._lock:
            for table, row in self.normalizer.flush():
                self._row(table, row, self.clock)
            facts = self.normalizer.facts
            if facts is not None and self.recorder is not None:
                try:  # facts that completed the last rows: a replay reads them before its own flush
                    for fe in facts.take_recorded():
                        self.recorder.write(fe)
                except OSError:
                    self.errors += 1
            self.summary.state.update(self.detector.ruleset.state_stats())
            for alert in self.detector.flush():
                self.send(alert)
            if self.exporter is not None:
                try:
                    self.exporter.close()
                except Exception:
                    self.errors += 1
        s = self.summary
        totals = self.decoder.stats.totals()
        s.decode_errors = totals["decode_errors"]
        s.undecoded = totals["undecoded"]
        add_row_counts(s, self.normalizer.sink.counts)  # rows the gates skipped included
        s.rows_skipped.update(self.normalizer.sink.skipped)
        s.unresolved.update(self.normalizer.sink.unresolved)
        d = self.detector
        s.alerts, s.matched = d.alerts, d.matched
        s.suppressed, s.allowlisted = d.suppressor.suppressed, d.allowlist.silenced
        s.rule_errors = dict(d.ruleset.errors)
        if self.budget is not None:
            s.shed = self.budget.state()
        if self.records.dropped:
            s.damage.append(f"live: {self.records.dropped} record(s) dropped, the queue was full")
        return s
