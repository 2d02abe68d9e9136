"""The ETW structures the live path reads and writes, with fixed-width ctypes (evntcons.h, evntrace.h,
evntprov.h).

Never ``ctypes.wintypes``: its DWORD/ULONG are 8 bytes on Linux, so the layouts would differ from
Windows and could not be tested here. Pointers are ``c_void_p`` (the host's pointer size, as on the
Windows process that reads them).
"""

from __future__ import annotations

import ctypes
import struct
from ctypes import c_int64, c_uint8, c_uint16, c_uint32, c_uint64, c_void_p
from typing import Any


class GUID(ctypes.Structure):
    _fields_ = (("Data1", c_uint32), ("Data2", c_uint16), ("Data3", c_uint16), ("Data4", c_uint8 * 8))

    @classmethod
    def from_text(cls, text: str) -> GUID:
        raw = bytes.fromhex(text.strip("{}").replace("-", ""))
        return cls(int.from_bytes(raw[0:4], "big"), int.from_bytes(raw[4:6], "big"),
                   int.from_bytes(raw[6:8], "big"), (c_uint8 * 8)(*raw[8:16]))  # fmt: skip


def guid_text(raw: bytes) -> str:
    """A GUID as it lies in memory (fields 1-3 little-endian) → lower-case text without braces."""
    h = raw.hex()
    return f"{raw[3::-1].hex()}-{raw[5:3:-1].hex()}-{raw[7:5:-1].hex()}-{h[16:20]}-{h[20:32]}"


class EVENT_DESCRIPTOR(ctypes.Structure):
    _fields_ = (
        ("Id", c_uint16),
        ("Version", c_uint8),
        ("Channel", c_uint8),
        ("Level", c_uint8),
        ("Opcode", c_uint8),
        ("Task", c_uint16),
        ("Keyword", c_uint64),
    )


class EVENT_HEADER(ctypes.Structure):
    _fields_ = (
        ("Size", c_uint16),
        ("HeaderType", c_uint16),
        ("Flags", c_uint16),
        ("EventProperty", c_uint16),
        ("ThreadId", c_uint32),
        ("ProcessId", c_uint32),
        ("TimeStamp", c_int64),  # FILETIME (UTC) for real-time consumers without RAW_TIMESTAMP
        ("ProviderId", GUID),  # classic kernel events: the class GUID
        ("EventDescriptor", EVENT_DESCRIPTOR),
        ("ProcessorTime", c_uint64),  # union {KernelTime, UserTime; ProcessorTime}
        ("ActivityId", GUID),
    )


class ETW_BUFFER_CONTEXT(ctypes.Structure):
    _fields_ = (("ProcessorIndex", c_uint16), ("LoggerId", c_uint16))  # union {ProcessorNumber, Alignment}


class EVENT_HEADER_EXTENDED_DATA_ITEM(ctypes.Structure):
    _fields_ = (
        ("Reserved1", c_uint16),
        ("ExtType", c_uint16),
        ("Linkage", c_uint16),  # bit 0; Reserved2 the other 15 bits
        ("DataSize", c_uint16),
        ("DataPtr", c_uint64),
    )


class EVENT_RECORD(ctypes.Structure):
    _fields_ = (
        ("EventHeader", EVENT_HEADER),
        ("BufferContext", ETW_BUFFER_CONTEXT),
        ("ExtendedDataCount", c_uint16),
        ("UserDataLength", c_uint16),
        ("ExtendedData", c_void_p),  # EVENT_HEADER_EXTENDED_DATA_ITEM[ExtendedDataCount]
        ("UserData", c_void_p),
        ("UserContext", c_void_p),
    )


# EVENT_HEADER.Flags
EVENT_HEADER_FLAG_EXTENDED_INFO = 0x0001
EVENT_HEADER_FLAG_32_BIT_HEADER = 0x0020
EVENT_HEADER_FLAG_64_BIT_HEADER = 0x0040
EVENT_HEADER_FLAG_CLASSIC_HEADER = 0x0100
EVENT_HEADER_FLAG_PROCESSOR_INDEX = 0x0200  # BufferContext: a 16-bit ProcessorIndex, else byte + Alignment
EVENT_HEADER_EXT_TYPE_STACK_TRACE64 = 6

