"""Win32k API audit events → DeviceEvents (keylogging seen where it happens).

Microsoft-Windows-Win32k, keyword AuditApiCalls (0x400), logs three input-capture APIs:

* 1002 SetWindowsHookEx → one ``SetWindowsHookExApiCall`` row per call;
* 1001 RegisterRawInputDevices → one ``RegisterRawInputDevicesApiCall`` row per call (etwsensor's
  name: Defender documents no ActionType for raw-input registration);
* 1003 GetAsyncKeyState → ``GetAsyncKeyStateApiCall`` rows, **aggregated**: a polling loop produces
  an event per key event while it runs, so the events of one process are summed over a window
  (``window``, 60 s from its first event) into one row. A window closes when an event of the stream
  is past its end, at ``flush()``, or early when more than ``max_open`` processes poll at once (the
  oldest window is emitted then: memory stays bounded, no count is lost, a window is only split).

The Win32k fields go into ``AdditionalFields`` (a dynamic column) under their manifest names, with
decoded forms beside them: ``HookType`` (WH_* name of FilterType), ``FlagNames`` (RIDEV_* names),
``DeviceType`` (HID usage page 1: Keyboard is usage 6). Initiating* columns come from the process table.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from etwsensor.events import RawEvent
from etwsensor.normalize.processes import ProcessTracker
from etwsensor.normalize.rows import Handlers, Row, RowSink, path_unresolved

DEVICE_EVENTS = "DeviceEvents"
WIN32K = "Microsoft-Windows-Win32k"
GET_ASYNC_KEY_STATE = "GetAsyncKeyStateApiCall"
SET_WINDOWS_HOOK = "SetWindowsHookExApiCall"
RAW_INPUT = "RegisterRawInputDevicesApiCall"
ACTION_TYPES = (GET_ASYNC_KEY_STATE, SET_WINDOWS_HOOK, RAW_INPUT)

DEFAULT_WINDOW = timedelta(seconds=60)
DEFAULT_MAX_OPEN = 1024

# winuser.h idHook values (FilterType is logged as UInt32: WH_MSGFILTER -1 arrives as 0xFFFFFFFF).
HOOK_TYPES: dict[int, str] = {
    0xFFFFFFFF: "WH_MSGFILTER",
    0: "WH_JOURNALRECORD",
    1: "WH_JOURNALPLAYBACK",
    2: "WH_KEYBOARD",
    3: "WH_GETMESSAGE",
    4: "WH_CALLWNDPROC",
    5: "WH_CBT",
    6: "WH_SYSMSGFILTER",
    7: "WH_MOUSE",
    8: "WH_HARDWARE",
    9: "WH_DEBUG",
    10: "WH_SHELL",
    11: "WH_FOREGROUNDIDLE",
    12: "WH_CALLWNDPROCRET",
    13: "WH_KEYBOARD_LL",
    14: "WH_MOUSE_LL",
}

# winuser.h RAWINPUTDEVICE.dwFlags. NOLEGACY (0x30) contains EXCLUDE and PAGEONLY's bits; 0x200 is
# CAPTUREMOUSE for a mouse and NOHOTKEYS for a keyboard.
RIDEV_REMOVE = 0x1
RIDEV_EXCLUDE = 0x10
RIDEV_PAGEONLY = 0x20
RIDEV_NOLEGACY = 0x30
RIDEV_INPUTSINK = 0x100
RIDEV_CAPTUREMOUSE_OR_NOHOTKEYS = 0x200
RIDEV_APPKEYS = 0x400
RIDEV_EXINPUTSINK = 0x1000
RIDEV_DEVNOTIFY = 0x2000
_SIMPLE_FLAGS = (
    (RIDEV_REMOVE, "RIDEV_REMOVE"),
    (RIDEV_INPUTSINK, "RIDEV_INPUTSINK"),
    (RIDEV_APPKEYS, "RIDEV_APPKEYS"),
    (RIDEV_EXINPUTSINK, "RIDEV_EXINPUTSINK"),
    (RIDEV_DEVNOTIFY, "RIDEV_DEVNOTIFY"),
)

# HID usages of the Generic Desktop page (usage page 1).
GENERIC_DESKTOP = 1
HID_GENERIC_DESKTOP: dict[int, str] = {
    1: "Pointer",
    2: "Mouse",
    4: "Joystick",
    5: "GamePad",
    6: "Keyboard",
    7: "Keypad",
    8: "MultiAxisController",
}


def hook_type_name(filter_type: int) -> str:
    return HOOK_TYPES.get(filter_type & 0xFFFFFFFF, f"WH_{filter_type}")


def device_type(usage_page: int, usage: int) -> str:
    """Keyboard, Mouse… for the Generic Desktop page; otherwise ``UsagePage:Usage`` in hex."""
    if usage_page == GENERIC_DESKTOP and usage in HID_GENERIC_DESKTOP:
        return HID_GENERIC_DESKTOP[usage]
    return f"0x{usage_page:x}:0x{usage:x}"


def ridev_flag_names(flags: int, usage_page: int = GENERIC_DESKTOP, usage: int = 6) -> list[str]:
    """RIDEV_* names of a RAWINPUTDEVICE.dwFlags value, unknown bits as one hex entry."""
    names = [name for bit, name in _SIMPLE_FLAGS if flags & bit]
    known = RIDEV_REMOVE | RIDEV_INPUTSINK | RIDEV_APPKEYS | RIDEV_EXINPUTSINK | RIDEV_DEVNOTIFY
    legacy = flags & RIDEV_NOLEGACY
    if legacy == RIDEV_NOLEGACY:
        names.append("RIDEV_NOLEGACY")
    elif legacy == RIDEV_EXCLUDE:
        names.append("RIDEV_EXCLUDE")
    elif legacy == RIDEV_PAGEONLY:
        names.append("RIDEV_PAGEONLY")
    if flags & RIDEV_CAPTUREMOUSE_OR_NOHOTKEYS:
        mouse = (usage_page, usage) == (GENERIC_DESKTOP, 2)
        names.append("RIDEV_CAPTUREMOUSE" if mouse else "RIDEV_NOHOTKEYS")
    rest = flags & ~(known | RIDEV_NOLEGACY | RIDEV_CAPTUREMOUSE_OR_NOHOTKEYS)
    if rest:
        names.append(f"0x{rest:x}")
    return names


@dataclass(slots=True)
class _Polling:
    """One process's GetAsyncKeyState events inside one window."""

    pid: int
    start: datetime
    end: datetime
    last: datetime
    events: int = 0
    calls: int = 0
    min_ms: int = 0
    max_ms: int = 0


