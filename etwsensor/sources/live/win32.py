"""The Win32 functions the live layer calls, each with its argtypes and restype, loaded on Windows only.

Without ``argtypes`` ctypes passes Python ints as C ``int`` (a 64-bit TRACEHANDLE would be cut to 32 bits)
and without ``restype`` it reads every result as ``int``: so every function here is declared, and
``load`` refuses a name that is not. The structures are the fixed-width ones of ``structs``, identical
to pywintrace's ``etw.evntrace``/``etw.evntcons`` on Windows (``tests/live/test_structs.py`` checks that
there) but importable on Linux, where pywintrace's modules are not (they touch ``ctypes.windll`` at import).
"""

from __future__ import annotations

import ctypes
import sys
from ctypes import POINTER, c_int32, c_uint8, c_uint32, c_uint64, c_void_p, c_wchar_p
from typing import Any

from etwsensor.sources.live import structs as S

Signature = tuple[tuple[Any, ...], Any]

TRACEHANDLE = c_uint64

ADVAPI32: dict[str, Signature] = {
    "StartTraceW": ((POINTER(TRACEHANDLE), c_wchar_p, POINTER(S.TRACE_PROPERTIES_BUFFER)), c_uint32),
    "ControlTraceW": ((TRACEHANDLE, c_wchar_p, POINTER(S.TRACE_PROPERTIES_BUFFER), c_uint32), c_uint32),
    "EnableTraceEx2": (
        (
            TRACEHANDLE,
            POINTER(S.GUID),
            c_uint32,
            c_uint8,
            c_uint64,
            c_uint64,
            c_uint32,
            POINTER(S.ENABLE_TRACE_PARAMETERS),
        ),
        c_uint32,
    ),
    "OpenTraceW": ((POINTER(S.EVENT_TRACE_LOGFILEW),), TRACEHANDLE),
    "ProcessTrace": ((POINTER(TRACEHANDLE), c_uint32, c_void_p, c_void_p), c_uint32),
    "CloseTrace": ((TRACEHANDLE,), c_uint32),
    "QueryAllTracesW": ((POINTER(POINTER(S.TRACE_PROPERTIES_BUFFER)), c_uint32, POINTER(c_uint32)), c_uint32),
    # enrich.WindowsHostApi
    "ConvertStringSidToSidW": ((c_wchar_p, POINTER(c_void_p)), c_int32),
    "LookupAccountSidW": (
        (c_wchar_p, c_void_p, c_wchar_p, POINTER(c_uint32), c_wchar_p, POINTER(c_uint32), POINTER(c_uint32)),
        c_int32,
    ),
    "OpenProcessToken": ((c_void_p, c_uint32, POINTER(c_void_p)), c_int32),
    "GetTokenInformation": ((c_void_p, c_uint32, c_void_p, c_uint32, POINTER(c_uint32)), c_int32),
    "GetSidSubAuthorityCount": ((c_void_p,), POINTER(c_uint8)),
    "GetSidSubAuthority": ((c_void_p, c_uint32), POINTER(c_uint32)),
}

KERNEL32: dict[str, Signature] = {
    "GetLogicalDrives": ((), c_uint32),
    "QueryDosDeviceW": ((c_wchar_p, c_wchar_p, c_uint32), c_uint32),
    "LocalFree": ((c_void_p,), c_void_p),
    "GetCurrentProcess": ((), c_void_p),
    "IsWow64Process": ((c_void_p, POINTER(c_int32)), c_int32),
    "OpenProcess": ((c_uint32, c_int32, c_uint32), c_void_p),
    "CloseHandle": ((c_void_p,), c_int32),
    "GetProcessTimes": ((c_void_p, *(POINTER(c_uint64),) * 4), c_int32),  # FILETIME: two DWORDs
}

SHELL32: dict[str, Signature] = {"IsUserAnAdmin": ((), c_int32)}

TABLES = {"advapi32": ADVAPI32, "kernel32": KERNEL32, "shell32": SHELL32}


class Library:
    """A DLL whose declared functions are attributes; ``last_error`` is GetLastError after the last call."""

    def __init__(self, dll: Any, table: dict[str, Signature]) -> None:
        for name, (args, res) in table.items():
            fn = getattr(dll, name)
            fn.argtypes = list(args)
            fn.restype = res
            setattr(self, name, fn)

    def last_error(self) -> int:
        getter: Any = getattr(ctypes, "get_last_error", None)
        return int(getter()) if getter is not None else 0


def load(name: str) -> Any:
    """``advapi32``, ``kernel32`` or ``shell32`` with every declared signature set (Windows only)."""
    if sys.platform != "win32":
        raise OSError(f"{name} needs Windows")
    loader: Any = getattr(ctypes, "WinDLL")  # noqa: B009 - absent from ctypes off Windows
    return Library(loader(name, use_last_error=True), TABLES[name])


def error_text(code: int) -> str:
    """Windows' message for an error code (``FormatMessage``), or the number off Windows."""
    formatter: Any = getattr(ctypes, "FormatError", None)
    if formatter is not None:
        return str(formatter(code)).strip()
    return KNOWN_ERRORS.get(code, f"Windows error {code}")


KNOWN_ERRORS = {
    S.ERROR_ACCESS_DENIED: "Access is denied.",
    S.ERROR_INVALID_HANDLE: "The handle is invalid.",
    S.ERROR_INVALID_PARAMETER: "The parameter is incorrect.",
    S.ERROR_ALREADY_EXISTS: "Cannot create a file when that file already exists.",
    S.ERROR_MORE_DATA: "More data is available.",
    S.ERROR_NO_SYSTEM_RESOURCES: "Insufficient system resources exist to complete the requested service.",
    S.ERROR_WMI_INSTANCE_NOT_FOUND: (
        "The instance name passed was not recognized as valid by a WMI data provider."
    ),
}


def is_elevated() -> bool:
    """True in an elevated (administrator) process on Windows; False elsewhere."""
    if sys.platform != "win32":
        return False
    return bool(load("shell32").IsUserAnAdmin())