# One unpack of the whole EVENT_RECORD header in the callback instead of a dozen ctypes attribute reads.
# Native alignment ("@") is the C layout; tests hold it to the ctypes offsets above.
RECORD_LAYOUT = struct.Struct("@HHHHIIq16sHBBBBHQQ16sHHHHPPP")
# Indices into RECORD_LAYOUT.unpack()
R_FLAGS, R_TID, R_PID, R_TS, R_GUID = 2, 4, 5, 6, 7
R_ID, R_VERSION, R_OPCODE = 8, 9, 12
R_CPU, R_EXT_COUNT, R_USER_LEN, R_EXT_DATA, R_USER_DATA = 17, 19, 20, 21, 22


# --- session control ---------------------------------------------------------------------------


class WNODE_HEADER(ctypes.Structure):
    _fields_ = (
        ("BufferSize", c_uint32),
        ("ProviderId", c_uint32),
        ("HistoricalContext", c_uint64),
        ("TimeStamp", c_int64),
        ("Guid", GUID),
        ("ClientContext", c_uint32),  # 1 QPC, 2 system time
        ("Flags", c_uint32),
    )


class EVENT_TRACE_PROPERTIES(ctypes.Structure):
    _fields_ = (
        ("Wnode", WNODE_HEADER),
        ("BufferSize", c_uint32),
        ("MinimumBuffers", c_uint32),
        ("MaximumBuffers", c_uint32),
        ("MaximumFileSize", c_uint32),
        ("LogFileMode", c_uint32),
        ("FlushTimer", c_uint32),
        ("EnableFlags", c_uint32),
        ("AgeLimit", c_uint32),  # union with FlushThreshold
        ("NumberOfBuffers", c_uint32),
        ("FreeBuffers", c_uint32),
        ("EventsLost", c_uint32),
        ("BuffersWritten", c_uint32),
        ("LogBuffersLost", c_uint32),
        ("RealTimeBuffersLost", c_uint32),
        ("LoggerThreadId", c_void_p),  # HANDLE
        ("LogFileNameOffset", c_uint32),
        ("LoggerNameOffset", c_uint32),
    )


MAX_SESSION_NAME = 1024  # characters reserved after the structure for each of the two names


class TRACE_PROPERTIES_BUFFER(ctypes.Structure):
    """EVENT_TRACE_PROPERTIES followed by room for the logger and log-file names, as ControlTrace wants."""

    _fields_ = (
        ("Properties", EVENT_TRACE_PROPERTIES),
        # UTF-16 code units: c_wchar is 4 bytes on Linux, so it would not be the Windows layout here.
        ("LoggerName", c_uint16 * MAX_SESSION_NAME),
        ("LogFileName", c_uint16 * MAX_SESSION_NAME),
    )


def trace_properties_buffer() -> TRACE_PROPERTIES_BUFFER:
    """A zeroed properties buffer with the sizes and offsets filled, ready for ControlTrace/StartTrace."""
    buf = TRACE_PROPERTIES_BUFFER()
    buf.Properties.Wnode.BufferSize = ctypes.sizeof(buf)
    buf.Properties.LoggerNameOffset = TRACE_PROPERTIES_BUFFER.LoggerName.offset
    buf.Properties.LogFileNameOffset = TRACE_PROPERTIES_BUFFER.LogFileName.offset
    return buf


def set_utf16(field: ctypes.Array[c_uint16], text: str) -> None:
    """Write ``text`` NUL-terminated into a UTF-16 field of a properties buffer."""
    units = memoryview(text.encode("utf-16-le")).cast("H")
    if len(units) >= len(field):
        raise ValueError(f"name too long ({len(units)} UTF-16 units)")
    field[: len(units)] = list(units)
    field[len(units)] = 0


def get_utf16(field: ctypes.Array[c_uint16]) -> str:
    units = list(field)
    end = units.index(0) if 0 in units else len(units)
    return bytes(memoryview(bytes(field)).cast("B")[: end * 2]).decode("utf-16-le", errors="replace")