class Win32kTracker:
    def __init__(
        self,
        sink: RowSink,
        processes: ProcessTracker,
        window: timedelta = DEFAULT_WINDOW,
        max_open: int = DEFAULT_MAX_OPEN,
    ) -> None:
        if window <= timedelta(0) or max_open < 1:
            raise ValueError("the GetAsyncKeyState window and max_open must be positive")
        self._sink = sink
        self._processes = processes
        self.window = window
        self.max_open = max_open
        # pid → its open window; insertion order is start order, so the first entry ends first.
        self.open: dict[int, _Polling] = {}
        # The end of the first open window (None when none): the normalizer compares each event's
        # time with it, and calls ``advance`` only when a window is due.
        self.first_end: datetime | None = None
        self.aggregated = 0  # GetAsyncKeyState events folded into rows
        self.early_closes = 0  # windows emitted before their end because max_open was reached

    def handlers(self) -> Handlers:
        return {
            (WIN32K, "GetAsyncKeyState"): self._get_async_key_state,
            (WIN32K, "SetWindowsHookEx"): self._set_windows_hook,
            (WIN32K, "RegisterRawInputDevices"): self._register_raw_input,
        }

    def stats(self) -> dict[str, int]:
        return {
            "open_windows": len(self.open),
            "max_open": self.max_open,
            "aggregated_events": self.aggregated,
            "early_closes": self.early_closes,
        }

    # --- rows ----------------------------------------------------------------------------------

    def _emit(self, action: str, pid: int, ts: datetime, extra: dict[str, Any]) -> None:
        proc = self._processes.get(pid)
        row: Row = dict(proc.initiating()) if proc is not None else {"InitiatingProcessId": pid}
        row["AdditionalFields"] = extra
        unresolved = proc is None or path_unresolved(proc.folder_path)
        self._sink.emit(DEVICE_EVENTS, action, ts, row, unresolved)

    def _set_windows_hook(self, ev: RawEvent) -> None:
        f = ev.fields
        filter_type = int(f["FilterType"])
        extra = {
            "FilterType": filter_type,
            "HookType": hook_type_name(filter_type),
            "pstrLib": f.get("pstrLib") or "",
            "hmod": f.get("hmod"),
            "pfnFilterProc": f.get("pfnFilterProc"),
            "ReturnValue": f.get("ReturnValue"),
        }
        self._emit(SET_WINDOWS_HOOK, ev.pid, ev.ts, extra)

    def _register_raw_input(self, ev: RawEvent) -> None:
        f = ev.fields
        page, usage, flags = int(f["UsagePage"]), int(f["Usage"]), int(f["Flags"])
        extra: dict[str, Any] = {k: _json_safe(v) for k, v in f.items()}
        extra["DeviceType"] = device_type(page, usage)
        extra["FlagNames"] = ridev_flag_names(flags, page, usage)
        self._emit(RAW_INPUT, int(f.get("ProcessId") or ev.pid), ev.ts, extra)

    # --- GetAsyncKeyState aggregation ----------------------------------------------------------

    def _get_async_key_state(self, ev: RawEvent) -> None:
        f = ev.fields
        pid = int(f.get("PID") or ev.pid)
        calls, ms = int(f["BackgroundCallCount"]), int(f["MsSinceLastKeyEvent"])
        ts = ev.ts
        if self.first_end is not None and ts >= self.first_end:
            self.advance(ts)
        poll = self.open.get(pid)
        if poll is None:
            if len(self.open) >= self.max_open:
                self.early_closes += 1
                self._close(next(iter(self.open.values())))
            poll = self.open[pid] = _Polling(pid, ts, ts + self.window, ts, min_ms=ms, max_ms=ms)
            if len(self.open) == 1:
                self.first_end = poll.end
        poll.events += 1
        poll.calls += calls
        poll.last = ts
        if ms < poll.min_ms:
            poll.min_ms = ms
        if ms > poll.max_ms:
            poll.max_ms = ms
        self.aggregated += 1

    def advance(self, now: datetime) -> None:
        """Emit the windows that end at or before ``now`` (the stream's time)."""
        open_ = self.open
        while open_:
            first = next(iter(open_.values()))
            if first.end > now:
                return
            self._close(first)

    def flush(self) -> None:
        for poll in list(self.open.values()):
            self._close(poll)

    def _close(self, poll: _Polling) -> None:
        open_ = self.open
        del open_[poll.pid]
        self.first_end = next(iter(open_.values())).end if open_ else None
        extra = {
            "PID": poll.pid,
            "BackgroundCallCount": poll.calls,
            "MsSinceLastKeyEvent": poll.min_ms,
            "MaxMsSinceLastKeyEvent": poll.max_ms,
            "EventCount": poll.events,
            "WindowSeconds": int(self.window.total_seconds()),
            "FirstEventTime": _json_safe(poll.start),
        }
        # Stamped with the window's last event: rows stay in stream order, the start is in FirstEventTime.
        self._emit(GET_ASYNC_KEY_STATE, poll.pid, poll.last, extra)


def _json_safe(value: Any) -> Any:
    """AdditionalFields is JSON: datetimes as ISO-8601 UTC text."""
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    return value
