"""Health records on the sinks. Heartbeats: one every N seconds, so a SOC can see that a sensor is alive and
how it is doing (events/s per provider, rows/s, alerts/s, losses, queue depth, CPU, RSS, rule-set version,
sink backlog). Schema: docs/heartbeat-schema.json (``HeartbeatRecord``).

Reload records: one per hot reload of the rules, applied or refused, naming the failures.

The first heartbeat (``state: start``) goes out when the stream starts and the last (``state: stop``) when it
ends, whatever the interval; in between ``tick`` is cheap enough to call between rows, and sends only
when the interval has passed. Rates are per interval (the change since the previous record).
"""

from __future__ import annotations

import hashlib
import os
import socket
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from etwsensor import __version__

if TYPE_CHECKING:
    from etwsensor.rules.reload import ReloadOutcome

HEARTBEAT_SCHEMA_VERSION: Final = "1.0"
HeartbeatState = Literal["start", "running", "stop"]


class HeartbeatRates(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events_per_second: float
    rows_per_second: float
    alerts_per_second: float
    events_per_second_by_provider: dict[str, float]


class HeartbeatRecord(BaseModel):
    """One heartbeat, as the sinks receive it."""

    model_config = ConfigDict(extra="forbid", title="etwsensor heartbeat")

    record: Literal["heartbeat"] = "heartbeat"
    schema_version: Literal["1.0"] = HEARTBEAT_SCHEMA_VERSION
    time: datetime = Field(description="wall clock when the record was made, UTC")
    state: HeartbeatState = Field(description="start: first record; stop: last record; running otherwise")
    sequence: int = Field(ge=0, description="0 for the start record, +1 per record")
    host: dict[str, str] = Field(description="name: this machine's host name")
    sensor: dict[str, Any] = Field(description="version, source (replayed files or live:sessions), pid")
    interval_seconds: float = Field(description="seconds since the previous record")
    uptime_seconds: float
    totals: dict[str, int] = Field(description="events, rows, alerts since the start")
    rates: HeartbeatRates
    loss: dict[str, int] = Field(description="events_lost, realtime_buffers_lost (ETW), queue_dropped")
    queue_depth: int | None = Field(description="events waiting between the ETW callback and the pipeline")
    process: dict[str, float | int | None] = Field(description="cpu_percent (of one core), rss_bytes")
    rules: dict[str, Any] = Field(description="version (digest of ids, versions and queries), count, errors")
    sinks: dict[str, dict[str, Any]] = Field(
        description="per sink: delivered, spooled, pending, dropped, lost, dead_letters"
    )
    stateful_rules: dict[str, dict[str, int]] = Field(
        default_factory=dict,
        description="per stateful rule (windowed summarize, join): state held, evicted, late, emitted",
    )
    shed: dict[str, int] = Field(
        default_factory=dict,
        description="events shed under the CPU ceiling (max_cpu_percent) since the start, per kind",
    )


@dataclass(slots=True)
class PipelineSnapshot:
    """What the pipeline reports at one moment; every field is a running total except queue_depth."""

    events: int = 0
    rows: int = 0
    alerts: int = 0
    events_by_provider: Mapping[str, int] = field(default_factory=dict)
    loss: Mapping[str, int] = field(default_factory=dict)
    queue_depth: int | None = None
    rules_version: str = ""
    rules_count: int = 0
    rule_errors: int = 0
    sinks: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    stateful: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    shed: Mapping[str, int] = field(default_factory=dict)  # events shed under the CPU ceiling, per kind


def ruleset_version(rules: Iterable[Any]) -> str:
    """A short digest of the loaded rules (id, version, query): changes whenever a reload changes anything."""
    digest = hashlib.sha256()
    for rule in sorted(rules, key=lambda r: str(r.id)):
        digest.update(f"{rule.id}\x1f{rule.version}\x1f{rule.query}\x1e".encode())
    return digest.hexdigest()[:16]


def rss_bytes() -> int | None:
    """Resident set size now (Linux: /proc; elsewhere the peak, which is what the platform offers cheaply)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        pass
    if sys.platform == "win32":
        return _windows_working_set()
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024
    except (ImportError, OSError):
        return None


def _windows_working_set() -> int | None:
    import ctypes
    from ctypes import wintypes

    class _Counters(ctypes.Structure):
        _fields_ = [  # PROCESS_MEMORY_COUNTERS
            ("cb", wintypes.DWORD), ("PageFaultCount", wintypes.DWORD),
            ("PeakWorkingSetSize", ctypes.c_size_t), ("WorkingSetSize", ctypes.c_size_t),
            ("QuotaPeakPagedPoolUsage", ctypes.c_size_t), ("QuotaPagedPoolUsage", ctypes.c_size_t),
            ("QuotaPeakNonPagedPoolUsage", ctypes.c_size_t), ("QuotaNonPagedPoolUsage", ctypes.c_size_t),
            ("PagefileUsage", ctypes.c_size_t), ("PeakPagefileUsage", ctypes.c_size_t),
        ]  # fmt: skip

    counters = _Counters()
    counters.cb = ctypes.sizeof(counters)
    kernel32 = ctypes.WinDLL("kernel32")  # type: ignore[attr-defined,unused-ignore]
    psapi = ctypes.WinDLL("psapi")  # type: ignore[attr-defined,unused-ignore]
    kernel32.GetCurrentProcess.restype = wintypes.HANDLE
    psapi.GetProcessMemoryInfo.argtypes = [wintypes.HANDLE, ctypes.c_void_p, wintypes.DWORD]
    psapi.GetProcessMemoryInfo.restype = wintypes.BOOL
    ok = psapi.GetProcessMemoryInfo(kernel32.GetCurrentProcess(), ctypes.byref(counters), counters.cb)
    return int(counters.WorkingSetSize) if ok else None


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _rate(now: int, before: int, seconds: float) -> float:
    return round((now - before) / seconds, 3) if seconds > 0 else 0.0


class Heartbeat:
    """Sends heartbeat records through ``send`` (the same sinks as the alerts)."""

    def __init__(
        self,
        send: Callable[[dict[str, Any]], None],
        interval: float,
        source: str,
        clock: Callable[[], float] = time.monotonic,
        cpu_clock: Callable[[], float] = time.process_time,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if interval <= 0:
            raise ValueError("heartbeat interval must be > 0 seconds")
        self.send = send
        self.interval = interval
        self.source = source
        self._clock, self._cpu_clock, self._wall = clock, cpu_clock, wall
        self._started = self._last = clock()
        self._cpu_last = cpu_clock()
        self._due = self._started  # the start record is due at once
        self._previous = PipelineSnapshot()
        self.sequence = 0
        self.sent = 0
        self._host = socket.gethostname()

    def due(self) -> bool:
        """Cheap: whether ``tick`` would send now."""
        return self._clock() >= self._due

    def start(self, snapshot: PipelineSnapshot) -> None:
        self._emit("start", snapshot)

    def tick(self, snapshot: PipelineSnapshot) -> None:
        if self._clock() >= self._due:
            self._emit("running", snapshot)

    def stop(self, snapshot: PipelineSnapshot) -> None:
        self._emit("stop", snapshot)

    def _emit(self, state: HeartbeatState, snap: PipelineSnapshot) -> None:
        now, cpu = self._clock(), self._cpu_clock()
        seconds = now - self._last
        before = self._previous
        record = {
            "record": "heartbeat",
            "schema_version": HEARTBEAT_SCHEMA_VERSION,
            "time": _iso(self._wall()),
            "state": state,
            "sequence": self.sequence,
            "host": {"name": self._host},
            "sensor": {"version": __version__, "source": self.source, "pid": os.getpid()},
            "interval_seconds": round(seconds, 3),
            "uptime_seconds": round(now - self._started, 3),
            "totals": {"events": snap.events, "rows": snap.rows, "alerts": snap.alerts},
            "rates": {
                "events_per_second": _rate(snap.events, before.events, seconds),
                "rows_per_second": _rate(snap.rows, before.rows, seconds),
                "alerts_per_second": _rate(snap.alerts, before.alerts, seconds),
                "events_per_second_by_provider": {
                    p: _rate(n, before.events_by_provider.get(p, 0), seconds)
                    for p, n in sorted(snap.events_by_provider.items())
                },
            },
            "loss": {
                "events_lost": int(snap.loss.get("events_lost", 0)),
                "realtime_buffers_lost": int(snap.loss.get("realtime_buffers_lost", 0)),
                "queue_dropped": int(snap.loss.get("queue_dropped", 0)),
            },
            "queue_depth": snap.queue_depth,
            "process": {
                "cpu_percent": round(100.0 * (cpu - self._cpu_last) / seconds, 2) if seconds > 0 else 0.0,
                "rss_bytes": rss_bytes(),
            },
            "rules": {"version": snap.rules_version, "count": snap.rules_count, "errors": snap.rule_errors},
            "sinks": {
                name: {
                    k: state_.get(k, 0)
                    for k in ("delivered", "spooled", "pending", "dropped", "lost", "dead_letters")
                }
                for name, state_ in snap.sinks.items()
            },
            "stateful_rules": {rule: dict(stats) for rule, stats in snap.stateful.items()},
            "shed": dict(snap.shed),
        }
        self.send(record)
        self.sent += 1
        self.sequence += 1
        self._last, self._cpu_last = now, cpu
        self._due = now + self.interval
        self._previous = PipelineSnapshot(
            events=snap.events, rows=snap.rows, alerts=snap.alerts,
            events_by_provider=dict(snap.events_by_provider),
        )  # fmt: skip


def reload_record(outcome: ReloadOutcome, running: Any) -> dict[str, Any]:
    """The health record of one reload: ``applied`` (``running`` is the new set) or ``refused`` (the old
    set keeps running; ``failures`` say why, with file, line and column)."""
    return {
        "record": "reload",
        "schema_version": HEARTBEAT_SCHEMA_VERSION,
        "time": _iso(datetime.now(UTC)),
        "host": {"name": socket.gethostname()},
        "sensor": {"version": __version__, "pid": os.getpid()},
        "status": "applied" if outcome.ruleset is not None else "refused",
        "trigger": outcome.trigger,
        "rules": {"version": ruleset_version(running.rules), "count": len(running.rules)},
        "failures": [f.as_json() for f in outcome.failures],
    }