WNODE_FLAG_TRACED_GUID = 0x00020000
WNODE_CLIENT_CONTEXT_QPC = 1  # timestamps from QueryPerformanceCounter (converted to FILETIME for us)
EVENT_TRACE_REAL_TIME_MODE = 0x00000100
EVENT_TRACE_SYSTEM_LOGGER_MODE = 0x02000000
EVENT_TRACE_CONTROL_QUERY = 0
EVENT_TRACE_CONTROL_STOP = 1
PROCESS_TRACE_MODE_REAL_TIME = 0x00000100
PROCESS_TRACE_MODE_EVENT_RECORD = 0x10000000
# OpenTraceW's failure value: a 64-bit all-ones handle, or its low half in a 32-bit process on 64-bit
# Windows (WOW64), per the OpenTraceW documentation. Compared as ints: TRACEHANDLE restype is c_uint64.
INVALID_PROCESSTRACE_HANDLE = 0xFFFFFFFFFFFFFFFF
INVALID_PROCESSTRACE_HANDLE_WOW64 = 0x00000000FFFFFFFF
INVALID_PROCESSTRACE_HANDLES = frozenset({INVALID_PROCESSTRACE_HANDLE, INVALID_PROCESSTRACE_HANDLE_WOW64})
MAX_QUERY_ALL_TRACES = 64  # QueryAllTracesW's PropertyArrayCount limit before Windows 10
# Lost_Event {6a399ae0-...}: the records ETW itself puts into a real-time stream when it lost events
# (RT_LostEvent: 32 RTLostEvent, 33 RTLostBuffer, 34 RTLostFile).
LOST_EVENT_GUID = "6a399ae0-4bc6-4de9-870b-3657f8947e7e"
RT_LOST_EVENT, RT_LOST_BUFFER, RT_LOST_FILE = 32, 33, 34
EVENT_CONTROL_CODE_DISABLE_PROVIDER = 0
EVENT_CONTROL_CODE_ENABLE_PROVIDER = 1
EVENT_CONTROL_CODE_CAPTURE_STATE = 2
ENABLE_TRACE_PARAMETERS_VERSION_2 = 2

ERROR_SUCCESS = 0
ERROR_ACCESS_DENIED = 5
ERROR_INVALID_HANDLE = 6
ERROR_INVALID_PARAMETER = 87
ERROR_ALREADY_EXISTS = 183
ERROR_MORE_DATA = 234
ERROR_CANCELLED = 1223  # ProcessTrace after CloseTrace
ERROR_NO_SYSTEM_RESOURCES = 1450  # EtwMaxLoggers reached, or no free system-logger slot
ERROR_WMI_INSTANCE_NOT_FOUND = 4201  # no session of that name
ERROR_CTX_CLOSE_PENDING = 7007  # CloseTrace while ProcessTrace still delivers: not an error


class EVENT_FILTER_DESCRIPTOR(ctypes.Structure):
    _fields_ = (("Ptr", c_uint64), ("Size", c_uint32), ("Type", c_uint32))


class ENABLE_TRACE_PARAMETERS(ctypes.Structure):
    _fields_ = (
        ("Version", c_uint32),
        ("EnableProperty", c_uint32),
        ("ControlFlags", c_uint32),
        ("SourceId", GUID),
        ("EnableFilterDesc", c_void_p),  # EVENT_FILTER_DESCRIPTOR[FilterDescCount]
        ("FilterDescCount", c_uint32),
    )


def event_id_filter(event_ids: tuple[int, ...], filter_in: bool = True) -> ctypes.Array[c_uint8]:
    """EVENT_FILTER_EVENT_ID {BOOLEAN FilterIn; UCHAR Reserved; USHORT Count; USHORT Events[Count]}."""
    raw = struct.pack(f"<BBH{len(event_ids)}H", int(filter_in), 0, len(event_ids), *event_ids)
    return (c_uint8 * len(raw)).from_buffer_copy(raw)


# --- consumer ---------------------------------------------------------------------------------


