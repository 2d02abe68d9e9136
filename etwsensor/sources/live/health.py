"""Session health: loss accounting, the tamper watch and the watchdog, with an injectable controller and
clock so every decision is tested without ETW.

* Loss: ``ControlTrace(QUERY)`` statistics (EventsLost, RealTimeBuffersLost, LogBuffersLost) are polled;
  any increase, and any record the callback queue dropped, is logged and raises a "sensor degraded"
  alert (at most one per ``degraded_every`` per session, carrying the counts since the last one).
* Tamper (CORRECTIONS §6): a Kernel-EventTracing SessionStop (3, 11) or ProviderDisable (15, 41) naming
  one of our sessions, ProcessTrace returning while we did not ask it to, or QUERY failing, is a stop by
  someone else: a tamper alert (T1562.006) and a restart, retried with exponential backoff so a host
  that keeps killing the session gets a bounded number of attempts and log lines.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from etwsensor.alerts.model import build_alert
from etwsensor.events import RawEvent
from etwsensor.logging import get_logger
from etwsensor.rules import Rule

log = get_logger("etwsensor.live.health")

HEALTH_TABLE = "SensorHealth"  # the alerts' "table": not a Defender table, a sensor self-report
EVENT_TRACING = "Microsoft-Windows-Kernel-EventTracing"
_STOP_EVENTS = frozenset({"SessionStop", "SessionStop11"})
_DISABLE_EVENTS = frozenset({"ProviderDisable", "ProviderDisable41"})

# Built-in pseudo-rules: alerts about the sensor itself, in the same schema as rule alerts.
DEGRADED_RULE = Rule(
    id="etwsensor-sensor-degraded",
    name="etwsensor: events lost (sensor degraded)",
    query="",
    source="builtin:health",
    description="ETW dropped events or buffers, or the sensor's own queue was full: detections may have "
    "missed activity in this interval. Raise buffers, narrow the rules, or reduce load.",
    severity="medium",
    confidence="high",
)
TAMPER_RULE = Rule(
    id="etwsensor-etw-session-tamper",
    name="etwsensor: ETW session stopped or provider disabled by another process",
    query="",
    source="builtin:health",
    description="An etwsensor ETW session was stopped, or a provider disabled in it, without etwsensor "
    "asking: a common defense-evasion step (Impair Defenses: Indicator Blocking). The session is "
    "restarted.",
    severity="high",
    confidence="medium",
    tactics=("DefenseEvasion",),
    techniques=("T1562.006",),
    references=("https://attack.mitre.org/techniques/T1562/006/",),
)


@dataclass(frozen=True, slots=True)
class SessionStats:
    """The loss counters of one session (EVENT_TRACE_PROPERTIES after ControlTrace QUERY)."""

    events_lost: int = 0
    realtime_buffers_lost: int = 0
    log_buffers_lost: int = 0
    buffers_written: int = 0

    @property
    def lost(self) -> int:
        return self.events_lost + self.realtime_buffers_lost + self.log_buffers_lost


class SessionController(Protocol):
    """What the watchdog needs from ETW; session.py implements it on Windows, tests fake it."""

    def query(self, name: str) -> SessionStats | None:
        """The session's counters; None when QUERY fails (the session is gone)."""

    def restart(self, name: str) -> bool:
        """Start the session again as planned; False when that failed."""


@dataclass
class _Watched:
    name: str
    last: SessionStats = field(default_factory=SessionStats)
    stopped_reason: str = ""  # non-empty: known stopped, waiting for a restart
    restarts: int = 0
    failures: int = 0  # consecutive failed restarts
    next_try: float = 0.0
    pending_loss: dict[str, int] = field(default_factory=dict)
    last_degraded: float = float("-inf")


AlertOut = Callable[[dict[str, Any]], None]


