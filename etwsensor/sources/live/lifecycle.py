"""The ETW session lifecycle, owned call by call: StartTraceW → EnableTraceEx2 → OpenTraceW → ProcessTrace on
a daemon thread → ControlTraceW(QUERY) while running → ControlTraceW(STOP), keeping its final counters →
CloseTrace on the consumer handle only.

``TraceSession`` is one session; ``EtwSessions`` the plan's sessions as the watchdog and ``trace`` use them
(start, stop, query, restart). The advapi32 object is injected: on Windows ``win32.load("advapi32")``, in
the tests a simulation with the documented return codes (tests/live/simadvapi.py), so every decision here
runs on Linux. The rules it follows (docs/live-tracing.md):

* fixed session names; ERROR_ALREADY_EXISTS means an orphan of a run that died: stop it, retry once;
* the session is marked ours before StartTraceW returns, so a Ctrl-C at any point still stops it;
* OpenTraceW's INVALID_PROCESSTRACE_HANDLE (64-bit and WOW64 forms) is an error with Windows' text;
* ProcessTrace is called once per consumer handle, on a daemon thread: the interpreter never waits on it;
* stop never raises: STOP by name (its counters are the session's last), drain, CloseTrace, join.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
import uuid
from collections.abc import Callable, Iterable
from ctypes import POINTER, c_uint32, c_uint64, pointer
from dataclasses import dataclass, replace
from typing import Any

from etwsensor.logging import get_logger
from etwsensor.sources.live import structs as S
from etwsensor.sources.live.health import SessionStats
from etwsensor.sources.live.plan import (
    EVENT_FILTER_TYPE_EVENT_ID,
    FilterSpec,
    ProviderPlan,
    SessionPlan,
    TracePlan,
)
from etwsensor.sources.live.win32 import error_text

log = get_logger("etwsensor.live.lifecycle")

MIN_WINDOWS = (6, 3)  # Windows 8.1 / Server 2012 R2: private system loggers (8) and event-id filters (8.1)
MAX_LOGGERS_KEY = r"HKLM\SYSTEM\CurrentControlSet\Control\WMI\EtwMaxLoggers"
SYSTEM_LOGGER_SLOTS = 8  # system-logger sessions Windows runs at once, NT Kernel Logger's included
RESERVED_SYSTEM_LOGGERS = ("NT Kernel Logger", "Circular Kernel Context Logger")
DRAIN_SECONDS = 5.0  # after STOP, ProcessTrace delivers what is buffered, then returns
CLOSE_SECONDS = 2.0

RecordSink = Callable[[int, str], None]  # (EVENT_RECORD address, session name)


class LiveError(RuntimeError):
    """A session could not start: the message says what to do."""


# --- buffers -----------------------------------------------------------------------------------

BUFFER_KB = 128
MAX_BUFFER_MEMORY_KB = 64 * 1024  # per session


@dataclass(frozen=True, slots=True)
class BufferSizing:
    """EVENT_TRACE_PROPERTIES buffer fields: KB per buffer, buffer counts, flush timer (seconds)."""

    buffer_kb: int
    minimum: int
    maximum: int
    flush_seconds: int = 1

    def as_json(self) -> dict[str, int]:
        return {
            "buffer_kb": self.buffer_kb,
            "minimum_buffers": self.minimum,
            "maximum_buffers": self.maximum,
            "flush_timer_s": self.flush_seconds,
        }


def buffer_sizing(cpus: int) -> BufferSizing:
    """Buffers from the CPU count: ETW fills one buffer per CPU at a time, so two per CPU at least; room for
    a burst of twice that plus 32 while the consumer catches up, capped at 64 MB per session; a one-second
    flush so a quiet session's events arrive within a second."""
    minimum = max(4, 2 * max(1, cpus))
    maximum = max(minimum, min(MAX_BUFFER_MEMORY_KB // BUFFER_KB, 2 * minimum + 32))
    return BufferSizing(BUFFER_KB, minimum, maximum, 1)


def session_properties(plan: SessionPlan, sizing: BufferSizing) -> S.TRACE_PROPERTIES_BUFFER:
    """StartTraceW's properties for ``plan``: real time, explicit buffers, a fresh Wnode.Guid."""
    buf = S.trace_properties_buffer()
    p = buf.Properties
    p.LogFileNameOffset = 0  # real time only: no log file
    p.Wnode.Flags = S.WNODE_FLAG_TRACED_GUID
    p.Wnode.ClientContext = S.WNODE_CLIENT_CONTEXT_QPC
    # A private session's own GUID; never SystemTraceControlGuid, which names the NT Kernel Logger.
    p.Wnode.Guid = S.GUID.from_text(str(uuid.uuid4()))
    p.BufferSize = sizing.buffer_kb
    p.MinimumBuffers = sizing.minimum
    p.MaximumBuffers = sizing.maximum
    p.FlushTimer = sizing.flush_seconds
    p.LogFileMode = S.EVENT_TRACE_REAL_TIME_MODE
    if plan.kind == "system-logger":
        p.LogFileMode |= S.EVENT_TRACE_SYSTEM_LOGGER_MODE
        p.EnableFlags = plan.flags_mask
    return buf


def stats_of(buf: S.TRACE_PROPERTIES_BUFFER) -> SessionStats:
    p = buf.Properties
    return SessionStats(p.EventsLost, p.RealTimeBuffersLost, p.LogBuffersLost, p.BuffersWritten)


# --- errors ------------------------------------------------------------------------------------


def start_error(code: int, session: str, system_logger: bool = False, holders: Iterable[str] = ()) -> str:
    """The one-line message for a StartTraceW failure."""
    held = ", ".join(holders)
    if code == S.ERROR_NO_SYSTEM_RESOURCES and system_logger:
        return (
            f"cannot start ETW session {session}: no free system-logger slot (Windows runs "
            f"{SYSTEM_LOGGER_SLOTS}, two reserved for {' and '.join(RESERVED_SYSTEM_LOGGERS)}); "
            f"held by: {held or 'unknown (the sessions could not be listed)'}. "
            "Stop one with `logman stop <name> -ets`"
        )
    if code == S.ERROR_NO_SYSTEM_RESOURCES:
        return (
            f"cannot start ETW session {session}: Windows has no free trace session (EtwMaxLoggers); "
            f"running: {held or 'see `logman query -ets`'}. Stop unused ones with `logman stop <name> "
            f"-ets`, or raise {MAX_LOGGERS_KEY} (32-256) and reboot"
        )
    if code == S.ERROR_ACCESS_DENIED:
        return f"cannot start ETW session {session}: access denied (run from an elevated prompt)"
    if code == S.ERROR_ALREADY_EXISTS:
        return (
            f"cannot start ETW session {session}: a session of that name is still running after "
            f"stopping it once; stop it with `logman stop {session} -ets` or pick other names"
        )
    return f"cannot start ETW session {session}: Windows error {code} ({error_text(code)})"


def check_windows_version(version: tuple[int, ...]) -> None:
    if tuple(version[:2]) < MIN_WINDOWS:
        shown = ".".join(map(str, version))
        raise LiveError(
            f"live tracing needs Windows 8.1 / Server 2012 R2 or later (this is {shown}): "
            "capture with `trace --plan --logman` and replay the .etl instead"
        )


def windows_version() -> tuple[int, int, int]:
    """The real OS version (kernel32's file version, not the compatibility-shimmed one)."""
    getter: Any = getattr(sys, "getwindowsversion", None)
    if getter is None:
        return (0, 0, 0)
    v = getter()
    major, minor, build = getattr(v, "platform_version", (v.major, v.minor, v.build))
    return (int(major), int(minor), int(build))


# --- control helpers ---------------------------------------------------------------------------


def control(api: Any, name: str, code: int) -> tuple[S.TRACE_PROPERTIES_BUFFER, int]:
    """ControlTraceW by session name (QUERY or STOP); the buffer holds the counters on success."""
    buf = S.trace_properties_buffer()
    status = int(api.ControlTraceW(0, name, pointer(buf), code))
    return buf, status


@dataclass(frozen=True, slots=True)
class RunningSession:
    name: str
    log_file_mode: int

    @property
    def system_logger(self) -> bool:
        return (
            bool(self.log_file_mode & S.EVENT_TRACE_SYSTEM_LOGGER_MODE)
            or self.name in RESERVED_SYSTEM_LOGGERS
        )


def running_sessions(api: Any) -> tuple[list[RunningSession], int]:
    """The sessions QueryAllTracesW reports (at most 64) and how many there are in all."""
    n = S.MAX_QUERY_ALL_TRACES
    bufs = [S.trace_properties_buffer() for _ in range(n)]
    array = (POINTER(S.TRACE_PROPERTIES_BUFFER) * n)(*(pointer(b) for b in bufs))
    count = c_uint32(0)
    status = int(api.QueryAllTracesW(array, n, pointer(count)))
    if status not in (S.ERROR_SUCCESS, S.ERROR_MORE_DATA):  # MORE_DATA: the first 64 are filled
        log.warning("cannot list ETW sessions", error=status)
        return [], 0
    out = [
        RunningSession(S.get_utf16(b.LoggerName), b.Properties.LogFileMode)
        for b in bufs[: min(count.value, n)]
    ]
    return out, count.value


def no_resources_error(api: Any, session: str, system_logger: bool) -> str:
    """ERROR_NO_SYSTEM_RESOURCES: out of system-logger slots, or out of sessions; names who holds them."""
    running, total = running_sessions(api)
    loggers = [s.name for s in running if s.system_logger]
    if system_logger and len(loggers) >= SYSTEM_LOGGER_SLOTS:
        return start_error(S.ERROR_NO_SYSTEM_RESOURCES, session, True, loggers)
    names = [s.name for s in running]
    if total > len(running):
        names.append(f"and {total - len(running)} more")
    return start_error(S.ERROR_NO_SYSTEM_RESOURCES, session, False, names)


def enable_parameters(filters: Iterable[FilterSpec]) -> tuple[Any, list[Any]]:
    """ENABLE_TRACE_PARAMETERS (version 2) pointing at the filter descriptors; the buffers to keep alive."""
    specs = list(filters)
    if not specs:
        return None, []
    keep: list[Any] = []
    descriptors = (S.EVENT_FILTER_DESCRIPTOR * len(specs))()
    for d, f in zip(descriptors, specs, strict=True):
        data: Any
        if f.type == EVENT_FILTER_TYPE_EVENT_ID:
            data = S.event_id_filter(f.event_ids)
        else:  # Kernel-Registry's captured-data descriptor: Type 0, a 4-byte value (CORRECTIONS §7)
            data = ctypes.c_uint32(f.value or 0)
        keep.append(data)
        d.Ptr, d.Size, d.Type = ctypes.addressof(data), ctypes.sizeof(data), f.type
    params = S.ENABLE_TRACE_PARAMETERS()
    params.Version = S.ENABLE_TRACE_PARAMETERS_VERSION_2
    params.EnableFilterDesc = ctypes.addressof(descriptors)
    params.FilterDescCount = len(specs)
    keep += [descriptors, params]
    return pointer(params), keep


# --- one session -------------------------------------------------------------------------------


class TraceSession:
    """One real-time session: ``start`` (raises LiveError), ``query``, ``stop`` (never raises)."""

    def __init__(
        self,
        api: Any,
        plan: SessionPlan,
        on_record: RecordSink,
        sizing: BufferSizing,
        on_end: Callable[[str, int], None] | None = None,
    ) -> None:
        self.api = api
        self.plan = plan
        self.name = plan.name
        self.on_record = on_record
        self.sizing = sizing
        self.on_end = on_end
        self.handle = 0  # StartTraceW's handle: for EnableTraceEx2 only, never for CloseTrace
        self.consumer: int | None = None  # OpenTraceW's handle
        self.thread: threading.Thread | None = None
        self.end_status: int | None = None
        self.warnings: list[str] = []
        self._ours = False  # StartTraceW was called: stop() stops the session by name
        self._stopping = False
        self._keep: list[Any] = []
        self._thunk = S.EVENT_RECORD_CALLBACK(self._deliver)

    def _deliver(self, address: int | None) -> None:
        if address:
            self.on_record(address, self.name)

    # --- start ---

    def start(self) -> None:
        try:
            self._start_trace()
            if self.plan.kind == "manifest":
                for p in self.plan.providers:
                    self._enable(p)
                for p in self.plan.providers:
                    if p.capture_state:
                        self._capture_state(p)
            self._open()
        except BaseException:
            self.stop()
            raise
        log.info(
            "ETW session started",
            session=self.name,
            kind=self.plan.kind,
            providers=[p.name for p in self.plan.providers],
            buffers=self.sizing.as_json(),
        )

    def _start_trace(self) -> None:
        handle = c_uint64(0)
        self._ours = True  # before the call: a Ctrl-C as it returns must still stop the session
        status = int(self.api.StartTraceW(pointer(handle), self.name, pointer(self._properties())))
        if status == S.ERROR_ALREADY_EXISTS:
            # Fixed names: a session of ours outlived the run that started it. Stop it, retry once (krabsetw).
            _, stopped = control(self.api, self.name, S.EVENT_TRACE_CONTROL_STOP)
            log.warning(
                "stopped an orphaned ETW session of an earlier run", session=self.name, status=stopped
            )
            status = int(self.api.StartTraceW(pointer(handle), self.name, pointer(self._properties())))
        if status != S.ERROR_SUCCESS:
            self._ours = False  # not started by us: never stop someone else's session
            system = self.plan.kind == "system-logger"
            if status == S.ERROR_NO_SYSTEM_RESOURCES:
                raise LiveError(no_resources_error(self.api, self.name, system))
            raise LiveError(start_error(status, self.name, system))
        self.handle = handle.value

    def _properties(self) -> S.TRACE_PROPERTIES_BUFFER:
        props = session_properties(self.plan, self.sizing)
        self._keep.append(props)
        return props

    def _enable(self, p: ProviderPlan) -> None:
        status = self._enable_with(p, p.filters)
        if status != S.ERROR_SUCCESS and any(f.type == EVENT_FILTER_TYPE_EVENT_ID for f in p.filters):
            # Kernel-Registry's captured-data descriptor has never been documented with an event-id filter
            # beside it: if Windows refuses the pair, keep the provider and lose only the filtering.
            first = status
            status = self._enable_with(p, tuple(f for f in p.filters if f.type != EVENT_FILTER_TYPE_EVENT_ID))
            if status == S.ERROR_SUCCESS:
                self.warnings.append(
                    f"{self.name}: {p.name} refused its event-id filter "
                    f"(error {first}: {error_text(first)}); "
                    f"enabled without it, so all its events of keywords 0x{p.keywords:x} arrive (same rows, "
                    "more load)"
                )
                log.warning(
                    "provider enabled without its event-id filter",
                    session=self.name,
                    provider=p.name,
                    error=first,
                )
        if status != S.ERROR_SUCCESS:
            raise LiveError(
                f"cannot enable {p.name} in ETW session {self.name}: Windows error {status} "
                f"({error_text(status)})"
            )

    def _enable_with(self, p: ProviderPlan, filters: Iterable[FilterSpec]) -> int:
        guid = S.GUID.from_text(p.guid)
        params, keep = enable_parameters(filters)
        self._keep += [guid, *keep]
        control_code = S.EVENT_CONTROL_CODE_ENABLE_PROVIDER
        return int(
            self.api.EnableTraceEx2(
                self.handle, pointer(guid), control_code, p.level, p.keywords, 0, 0, params
            )
        )

    def _capture_state(self, p: ProviderPlan) -> None:
        guid = S.GUID.from_text(p.guid)
        code = S.EVENT_CONTROL_CODE_CAPTURE_STATE
        status = int(
            self.api.EnableTraceEx2(self.handle, pointer(guid), code, p.level, p.keywords, 0, 0, None)
        )
        if status != S.ERROR_SUCCESS:
            self.warnings.append(
                f"{self.name}: rundown of {p.name} failed (error {status}): processes already "
                "running stay unknown until they act"
            )

    def _open(self) -> None:
        logfile = S.EVENT_TRACE_LOGFILEW()
        name = S.utf16z(self.name)
        logfile.LoggerName = ctypes.addressof(name)
        logfile.ProcessTraceMode = S.PROCESS_TRACE_MODE_REAL_TIME | S.PROCESS_TRACE_MODE_EVENT_RECORD
        logfile.EventRecordCallback = ctypes.cast(self._thunk, ctypes.c_void_p).value
        self._keep += [logfile, name]
        consumer = int(self.api.OpenTraceW(pointer(logfile)))
        if consumer in S.INVALID_PROCESSTRACE_HANDLES:
            code = int(self.api.last_error())
            raise LiveError(
                f"cannot read ETW session {self.name}: OpenTraceW failed, Windows error {code} "
                f"({error_text(code)})"
            )
        self.consumer = consumer
        self.thread = threading.Thread(
            target=self._process, args=(consumer,), name=f"etw-{self.name}", daemon=True
        )
        self.thread.start()

    def _process(self, consumer: int) -> None:
        # Once: ProcessTrace returning means the session ended (stopped by us or by someone else).
        status = int(self.api.ProcessTrace(pointer(c_uint64(consumer)), 1, None, None))
        self.end_status = status
        if not self._stopping and self.on_end is not None:
            self.on_end(self.name, status)

    # --- running ---

    def query(self) -> SessionStats | None:
        buf, status = control(self.api, self.name, S.EVENT_TRACE_CONTROL_QUERY)
        return stats_of(buf) if status == S.ERROR_SUCCESS else None

    @property
    def consuming(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def stop(self) -> SessionStats | None:
        """STOP (returning its counters, the last ones), drain, CloseTrace(consumer), join. Never raises."""
        self._stopping = True
        final: SessionStats | None = None
        if self._ours:
            buf, status = control(self.api, self.name, S.EVENT_TRACE_CONTROL_STOP)
            self._ours = False
            if status == S.ERROR_SUCCESS:
                final = stats_of(buf)
            elif status != S.ERROR_WMI_INSTANCE_NOT_FOUND:  # already gone: nothing to stop
                log.warning(
                    "ETW session stop failed", session=self.name, error=status, text=error_text(status)
                )
        if self.thread is not None:
            self.thread.join(DRAIN_SECONDS)
        if self.consumer is not None:
            status = int(self.api.CloseTrace(self.consumer))
            self.consumer = None
            if status not in (S.ERROR_SUCCESS, S.ERROR_CTX_CLOSE_PENDING):
                log.warning("CloseTrace failed", session=self.name, error=status)
        if self.thread is not None:
            self.thread.join(CLOSE_SECONDS)
            if self.thread.is_alive():  # a daemon thread: the process still exits
                log.warning("ProcessTrace did not return", session=self.name)
        return final


# --- the plan's sessions -----------------------------------------------------------------------


def rename_sessions(plan: TracePlan, prefix: str) -> TracePlan:
    """The plan with its sessions named ``<prefix>-kernel`` / ``<prefix>-providers``."""
    renamed = tuple(replace(s, name=prefix + "-" + s.name.split("-", 1)[1]) for s in plan.sessions)
    return replace(plan, sessions=renamed)


class EtwSessions:
    """The plan's sessions: start, stop (final counters), query, restart. A health.SessionController."""

    def __init__(
        self,
        plan: TracePlan,
        on_record: RecordSink,
        api: Any = None,
        *,
        cpus: int | None = None,
        version: tuple[int, ...] | None = None,
    ) -> None:
        if api is None:
            from etwsensor.sources.live import win32

            api = win32.load("advapi32")
        self.api = api
        self.plan = plan
        self.on_record = on_record
        self.sizing = buffer_sizing(cpus if cpus is not None else os.cpu_count() or 1)
        self.version = version if version is not None else windows_version()
        self.on_consumer_end: Callable[[str], None] | None = None
        # the counters STOP returned for a session a restart replaced (its last interval's losses)
        self.on_final: Callable[[str, SessionStats], None] | None = None
        self.plans = {s.name: s for s in plan.sessions}
        self.sessions: dict[str, TraceSession] = {}
        self.warnings: list[str] = []

    def start(self) -> None:
        """All sessions, or none: a failure (or Ctrl-C) stops those already started, then raises."""
        check_windows_version(self.version)
        for name in self.plans:
            self._start(name)

    def _start(self, name: str) -> None:
        session = TraceSession(self.api, self.plans[name], self.on_record, self.sizing, self._ended)
        self.sessions[name] = session  # first: stop() reaches it whatever happens inside start()
        session.start()
        self.warnings.extend(w for w in session.warnings if w not in self.warnings)

    def _ended(self, name: str, status: int) -> None:
        log.warning("ProcessTrace returned", session=name, status=status)
        if self.on_consumer_end is not None:
            self.on_consumer_end(name)

    def stop(self) -> dict[str, SessionStats]:
        """Every session, even when a second Ctrl-C arrives meanwhile; the counters STOP returned."""
        final: dict[str, SessionStats] = {}
        for name, session in list(self.sessions.items()):
            try:
                stats = session.stop()
            except KeyboardInterrupt:
                stats = session.stop()  # interrupted half way: what is left is idempotent
            if stats is not None:
                final[name] = stats
        self.sessions.clear()
        return final

    def query(self, name: str) -> SessionStats | None:
        session = self.sessions.get(name)
        return session.query() if session is not None else None

    def restart(self, name: str) -> bool:
        old = self.sessions.pop(name, None)
        if old is not None:
            final = old.stop()  # closes the old consumer handle: no leak per restart
            if final is not None and self.on_final is not None:
                self.on_final(name, final)
        try:
            self._start(name)
        except LiveError as exc:
            self.sessions.pop(name, None)
            log.error("ETW session restart failed", session=name, error=str(exc))
            return False
        return True
