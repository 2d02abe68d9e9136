"""A simulated advapi32: the ETW controller and consumer functions etwsensor calls, with the return codes
and the documented semantics of Microsoft's pages for StartTraceW, EnableTraceEx2, OpenTraceW, ProcessTrace,
ControlTraceW, CloseTrace and QueryAllTracesW. It takes the same ctypes arguments as the real functions
(pointers to the real structures, written through as Windows would), so the lifecycle runs unchanged on it.

Semantics kept:
* StartTraceW: ERROR_ALREADY_EXISTS for a running name; ERROR_ACCESS_DENIED when not elevated;
  ERROR_NO_SYSTEM_RESOURCES for the ninth system logger (8 slots; NT Kernel Logger and Circular Kernel Context
  Logger count) or past EtwMaxLoggers (64).
* EnableTraceEx2: ERROR_INVALID_PARAMETER for an unknown handle, an event-id filter before Windows 8.1 or one
  of more than 64 ids; a hook refuses chosen providers/filter combinations.
* OpenTraceW: INVALID_PROCESSTRACE_HANDLE (64-bit, or the WOW64 form) with the error in GetLastError.
* ProcessTrace: delivers the session's records through the EVENT_RECORD callback on the caller's thread and
  returns ERROR_SUCCESS once the session is stopped (by us or from outside) and drained, ERROR_CANCELLED after
  CloseTrace; a second call on one handle is recorded as a violation.
* ControlTraceW: QUERY fills the counters; STOP writes the final counters (``lose_at_stop``) then ends the
  session; ERROR_WMI_INSTANCE_NOT_FOUND for a name that is not running.
* CloseTrace: ERROR_CTX_CLOSE_PENDING while ProcessTrace still delivers; on a StartTraceW handle it fails and
  is recorded as a violation (the documentation forbids it).
* QueryAllTracesW: ERROR_INVALID_PARAMETER for more than 64 entries; ERROR_MORE_DATA, the first ones filled.
"""

from __future__ import annotations

import ctypes
import itertools
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from etwsensor.sources.live import structs as S
from etwsensor.sources.live.plan import EVENT_FILTER_TYPE_EVENT_ID
from tests.live.records import LiveRecord

SYSTEM_LOGGER_SLOTS = 8
MAX_LOGGERS = 64


@dataclass
class Filter:
    type: int
    data: bytes

    @property
    def event_ids(self) -> tuple[int, ...]:
        count = int.from_bytes(self.data[2:4], "little")
        return tuple(int.from_bytes(self.data[4 + 2 * i : 6 + 2 * i], "little") for i in range(count))


@dataclass
class Enabled:
    level: int
    any_keyword: int
    all_keyword: int
    filters: list[Filter]


@dataclass
class SimSession:
    name: str
    handle: int
    log_file_mode: int
    enable_flags: int = 0
    guid: bytes = b""
    buffers: tuple[int, int, int, int] = (0, 0, 0, 0)  # BufferSize, Min, Max, FlushTimer
    providers: dict[str, Enabled] = field(default_factory=dict)
    rundowns: list[str] = field(default_factory=list)
    events_lost: int = 0
    realtime_buffers_lost: int = 0
    log_buffers_lost: int = 0
    buffers_written: int = 0
    lose_at_stop: int = 0  # EventsLost the last flush adds: visible only in STOP's counters
    pending: deque[LiveRecord] = field(default_factory=deque)
    in_flight: int = 0  # records taken from ``pending`` whose callback has not returned yet
    stopped: bool = False
    foreign: bool = False

    @property
    def system_logger(self) -> bool:
        return bool(self.log_file_mode & S.EVENT_TRACE_SYSTEM_LOGGER_MODE) or self.name in (
            "NT Kernel Logger",
            "Circular Kernel Context Logger",
        )


@dataclass
class Consumer:
    handle: int
    session: SimSession
    callback: Any
    processing: bool = False
    processed: bool = False
    closed: bool = False