class EVENT_TRACE_HEADER(ctypes.Structure):
    _fields_ = (
        ("Size", c_uint16),
        ("HeaderType", c_uint8),
        ("MarkerFlags", c_uint8),
        ("Class", c_uint32),  # {Type, Level, Version}
        ("ThreadId", c_uint32),
        ("ProcessId", c_uint32),
        ("TimeStamp", c_int64),
        ("Guid", GUID),
        ("ProcessorTime", c_uint64),  # union {KernelTime, UserTime; ProcessorTime; ClientContext, Flags}
    )


class EVENT_TRACE(ctypes.Structure):
    _fields_ = (
        ("Header", EVENT_TRACE_HEADER),
        ("InstanceId", c_uint32),
        ("ParentInstanceId", c_uint32),
        ("ParentGuid", GUID),
        ("MofData", c_void_p),
        ("MofLength", c_uint32),
        ("ClientContext", c_uint32),  # union with ETW_BUFFER_CONTEXT
    )


class TRACE_LOGFILE_HEADER(ctypes.Structure):
    _fields_ = (
        ("BufferSize", c_uint32),
        ("Version", c_uint32),
        ("ProviderVersion", c_uint32),
        ("NumberOfProcessors", c_uint32),
        ("EndTime", c_int64),
        ("TimerResolution", c_uint32),
        ("MaximumFileSize", c_uint32),
        ("LogFileMode", c_uint32),
        ("BuffersWritten", c_uint32),
        ("StartBuffers", c_uint32),  # union with LogInstanceGuid: StartBuffers, PointerSize, EventsLost,
        ("PointerSize", c_uint32),  # CpuSpeedInMHz
        ("EventsLost", c_uint32),
        ("CpuSpeedInMHz", c_uint32),
        ("LoggerName", c_void_p),
        ("LogFileName", c_void_p),
        ("TimeZone", c_uint8 * 172),  # TIME_ZONE_INFORMATION
        ("BootTime", c_int64),
        ("PerfFreq", c_int64),
        ("StartTime", c_int64),
        ("ReservedFlags", c_uint32),
        ("BuffersLost", c_uint32),
    )


class EVENT_TRACE_LOGFILEW(ctypes.Structure):
    """OpenTraceW's argument. Strings and callbacks are addresses (c_void_p): the same layout on Linux."""

    _fields_ = (
        ("LogFileName", c_void_p),
        ("LoggerName", c_void_p),  # LPWSTR: a UTF-16 buffer the caller keeps alive
        ("CurrentTime", c_int64),
        ("BuffersRead", c_uint32),
        ("ProcessTraceMode", c_uint32),  # union with LogFileMode
        ("CurrentEvent", EVENT_TRACE),
        ("LogfileHeader", TRACE_LOGFILE_HEADER),
        ("BufferCallback", c_void_p),
        ("BufferSize", c_uint32),
        ("Filled", c_uint32),
        ("EventsLost", c_uint32),
        ("EventRecordCallback", c_void_p),  # union with EventCallback
        ("IsKernelTrace", c_uint32),
        ("Context", c_void_p),
    )


# void WINAPI EventRecordCallback(PEVENT_RECORD): stdcall on 32-bit Windows; the same as cdecl elsewhere.
_FUNCTYPE: Any = getattr(ctypes, "WINFUNCTYPE", ctypes.CFUNCTYPE)
EVENT_RECORD_CALLBACK = _FUNCTYPE(None, c_void_p)


def utf16z(text: str) -> ctypes.Array[c_uint16]:
    """A NUL-terminated UTF-16 buffer (LPWSTR) for ``text``: c_wchar is 4 bytes off Windows."""
    units = memoryview(text.encode("utf-16-le")).cast("H")
    buf = (c_uint16 * (len(units) + 1))()
    buf[: len(units)] = list(units)
    return buf


def read_utf16z(address: int, limit: int = 1024) -> str:
    """The NUL-terminated UTF-16 string at ``address``."""
    units = (c_uint16 * limit).from_address(address)
    out = []
    for u in units:
        if u == 0:
            break
        out.append(u)
    return struct.pack(f"<{len(out)}H", *out).decode("utf-16-le", errors="replace")
