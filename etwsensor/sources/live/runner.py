"""The live worker: queue → decode → normalize → detect → sinks (+ recording), on its own thread.

OS-independent: the Windows layer only fills the queue. The same building blocks as
``etwsensor.pipeline.replay`` (Decoder, Normalizer, Detector, newest-event stream clock, flush at the
end), so a recording made with ``--record`` replays to the same alerts.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from etwsensor.decode.decoder import Decoder
from etwsensor.events import RawEvent, RawRecord
from etwsensor.normalize import Normalizer
from etwsensor.pipeline import AlertSink, Detector, ReplaySummary, add_row_counts
from etwsensor.sources.live.callback import RecordQueue
from etwsensor.sources.live.health import EVENT_TRACING, Watchdog
from etwsensor.sources.recording import RecordingWriter


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
    ) -> None:
        self.records = records
        self.decoder = decoder
        self.normalizer = normalizer
        self.detector = detector
        self.sinks = list(sinks)
        self.recorder = recorder
        self.watchdog = watchdog
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
        while (rec := take(0)) is not None:
            self.on_record(rec)

    def stop(self) -> None:
        self.stopping.set()

    def on_record(self, rec: RawRecord) -> None:
        ev = self.decoder.decode(rec)
        if ev is None:
            return  # not a provider we decode (counted by the decoder)
        if ev.provider == EVENT_TRACING:  # the tamper watch's own events are not host activity
            if self.watchdog is not None:
                self.watchdog.on_event(ev)
            return
        self.on_event(ev)

    def on_event(self, ev: RawEvent) -> None:
        """One event into the recording and the pipeline (also used for synthetic VolumeMapping events)."""
        with self._lock:
            self.summary.events += 1
            if self.recorder is not None:
                try:
                    self.recorder.write(ev)
                except OSError:
                    self.errors += 1
            if self.clock is None or ev.ts > self.clock:
                self.clock = ev.ts
            for table, row in self.normalizer.process(ev):
                self._row(table, row, self.clock)

    def _row(self, table: str, row: dict[str, Any], clock: datetime | None) -> None:
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
        """End of stream: rows waiting on a partner event, then the counts."""
        with self._lock:
            for table, row in self.normalizer.flush():
                self._row(table, row, self.clock)
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
        if self.records.dropped:
            s.damage.append(f"live: {self.records.dropped} record(s) dropped, the queue was full")
        return s