class SimulatedAdvapi32:
    """The advapi32 functions of the lifecycle; inspect ``sessions``, ``calls`` and ``violations``."""

    def __init__(self, elevated: bool = True, version: tuple[int, int] = (10, 0)) -> None:
        self.elevated = elevated
        self.version = version
        self.sessions: dict[str, SimSession] = {}
        self.consumers: dict[int, Consumer] = {}
        self.calls: list[str] = []
        self.violations: list[str] = []
        self.started: list[SimSession] = []  # every session ever started, in order
        self.open_fails: deque[int] = deque()  # next OpenTraceW results to force (invalid handle forms)
        self.refuse_enable: Callable[[str, list[Filter]], int] = lambda guid, filters: S.ERROR_SUCCESS
        self.interrupt_after: dict[str, int] = {}  # call name → raise KeyboardInterrupt after that many calls
        self._last_error = 0
        self._ids = itertools.count(0x100)
        self._cond = threading.Condition()

    # --- the test's side ---------------------------------------------------------------------

    def add_foreign(self, name: str, system_logger: bool = False) -> SimSession:
        """A session some other program runs."""
        mode = S.EVENT_TRACE_REAL_TIME_MODE | (S.EVENT_TRACE_SYSTEM_LOGGER_MODE if system_logger else 0)
        s = SimSession(name, next(self._ids), mode, foreign=True)
        self.sessions[name] = s
        return s

    def stop_from_outside(self, name: str) -> None:
        """`logman stop <name> -ets`: the session ends; its consumers' ProcessTrace return."""
        with self._cond:
            s = self.sessions.pop(name)
            s.stopped = True
            self._cond.notify_all()

    def emit(self, name: str, record: LiveRecord) -> bool:
        """A record into a running session's real-time stream."""
        with self._cond:
            s = self.sessions.get(name)
            if s is None:
                return False
            s.pending.append(record)
            self._cond.notify_all()
        return True

    def wait_drained(self, name: str, timeout: float = 10.0) -> bool:
        with self._cond:
            s = self.sessions[name]
            return self._cond.wait_for(lambda: not s.pending and not s.in_flight, timeout)

    def consumers_of(self, name: str) -> list[Consumer]:
        return [c for c in self.consumers.values() if c.session.name == name]

    def _call(self, name: str) -> None:
        self.calls.append(name)

    def _after(self, name: str) -> None:
        left = self.interrupt_after.get(name)
        if left is None:
            return
        if left <= 1:
            del self.interrupt_after[name]
            raise KeyboardInterrupt  # Ctrl-C, seen by Python as the call returns
        self.interrupt_after[name] = left - 1

    # --- advapi32 ------------------------------------------------------------------------------

    def last_error(self) -> int:
        return self._last_error

    def StartTraceW(self, handle: Any, name: str, props: Any) -> int:
        self._call("StartTraceW")
        p = props.contents.Properties
        if p.Wnode.BufferSize < ctypes.sizeof(S.EVENT_TRACE_PROPERTIES) or not name:
            return S.ERROR_INVALID_PARAMETER
        if not self.elevated:
            return S.ERROR_ACCESS_DENIED
        with self._cond:
            if name in self.sessions:
                return S.ERROR_ALREADY_EXISTS
            system = bool(p.LogFileMode & S.EVENT_TRACE_SYSTEM_LOGGER_MODE)
            if system and sum(s.system_logger for s in self.sessions.values()) >= SYSTEM_LOGGER_SLOTS:
                return S.ERROR_NO_SYSTEM_RESOURCES
            if len(self.sessions) >= MAX_LOGGERS:
                return S.ERROR_NO_SYSTEM_RESOURCES
            s = SimSession(
                name,
                next(self._ids),
                p.LogFileMode,
                p.EnableFlags,
                bytes(p.Wnode.Guid),
                (p.BufferSize, p.MinimumBuffers, p.MaximumBuffers, p.FlushTimer),
            )
            self.sessions[name] = s
            self.started.append(s)
        handle.contents.value = s.handle
        self._after("StartTraceW")
        return S.ERROR_SUCCESS

    def _by_handle(self, handle: int) -> SimSession | None:
        return next((s for s in self.sessions.values() if s.handle == handle), None)

    def EnableTraceEx2(
        self,
        handle: int,
        guid: Any,
        code: int,
        level: int,
        any_kw: int,
        all_kw: int,
        timeout: int,
        params: Any,
    ) -> int:
        self._call("EnableTraceEx2")
        s = self._by_handle(handle)
        if s is None:
            return S.ERROR_INVALID_PARAMETER
        provider = S.guid_text(bytes(guid.contents))
        filters: list[Filter] = []
        if params:
            ep = params.contents
            array = (S.EVENT_FILTER_DESCRIPTOR * ep.FilterDescCount).from_address(ep.EnableFilterDesc)
            filters = [Filter(d.Type, ctypes.string_at(d.Ptr, d.Size)) for d in array]
        for f in filters:
            if f.type == EVENT_FILTER_TYPE_EVENT_ID and (
                self.version < (6, 3) or len(f.event_ids) > 64 or len(f.data) != 4 + 2 * len(f.event_ids)
            ):
                return S.ERROR_INVALID_PARAMETER
        if code == S.EVENT_CONTROL_CODE_ENABLE_PROVIDER:
            status = self.refuse_enable(provider, filters)
            if status != S.ERROR_SUCCESS:
                return status
            s.providers[provider] = Enabled(level, any_kw, all_kw, filters)
        elif code == S.EVENT_CONTROL_CODE_CAPTURE_STATE:
            s.rundowns.append(provider)
        elif code == S.EVENT_CONTROL_CODE_DISABLE_PROVIDER:
            s.providers.pop(provider, None)
        else:
            return S.ERROR_INVALID_PARAMETER
        self._after("EnableTraceEx2")
        return S.ERROR_SUCCESS

    def OpenTraceW(self, logfile: Any) -> int:
        self._call("OpenTraceW")
        lf = logfile.contents
        if self.open_fails:
            self._last_error = S.ERROR_INVALID_PARAMETER
            return self.open_fails.popleft()
        name = S.read_utf16z(lf.LoggerName) if lf.LoggerName else ""
        mode = S.PROCESS_TRACE_MODE_REAL_TIME | S.PROCESS_TRACE_MODE_EVENT_RECORD
        s = self.sessions.get(name)
        if s is None or lf.ProcessTraceMode & mode != mode or not lf.EventRecordCallback:
            self._last_error = S.ERROR_WMI_INSTANCE_NOT_FOUND if s is None else S.ERROR_INVALID_PARAMETER
            return S.INVALID_PROCESSTRACE_HANDLE
        c = Consumer(next(self._ids) + 0x10000, s, S.EVENT_RECORD_CALLBACK(lf.EventRecordCallback))
        self.consumers[c.handle] = c
        self._after("OpenTraceW")
        return c.handle

    def ProcessTrace(self, handles: Any, count: int, start: Any, end: Any) -> int:
        self._call("ProcessTrace")
        c = self.consumers.get(handles[0]) if count == 1 else None
        if c is None:
            return S.ERROR_INVALID_HANDLE
        if c.processed or c.processing:
            self.violations.append(f"ProcessTrace called again on handle {c.handle:#x}")
            return S.ERROR_INVALID_HANDLE
        c.processing = True
        try:
            while True:
                with self._cond:
                    self._cond.wait_for(lambda: c.session.pending or c.session.stopped or c.closed, 0.05)
                    if c.closed:
                        return S.ERROR_CANCELLED
                    record = c.session.pending.popleft() if c.session.pending else None
                    if record is None and c.session.stopped:
                        return S.ERROR_SUCCESS
                    if record is not None:
                        c.session.in_flight += 1
                if record is not None:
                    c.callback(ctypes.addressof(record.record))
                    with self._cond:
                        c.session.in_flight -= 1
                        self._cond.notify_all()
        finally:
            c.processing, c.processed = False, True

    def ControlTraceW(self, handle: int, name: str | None, props: Any, code: int) -> int:
        self._call(f"ControlTraceW:{code}")
        buf = props.contents
        if buf.Properties.Wnode.BufferSize < ctypes.sizeof(S.EVENT_TRACE_PROPERTIES):
            return S.ERROR_INVALID_PARAMETER
        with self._cond:
            s = self.sessions.get(name) if name else self._by_handle(handle)
            if s is None:
                return S.ERROR_WMI_INSTANCE_NOT_FOUND
            if code == S.EVENT_TRACE_CONTROL_STOP:
                s.events_lost += s.lose_at_stop  # the last flush's losses
                s.lose_at_stop = 0
            p = buf.Properties
            p.EventsLost, p.RealTimeBuffersLost = s.events_lost, s.realtime_buffers_lost
            p.LogBuffersLost, p.BuffersWritten = s.log_buffers_lost, s.buffers_written
            p.LogFileMode, p.EnableFlags = s.log_file_mode, s.enable_flags
            S.set_utf16(buf.LoggerName, s.name)
            if code == S.EVENT_TRACE_CONTROL_STOP:
                del self.sessions[s.name]
                s.stopped = True
                self._cond.notify_all()
            elif code != S.EVENT_TRACE_CONTROL_QUERY:
                return S.ERROR_INVALID_PARAMETER
        self._after(f"ControlTraceW:{code}")
        return S.ERROR_SUCCESS

    def CloseTrace(self, handle: int) -> int:
        self._call("CloseTrace")
        if any(s.handle == handle for s in self.started):
            self.violations.append(f"CloseTrace on the StartTraceW handle {handle:#x}")
            return S.ERROR_INVALID_HANDLE
        with self._cond:
            c = self.consumers.get(handle)
            if c is None or c.closed:
                return S.ERROR_INVALID_HANDLE
            c.closed = True
            self._cond.notify_all()
            if c.processing:
                return S.ERROR_CTX_CLOSE_PENDING
        return S.ERROR_SUCCESS

    def QueryAllTracesW(self, array: Any, count: int, logger_count: Any) -> int:
        self._call("QueryAllTracesW")
        if count == 0 or count > MAX_LOGGERS:
            return S.ERROR_INVALID_PARAMETER
        running = list(self.sessions.values())
        for i, s in enumerate(running[:count]):
            buf = array[i].contents
            S.set_utf16(buf.LoggerName, s.name)
            buf.Properties.LogFileMode = s.log_file_mode
        logger_count.contents.value = len(running)
        return S.ERROR_MORE_DATA if len(running) > count else S.ERROR_SUCCESS

    # --- what a test asserts -----------------------------------------------------------------

    def open_consumers(self) -> list[Consumer]:
        """Consumer handles never closed: each one a leak."""
        return [c for c in self.consumers.values() if not c.closed]

    def ours(self, prefix: str = "etwsensor") -> list[str]:
        """Running sessions named like ours (`logman query -ets | findstr etwsensor`)."""
        return [n for n in self.sessions if n.startswith(prefix)]
