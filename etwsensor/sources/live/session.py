"""The ETW sessions of a plan, through pywintrace (Windows only; ``import etw`` happens in ``EtwSessions``).

* system-logger session: a privately named session with EVENT_TRACE_SYSTEM_LOGGER_MODE and the plan's
  enable flags (Windows 8+); before Windows 8 the single "NT Kernel Logger", with a warning.
* manifest session: EnableTraceEx2 per provider with its keyword mask and filter descriptors
  (EVENT_FILTER_TYPE_EVENT_ID, Kernel-Registry's captured-data value), then
  EVENT_CONTROL_CODE_CAPTURE_STATE for rundown (pywintrace defines the code but never sends it).
* the callback gets raw EVENT_RECORD pointers (RETURN_RAW_UNFORMATTED_DATA) and only queues them.
* stale ``etwsensor-*-<pid>`` sessions of dead processes are stopped at start; running out of sessions
  (ERROR_NO_SYSTEM_RESOURCES, EtwMaxLoggers) and other start errors become one actionable message.

The decisions (names, stale detection, messages) are plain functions tested on Linux; the ctypes calls
below them run on the Windows runner (.github/workflows/windows.yml).
"""

from __future__ import annotations

import contextlib
import ctypes
import re
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

from etwsensor.logging import get_logger
from etwsensor.sources.live import structs as S
from etwsensor.sources.live.callback import RecordCallback
from etwsensor.sources.live.health import SessionStats
from etwsensor.sources.live.plan import (
    EVENT_FILTER_TYPE_EVENT_ID,
    KERNEL_LOGGER_NAME,
    SESSION_PREFIX,
    SYSTEM_TRACE_GUID,
    ProviderPlan,
    SessionPlan,
    TracePlan,
)

log = get_logger("etwsensor.live.session")

_OUR_SESSION = re.compile(re.escape(SESSION_PREFIX) + r"[a-z]+-(\d+)$")
MAX_LOGGERS_KEY = r"HKLM\SYSTEM\CurrentControlSet\Control\WMI\EtwMaxLoggers"


class LiveError(RuntimeError):
    """A session could not start: the message says what to do."""


def stale_sessions(running: Iterable[str], alive: Callable[[int], bool], own_pid: int) -> list[str]:
    """Our sessions (``etwsensor-<kind>-<pid>``) whose process is gone: left by a crashed run."""
    out = []
    for name in running:
        m = _OUR_SESSION.match(name)
        if m is None:
            continue
        pid = int(m.group(1))
        if pid != own_pid and not alive(pid):
            out.append(name)
    return out


def start_error(code: int, session: str) -> str:
    """The one-line message for a StartTrace/EnableTraceEx2 failure."""
    if code == S.ERROR_NO_SYSTEM_RESOURCES:
        return (f"cannot start ETW session {session}: Windows has no free trace session (EtwMaxLoggers). "
                "List sessions with `logman query -ets` and stop unused ones with `logman stop <name> -ets`, "
                f"or raise {MAX_LOGGERS_KEY} (32-256) and reboot")  # fmt: skip
    if code == S.ERROR_ACCESS_DENIED:
        return f"cannot start ETW session {session}: access denied (run from an elevated prompt)"
    if code == S.ERROR_ALREADY_EXISTS:
        return f"cannot start ETW session {session}: a session of that name is already running"
    return f"cannot start ETW session {session}: Windows error {code} ({ctypes_error_text(code)})"


def ctypes_error_text(code: int) -> str:
    formatter: Any = getattr(ctypes, "FormatError", None)
    return str(formatter(code)).strip() if formatter is not None else "see `net helpmsg`"


def supports_private_system_logger() -> bool:
    """Windows 8 (6.2) and later run several SystemTraceProvider sessions with private names."""
    version: Any = getattr(sys, "getwindowsversion", None)
    return version is not None and tuple(version()[:2]) >= (6, 2)


