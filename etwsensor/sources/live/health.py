"""Session health: loss accounting, the tamper watch and the watchdog, with an injectable controller and
clock so every decision is tested without ETW.

* Loss: ``ControlTrace(QUERY)`` statistics (EventsLost, RealTimeBuffersLost, LogBuffersLost) are polled;
  any increase, and any record the callback queue dropped, is logged and raises a "sensor degraded"
  alert (at most one per ``degraded_every`` per session, carrying the counts since the last one).
  ETW's own lost-event records in the stream (RTLostEvent, RTLostBuffer) and the counters STOP returns at
  the end count too.
* Tamper (CORRECTIONS §6): a Kernel-EventTracing SessionStop (3, 11) or ProviderDisable (15, 41) naming
  one of our sessions, a ProviderEnable (14) re-enabling a provider in it with keyword 0 or level 0 (blinds
  it without a disable), ProcessTrace returning while we did not ask it to, or QUERY failing, is a stop by
  someone else: a tamper alert (T1562.006) and a restart.
* Restarts back off exponentially; a session that stops again within ``flap_seconds`` of its restart is a
  failed restart, not a new tamper; after ``max_failures`` failed attempts the watchdog gives up on it (one
  "blind" alert). Each state change (running → stopped → running / failed) is one health record in
  ``transitions`` and one log line, never one per poll.
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
_ENABLE_EVENT = "ProviderEnable"
RUNNING, STOPPED, FAILED = "running", "stopped", "failed"

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
BLIND_RULE = Rule(
    id="etwsensor-sensor-blind",
    name="etwsensor: an ETW session could not be restarted (sensor blind)",
    query="",
    source="builtin:health",
    description="etwsensor gave up restarting an ETW session after repeated failures: the tables it feeds "
    "are no longer traced on this host.",
    severity="high",
    confidence="high",
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
    state: str = RUNNING
    stopped_reason: str = ""  # non-empty: known stopped, waiting for a restart
    restarts: int = 0
    failures: int = 0  # consecutive failed restarts (a stop soon after a restart counts as one)
    next_try: float = 0.0
    restarted_at: float = float("-inf")
    pending_loss: dict[str, int] = field(default_factory=dict)
    totals: dict[str, int] = field(default_factory=dict)  # every loss of the run, final counters included
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
        backoff_max: float = 60.0,
        expect_window: float = 30.0,
        max_failures: int = 8,
        flap_seconds: float = 30.0,
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
        self.max_failures = max_failures
        self.flap_seconds = flap_seconds
        self.queue_dropped_seen = 0
        self.lost_records_seen: dict[tuple[str, str], int] = {}
        self.transitions: list[dict[str, Any]] = []
        self.alerts = {DEGRADED_RULE.id: 0, TAMPER_RULE.id: 0, BLIND_RULE.id: 0}
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
        elif ev.name == _ENABLE_EVENT:
            # Version 1 carries the enable parameters; re-enabling with keyword 0 or level 0 silences the
            # provider in our session without any disable event.
            keyword, level = ev.fields.get("MatchAnyKeyword"), ev.fields.get("Level")
            if keyword == 0 or level == 0:
                provider = ev.fields.get("ProviderName", "")
                why = (f"provider {provider} re-enabled with keyword 0x{keyword or 0:x}, level {level} "
                       f"(Kernel-EventTracing ProviderEnable, by pid {ev.pid})")  # fmt: skip
                self._stopped(watched, why)

    def consumer_returned(self, name: str) -> None:
        """ProcessTrace returned while we did not stop it: the session is gone (CORRECTIONS §6)."""
        watched = self.sessions.get(name)
        if watched is not None and not self._closing:
            with self._lock:
                self._stopped(watched, "ProcessTrace returned: the session was stopped")

    def lost_records(self, counts: dict[tuple[str, str], int]) -> None:
        """ETW's lost-event records seen in each session's stream (running totals per session and kind)."""
        with self._lock:
            for (session, kind), total in list(counts.items()):
                new = total - self.lost_records_seen.get((session, kind), 0)
                if new <= 0:
                    continue
                self.lost_records_seen[session, kind] = total
                w = self.sessions.get(session) or next(iter(self.sessions.values()), None)
                if w is not None:
                    self._add_loss(w, kind, new)
                log.warning("ETW lost-event records", session=session, kind=kind, new=new, total=total)

    def final(self, stats: dict[str, SessionStats]) -> None:
        """The counters ControlTrace(STOP) returned: the last interval's losses."""
        with self._lock:
            for name, s in stats.items():
                w = self.sessions.get(name)
                if w is not None:
                    self._account_loss(w, s)

    @property
    def blind(self) -> bool:
        """Every session given up on: nothing is traced any more."""
        return bool(self.sessions) and all(w.state == FAILED for w in self.sessions.values())

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
                self._add_loss(first, "QueueDropped", new)
        log.warning("records dropped: sensor queue full", dropped=new, total=dropped_total)

    # --- the periodic check -----------------------------------------------------------------------

    def poll(self) -> None:
        with self._lock:
            if not self._closing:
                self._poll(self.monotonic())

    def _poll(self, now: float) -> None:
        for w in self.sessions.values():
            if w.state == FAILED:
                continue
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
                self._add_loss(w, key, new - old)
                log.warning("ETW loss", session=w.name, counter=key, new=new - old, total=new)

    @staticmethod
    def _add_loss(w: _Watched, key: str, n: int) -> None:
        w.pending_loss[key] = w.pending_loss.get(key, 0) + n
        w.totals[key] = w.totals.get(key, 0) + n

    def _maybe_degraded(self, w: _Watched, now: float) -> None:
        if not w.pending_loss or now - w.last_degraded < self.degraded_every:
            return
        counts, w.pending_loss = w.pending_loss, {}
        w.last_degraded = now
        summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        self._alert(DEGRADED_RULE, w.name, f"events lost on {w.name}: {summary}", counts)

    def _transition(self, w: _Watched, state: str, reason: str) -> None:
        """One health record and one log line per state change."""
        w.state = state
        record = {"ts": self.clock(), "session": w.name, "state": state, "reason": reason,
                  "restarts": w.restarts, "failures": w.failures}  # fmt: skip
        self.transitions.append(record)
        log.warning("ETW session state", session=w.name, state=state, reason=reason, failures=w.failures)

    def _stopped(self, w: _Watched, reason: str) -> None:
        if w.state != RUNNING:
            return  # one record per stop
        now = self.monotonic()
        w.stopped_reason = reason
        if now - w.restarted_at < self.flap_seconds:
            # stopped again right after a restart: the restart did not hold; same incident, backing off
            w.failures += 1
            if w.failures >= self.max_failures:
                self._give_up(w)
                return
            w.next_try = now + self._delay(w)
            self._transition(w, STOPPED, reason + f" (again, {now - w.restarted_at:.0f} s after a restart)")
            return
        w.failures = 0
        w.next_try = now
        self._transition(w, STOPPED, reason)
        self._alert(TAMPER_RULE, w.name, reason, {})

    def _delay(self, w: _Watched) -> float:
        return float(min(self.backoff_max, self.backoff_first * 2 ** (w.failures - 1)))

    def _restart(self, w: _Watched, now: float) -> None:
        self._expected[w.name] = now + self.expect_window  # restart stops what is left of the old session
        if self.controller.restart(w.name):
            w.restarts += 1
            w.stopped_reason = ""
            w.restarted_at = now
            w.last = SessionStats()  # a new session counts from zero
            self._transition(w, RUNNING, "restarted")
            return
        w.failures += 1
        if w.failures >= self.max_failures:
            self._give_up(w)
            return
        w.next_try = now + self._delay(w)
        delay = w.next_try - now
        log.info("ETW session restart failed", session=w.name, attempt=w.failures, retry_in_s=delay)

    def _give_up(self, w: _Watched) -> None:
        reason = f"gave up after {w.failures} failed restarts; last stop: {w.stopped_reason}"
        self._transition(w, FAILED, reason)
        self._alert(BLIND_RULE, w.name, reason, {})

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
            n: {
                "state": w.state,
                "stopped": w.stopped_reason,
                "restarts": w.restarts,
                "lost": sum(w.totals.values()),
                "losses": dict(sorted(w.totals.items())),
            }
            for n, w in self.sessions.items()
        }
        transitions = [{**t, "ts": t["ts"].isoformat()} for t in self.transitions]
        return {"sessions": sessions, "alerts": dict(self.alerts), "transitions": transitions}