class Watchdog:
    """Polls sessions, reads tamper events, restarts stopped sessions, emits health alerts.

    ``poll()`` is called by the live loop every few seconds; ``on_event`` with every RawEvent of the
    Kernel-EventTracing provider; ``consumer_returned`` when a ProcessTrace thread ends unasked.
    """

    def __init__(
        self,
        controller: SessionController,
        sessions: Iterable[str],
        emit: AlertOut,
        host: tuple[str, str] = ("", ""),  # (DeviceName, DeviceId)
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
        degraded_every: float = 60.0,
        backoff_first: float = 1.0,
        backoff_max: float = 300.0,
        expect_window: float = 30.0,
    ) -> None:
        self.controller = controller
        self.sessions = {n: _Watched(n) for n in sessions}
        self.emit = emit
        self.host = host
        self.clock = clock
        self.monotonic = monotonic
        self.degraded_every = degraded_every
        self.backoff_first = backoff_first
        self.backoff_max = backoff_max
        self.expect_window = expect_window
        self.queue_dropped_seen = 0
        self.alerts = {DEGRADED_RULE.id: 0, TAMPER_RULE.id: 0}
        self._report_id = 0
        # on_event comes from the worker thread, poll from the main thread, consumer_returned from a watcher
        self._lock = threading.RLock()
        # Our own stops also produce SessionStop events: a restart's and the final shutdown's are expected.
        self._expected: dict[str, float] = {}  # session → until when (monotonic) one stop event is ours
        self._closing = False

    # --- inputs ------------------------------------------------------------------------------------

    def on_event(self, ev: RawEvent) -> None:
        """A Kernel-EventTracing event from the stream: a stop or disable naming one of our sessions."""
        if ev.provider != EVENT_TRACING:
            return
        with self._lock:
            self._on_event(ev)

    def _on_event(self, ev: RawEvent) -> None:
        name = str(ev.fields.get("SessionName") or "")
        watched = self.sessions.get(name)
        if watched is None or self._closing:
            return
        if ev.name in _STOP_EVENTS and self._expected.pop(name, float("-inf")) >= self.monotonic():
            return  # the stop of the session our own restart replaced
        if ev.name in _STOP_EVENTS:
            self._stopped(watched, f"session stopped (Kernel-EventTracing {ev.name}, by pid {ev.pid})")
        elif ev.name in _DISABLE_EVENTS:
            provider = ev.fields.get("ProviderName", "")
            why = f"provider {provider} disabled (Kernel-EventTracing {ev.name}, by pid {ev.pid})"
            self._stopped(watched, why)

    def consumer_returned(self, name: str) -> None:
        """ProcessTrace returned while we did not stop it: the session is gone (CORRECTIONS §6)."""
        watched = self.sessions.get(name)
        if watched is not None and not self._closing:
            with self._lock:
                self._stopped(watched, "ProcessTrace returned: the session was stopped")

    def shutdown(self) -> None:
        """We are about to stop the sessions ourselves: nothing from now on is tamper."""
        with self._lock:
            self._closing = True

    def queue_drops(self, dropped_total: int) -> None:
        """The callback queue's running drop count; increases are folded into the degraded alert."""
        new = dropped_total - self.queue_dropped_seen
        if new <= 0:
            return
        with self._lock:
            self.queue_dropped_seen = dropped_total
            first = next(iter(self.sessions.values()), None)  # the queue serves all sessions: report it once
            if first is not None:
                first.pending_loss["QueueDropped"] = first.pending_loss.get("QueueDropped", 0) + new
        log.warning("records dropped: sensor queue full", dropped=new, total=dropped_total)

    # --- the periodic check -----------------------------------------------------------------------

    def poll(self) -> None:
        with self._lock:
            if not self._closing:
                self._poll(self.monotonic())

    def _poll(self, now: float) -> None:
        for w in self.sessions.values():
            if not w.stopped_reason:
                stats = self.controller.query(w.name)
                if stats is None:
                    self._stopped(w, "ControlTrace(QUERY) failed: the session is gone")
                else:
                    self._account_loss(w, stats)
            if w.stopped_reason and now >= w.next_try:
                self._restart(w, now)
            self._maybe_degraded(w, now)

    def _account_loss(self, w: _Watched, stats: SessionStats) -> None:
        last = w.last
        w.last = stats
        for key, new, old in (
            ("EventsLost", stats.events_lost, last.events_lost),
            ("RealTimeBuffersLost", stats.realtime_buffers_lost, last.realtime_buffers_lost),
            ("BuffersLost", stats.log_buffers_lost, last.log_buffers_lost),
        ):
            if new > old:
                w.pending_loss[key] = w.pending_loss.get(key, 0) + new - old
                log.warning("ETW loss", session=w.name, counter=key, new=new - old, total=new)

    def _maybe_degraded(self, w: _Watched, now: float) -> None:
        if not w.pending_loss or now - w.last_degraded < self.degraded_every:
            return
        counts, w.pending_loss = w.pending_loss, {}
        w.last_degraded = now
        summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        self._alert(DEGRADED_RULE, w.name, f"events lost on {w.name}: {summary}", counts)

    def _stopped(self, w: _Watched, reason: str) -> None:
        if w.stopped_reason:
            return  # one alert per stop
        w.stopped_reason = reason
        w.next_try = self.monotonic()
        log.error("ETW session tamper", session=w.name, reason=reason)
        self._alert(TAMPER_RULE, w.name, reason, {})

    def _restart(self, w: _Watched, now: float) -> None:
        self._expected[w.name] = now + self.expect_window  # restart stops what is left of the old session
        if self.controller.restart(w.name):
            log.warning("ETW session restarted", session=w.name, after=w.stopped_reason)
            w.restarts += 1
            w.failures = 0
            w.stopped_reason = ""
            w.last = SessionStats()  # a new session counts from zero
            return
        w.failures += 1
        delay = min(self.backoff_max, self.backoff_first * 2 ** (w.failures - 1))
        w.next_try = now + delay
        log.error("ETW session restart failed", session=w.name, attempt=w.failures, retry_in_s=delay)

    # --- alerts -----------------------------------------------------------------------------------

    def _alert(self, rule: Rule, session: str, reason: str, counts: dict[str, int]) -> None:
        ts = self.clock()
        self._report_id += 1
        name, device_id = self.host
        source_row = {"Timestamp": ts, "DeviceName": name, "DeviceId": device_id, "ReportId": self._report_id}
        projected: dict[str, Any] = {"Timestamp": ts, "DeviceName": name, "SessionName": session, **counts,
                                     "Reason": reason}  # fmt: skip
        self.alerts[rule.id] += 1
        self.emit(build_alert(rule, HEALTH_TABLE, source_row, projected, f"live:{session}"))

    def state(self) -> dict[str, Any]:
        sessions = {
            n: {"stopped": w.stopped_reason, "restarts": w.restarts, "lost": w.last.lost}
            for n, w in self.sessions.items()
        }
        return {"sessions": sessions, "alerts": dict(self.alerts)}