class EtwSessions:
    """Starts, queries, restarts and stops the plan's sessions. Implements health.SessionController."""

    def __init__(self, plan: TracePlan, callback: RecordCallback,
                 on_consumer_end: Callable[[str], None] | None = None) -> None:  # fmt: skip
        # pywintrace 0.2.0, Windows only. ETW, ProviderInfo, TraceProperties and ProviderParameters live
        # in etw.etw (the package exports only the first two).
        import etw.common
        import etw.etw
        import etw.evntprov
        import etw.evntrace
        from etw.GUID import GUID

        self._etw: Any = etw.etw
        self._GUID: Any = GUID
        self._et: Any = etw.evntrace
        self._ep: Any = etw.evntprov
        self._raw_flag: int = etw.common.RETURN_RAW_UNFORMATTED_DATA
        self._advapi: Any = getattr(ctypes, "WinDLL")("advapi32")  # noqa: B009
        self.plan = plan
        self.callback = callback
        self.on_consumer_end = on_consumer_end
        self.sessions: dict[str, SessionPlan] = {s.name: s for s in plan.sessions}
        self._running: dict[str, Any] = {}  # name → etw.ETW
        self._keep: dict[str, list[Any]] = {}  # buffers the filter descriptors point at
        self._stopping = False
        self.fallback_kernel_logger = False

    # --- start/stop --------------------------------------------------------------------------------

    def start(self) -> None:
        self.cleanup_stale()
        for name in list(self.sessions):
            self._start(name)

    def _start(self, name: str) -> None:
        plan = self.sessions[name]
        keep: list[Any] = []
        if plan.kind == "system-logger":
            session = self._system_logger(plan)
        else:
            providers = [self._provider_info(p, keep) for p in plan.providers]
            session = self._etw.ETW(session_name=name, providers=providers, event_callback=self.callback,
                                    callback_data_flag=self._raw_flag, ignore_exists_error=False)  # fmt: skip
        try:
            session.start()
        except OSError as exc:
            code = getattr(exc, "winerror", None) or 0
            if (
                code != S.ERROR_ALREADY_EXISTS
            ):  # StartTrace may have worked and EnableTraceEx2 failed: no leak
                self.stop_by_name(session.session_name)
            raise LiveError(start_error(code, name)) from exc
        self._running[name] = session
        self._keep[name] = keep
        if plan.kind == "manifest":
            for p in plan.providers:
                if p.capture_state:
                    self._capture_state(session, p)
        self._watch_consumer(name, session)
        log.info("ETW session started", session=name, kind=plan.kind,
                 providers=[p.name for p in plan.providers])  # fmt: skip

    def _system_logger(self, plan: SessionPlan) -> Any:
        props = self._etw.TraceProperties()
        p = props.get().contents
        p.EnableFlags = plan.flags_mask
        if supports_private_system_logger():
            p.LogFileMode |= S.EVENT_TRACE_SYSTEM_LOGGER_MODE
            return self._etw.ETW(session_name=plan.name, properties=props, providers=[],
                                 event_callback=self.callback, callback_data_flag=self._raw_flag,
                                 ignore_exists_error=False)  # fmt: skip
        log.warning("Windows 7: private system-logger sessions need Windows 8; using the NT Kernel Logger, "
                    "which other tools may also claim", session=KERNEL_LOGGER_NAME)  # fmt: skip
        self.fallback_kernel_logger = True
        kernel = self._etw.ProviderInfo("Windows Kernel Trace", self._GUID("{" + SYSTEM_TRACE_GUID + "}"),
                                        any_keywords=plan.flags_mask)  # fmt: skip
        return self._etw.ETW(session_name=KERNEL_LOGGER_NAME, providers=[kernel],
                             event_callback=self.callback, callback_data_flag=self._raw_flag,
                             ignore_exists_error=False)  # fmt: skip

    def _provider_info(self, p: ProviderPlan, keep: list[Any]) -> Any:
        descriptors = []
        for f in p.filters:
            data: Any
            if f.type == EVENT_FILTER_TYPE_EVENT_ID:
                data = S.event_id_filter(f.event_ids)
            else:  # captured-data descriptor: Type 0, a 4-byte value (CORRECTIONS §7)
                data = ctypes.c_uint32(f.value or 0)
            keep.append(data)
            d = self._ep.EVENT_FILTER_DESCRIPTOR()
            d.Ptr, d.Size, d.Type = ctypes.addressof(data), ctypes.sizeof(data), f.type
            descriptors.append(d)
        params = self._etw.ProviderParameters(0, descriptors).get() if descriptors else None
        keep.append(params)
        return self._etw.ProviderInfo(p.name, self._GUID("{" + p.guid + "}"), level=p.level,
                                      any_keywords=p.keywords, all_keywords=0, params=params)  # fmt: skip

    def _capture_state(self, session: Any, p: ProviderPlan) -> None:
        guid = self._GUID("{" + p.guid + "}")
        status = self._et.EnableTraceEx2(
            session.provider.session_handle,
            ctypes.byref(guid),
            S.EVENT_CONTROL_CODE_CAPTURE_STATE,
            p.level,
            p.keywords,
            0,
            0,
            None,
        )
        if status != S.ERROR_SUCCESS:
            log.warning("rundown request failed: processes already running stay unknown until they act",
                        provider=p.name, error=status)  # fmt: skip

    def _watch_consumer(self, name: str, session: Any) -> None:
        """ProcessTrace returning while we run means the session was stopped under us (CORRECTIONS §6)."""
        thread = getattr(session.consumer, "process_thread", None)
        if thread is None or self.on_consumer_end is None:
            return
        notify = self.on_consumer_end

        def wait() -> None:
            thread.join()
            if not self._stopping and self._running.get(name) is session:
                notify(name)

        threading.Thread(target=wait, name=f"watch-{name}", daemon=True).start()

    def stop(self) -> None:
        self._stopping = True
        for name, session in list(self._running.items()):
            try:
                session.stop()
            except OSError as exc:
                log.warning("ETW session stop failed", session=name, error=str(exc))
        self._running.clear()
        self._keep.clear()

    # --- health.SessionController ------------------------------------------------------------------

    def query(self, name: str) -> SessionStats | None:
        if self.fallback_kernel_logger and self.sessions[name].kind == "system-logger":
            name = KERNEL_LOGGER_NAME
        buf = S.trace_properties_buffer()
        query = S.EVENT_TRACE_CONTROL_QUERY
        status = self._advapi.ControlTraceW(ctypes.c_uint64(0), name, ctypes.byref(buf), query)
        if status != S.ERROR_SUCCESS:
            return None
        p = buf.Properties
        return SessionStats(p.EventsLost, p.RealTimeBuffersLost, p.LogBuffersLost, p.BuffersWritten)

    def restart(self, name: str) -> bool:
        old = self._running.pop(name, None)
        if old is not None:
            with contextlib.suppress(OSError):  # already gone: that is why we restart
                old.stop()
        self.stop_by_name(name)
        try:
            self._start(name)
        except LiveError as exc:
            log.error("ETW session restart failed", session=name, error=str(exc))
            return False
        return True

    # --- stale sessions ----------------------------------------------------------------------------

    def running_session_names(self, capacity: int = 256) -> list[str]:
        buffers = [S.trace_properties_buffer() for _ in range(capacity)]
        pointers = (ctypes.c_void_p * capacity)(*(ctypes.addressof(b) for b in buffers))
        count = ctypes.c_uint32(0)
        status = self._advapi.QueryAllTracesW(pointers, capacity, ctypes.byref(count))
        if status != S.ERROR_SUCCESS:
            log.warning("cannot list ETW sessions: stale sessions are not cleaned up", error=status)
            return []
        return [S.get_utf16(b.LoggerName) for b in buffers[: count.value]]

    def stop_by_name(self, name: str) -> bool:
        buf = S.trace_properties_buffer()
        stop = S.EVENT_TRACE_CONTROL_STOP
        status = self._advapi.ControlTraceW(ctypes.c_uint64(0), name, ctypes.byref(buf), stop)
        return bool(status == S.ERROR_SUCCESS)

    def cleanup_stale(self) -> None:
        import os

        for name in stale_sessions(self.running_session_names(), _process_alive, os.getpid()):
            stopped = self.stop_by_name(name)
            log.warning("stale etwsensor session from a crashed run", session=name, stopped=stopped)


def _process_alive(pid: int) -> bool:
    k32: Any = getattr(ctypes, "WinDLL")("kernel32")  # noqa: B009
    process_query_limited_information = 0x1000
    handle = k32.OpenProcess(process_query_limited_information, False, pid)
    if not handle:
        return False
    k32.CloseHandle(handle)
    return True


def is_elevated() -> bool:
    """True in an elevated (administrator) process on Windows; False elsewhere."""
    if sys.platform != "win32":
        return False
    shell32: Any = getattr(ctypes, "WinDLL")("shell32")  # noqa: B009
    return bool(shell32.IsUserAnAdmin())
