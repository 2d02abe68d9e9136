"""Start-up probe: do Microsoft-Windows-Win32k's API audit events reach this consumer?

Microsoft does not document whether a non-protected administrator process may consume the Win32k
AuditApiCalls events (DeviceEvents' source). When the plan enables Win32k, the probe sets and removes a
low-level keyboard hook in etwsensor's own process (which Win32k reports as event 1002) and waits
``grace`` seconds for any Win32k event. If the hook cannot be set, or nothing arrives, it says so once:
a log line, one health alert (table ``SensorHealth``) and the ``win32k`` entry of the summary. The other
tables keep working. The probe's own hook event is dropped before the normalizer: it is not host activity.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

from etwsensor.alerts.model import build_alert
from etwsensor.events import RawEvent
from etwsensor.logging import get_logger
from etwsensor.rules import Rule
from etwsensor.sources.live.health import HEALTH_TABLE
from etwsensor.sources.live.plan import TracePlan

log = get_logger("etwsensor.live.probe")

WIN32K = "Microsoft-Windows-Win32k"
Status = Literal["not planned", "probing", "receiving", "unavailable"]
# Sets and removes a hook in our own process; returns None, or why it could not.
Trigger = Callable[[], str | None]

UNAVAILABLE_RULE = Rule(
    id="etwsensor-win32k-audit-unavailable",
    name="etwsensor: Win32k API audit events unavailable (DeviceEvents rules are blind)",
    query="",
    source="builtin:health",
    description="The loaded rules read DeviceEvents, but the Microsoft-Windows-Win32k AuditApiCalls events "
    "(GetAsyncKeyState, SetWindowsHookEx, RegisterRawInputDevices) could not be enabled or did not arrive "
    "after a test hook: this Windows build may reserve them for protected consumers. The other tables are "
    "traced as usual.",
    severity="medium",
    confidence="high",
)


class Win32kProbe:
    def __init__(
        self,
        plan: TracePlan,
        emit: Callable[[dict[str, Any]], None],
        host: tuple[str, str] = ("", ""),
        trigger: Trigger | None = None,
        grace: float = 30.0,
        own_pid: int | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.planned = plan.provider(WIN32K) is not None
        self.status: Status = "probing" if self.planned else "not planned"
        self.emit = emit
        self.host = host
        self.trigger = trigger
        self.grace = grace
        self.own_pid = os.getpid() if own_pid is None else own_pid
        self.clock = clock
        self.monotonic = monotonic
        self.events = 0
        self.reason = ""
        self._started = 0.0
        self._probe_dropped = False

    def start(self) -> None:
        """After the sessions are up: set the test hook (when a trigger is given) and start waiting."""
        if not self.planned:
            return
        self._started = self.monotonic()
        failed = self.trigger() if self.trigger is not None else None
        if failed:
            self._unavailable(f"the test hook could not be set: {failed}")

    def enable_failed(self, reason: str) -> None:
        """The session could not enable the provider (EnableTraceEx2 refused)."""
        if self.planned:
            self._unavailable(f"the provider could not be enabled: {reason}")

    def observe(self, ev: RawEvent) -> bool:
        """A Win32k event arrived; True when it is the probe's own hook, to be dropped."""
        self.events += 1
        if self.status != "receiving":
            if self.status == "unavailable":
                log.warning("Win32k API audit events arrive after all", events=self.events)
            self.status = "receiving"
        if not self._probe_dropped and ev.pid == self.own_pid and ev.name == "SetWindowsHookEx":
            self._probe_dropped = True
            return True
        return False

    def poll(self) -> None:
        if self.status == "probing" and self.monotonic() - self._started >= self.grace:
            self._unavailable(f"no Win32k API audit event arrived within {self.grace:g} s of a test hook")

    def _unavailable(self, reason: str) -> None:
        if self.status == "unavailable":
            return  # said once
        self.status = "unavailable"
        self.reason = reason
        log.error("Win32k API audit events unavailable: DeviceEvents rules see nothing", reason=reason)
        ts = self.clock()
        name, device_id = self.host
        source_row = {"Timestamp": ts, "DeviceName": name, "DeviceId": device_id, "ReportId": 0}
        projected = {"Timestamp": ts, "DeviceName": name, "Provider": WIN32K, "Reason": reason}
        self.emit(build_alert(UNAVAILABLE_RULE, HEALTH_TABLE, source_row, projected, "live:probe"))

    def state(self) -> dict[str, Any]:
        return {"provider": WIN32K, "status": self.status, "events": self.events, "reason": self.reason}


def windows_hook_trigger() -> str | None:
    """Set and remove a WH_KEYBOARD_LL hook in this process (Windows only): Win32k logs event 1002."""
    if sys.platform != "win32":
        return "not on Windows"
    import ctypes
    from ctypes import wintypes

    user32 = ctypes.WinDLL("user32", use_last_error=True)
    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    hook_proc = ctypes.WINFUNCTYPE(ctypes.c_ssize_t, ctypes.c_int, wintypes.WPARAM, wintypes.LPARAM)
    user32.SetWindowsHookExW.restype = ctypes.c_void_p
    user32.SetWindowsHookExW.argtypes = (ctypes.c_int, hook_proc, ctypes.c_void_p, wintypes.DWORD)
    user32.CallNextHookEx.restype = ctypes.c_ssize_t
    user32.CallNextHookEx.argtypes = (ctypes.c_void_p, ctypes.c_int, wintypes.WPARAM, wintypes.LPARAM)
    user32.UnhookWindowsHookEx.argtypes = (ctypes.c_void_p,)
    kernel32.GetModuleHandleW.restype = ctypes.c_void_p

    @hook_proc
    def passthrough(code: int, wparam: int, lparam: int) -> int:
        return int(user32.CallNextHookEx(None, code, wparam, lparam))

    handle = user32.SetWindowsHookExW(13, passthrough, kernel32.GetModuleHandleW(None), 0)
    if not handle:
        return f"SetWindowsHookExW failed, error {ctypes.get_last_error()}"
    user32.UnhookWindowsHookEx(handle)
    return None
