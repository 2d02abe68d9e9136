"""Binary layouts of Windows .etl files, declared as data.

Sources: the WMI_BUFFER_HEADER, SYSTEM_TRACE_HEADER, PERFINFO_TRACE_HEADER, EVENT_TRACE_HEADER,
EVENT_INSTANCE_GUID_HEADER and EVENT_HEADER definitions of the Windows SDK (evntrace.h, evntcons.h,
ntwmi.h as documented by Geoff Chappell), TRACE_LOGFILE_HEADER (Microsoft Learn), and what the
perfview trace in tests/data/etl shows. All little-endian.

Every record in a buffer starts with a 32-bit marker whose byte 2 is the header type and byte 3
carries TRACE_HEADER_FLAG (0x80) | TRACE_HEADER_EVENT_TRACE (0x40). Records are 8-byte aligned.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

# --- buffers ---------------------------------------------------------------------------------------

# WMI_BUFFER_HEADER (72 bytes). Only the fields the reader uses are unpacked:
# 0x00 BufferSize (bytes of this buffer in the file), 0x04 SavedOffset (bytes filled, header included,
# counted before compression), 0x28 ClientContext (ProcessorNumber byte, or a USHORT processor index
# when BufferFlag has PROC_INDEX), 0x30 Offset (filled bytes again), 0x34 BufferFlag, 0x36 BufferType.
BUFFER_HEADER: Final = struct.Struct("<II32xH6xIHH16x")
BUFFER_HEADER_SIZE: Final = 72
assert BUFFER_HEADER.size == BUFFER_HEADER_SIZE


class BufferFlag(IntEnum):
    FLUSH_MARKER = 0x0001
    EVENTS_LOST = 0x0002
    BUFFER_LOST = 0x0004
    RTBACKUP_CORRUPT = 0x0008
    RTBACKUP = 0x0010
    PROC_INDEX = 0x0020  # ClientContext holds a 16-bit processor index
    COMPRESSED = 0x0040  # everything after the buffer header is LZ77 (MS-XCA "plain LZ77")


# Sanity bound for a buffer: ETW caps a session's BufferSize at 16 MiB.
MAX_BUFFER_SIZE: Final = 16 * 1024 * 1024

PADDING_MARKER: Final = 0xFFFFFFFF  # the rest of the buffer is unused
RECORD_ALIGNMENT: Final = 8

# --- record headers --------------------------------------------------------------------------------


class HeaderKind(IntEnum):
    """TRACE_HEADER_TYPE_* (byte 2 of every record's marker)."""

    SYSTEM32 = 0x01
    SYSTEM64 = 0x02
    COMPACT32 = 0x03
    COMPACT64 = 0x04
    FULL_HEADER32 = 0x0A
    INSTANCE32 = 0x0B
    TIMED = 0x0C
    ERROR = 0x0D
    WNODE_HEADER = 0x0E
    MESSAGE = 0x0F
    PERFINFO32 = 0x10
    PERFINFO64 = 0x11
    EVENT_HEADER32 = 0x12
    EVENT_HEADER64 = 0x13
    FULL_HEADER64 = 0x14
    INSTANCE64 = 0x15


MARKER: Final = struct.Struct("<I")
MARKER_FLAGS: Final = 0xC0000000  # TRACE_HEADER_FLAG | TRACE_HEADER_EVENT_TRACE in byte 3
# WPP TraceMessage records carry only TRACE_HEADER_FLAG; their Size is the low 16 bits of the marker.
MESSAGE_FLAGS: Final = 0x80000000


class Shape(IntEnum):
    """How a header kind is laid out; several kinds share a shape and differ in pointer size."""

    SYSTEM = 1  # SYSTEM_TRACE_HEADER: hook id, no GUID, KernelTime/UserTime
    COMPACT = 2  # SYSTEM_TRACE_HEADER without KernelTime/UserTime
    PERFINFO = 3  # PERFINFO_TRACE_HEADER: hook id and timestamp only (no pid/tid)
    FULL = 4  # EVENT_TRACE_HEADER: class GUID, opcode in Class.Type
    INSTANCE = 5  # EVENT_INSTANCE_GUID_HEADER: as FULL, then instance ids and parent GUID
    EVENT = 6  # EVENT_HEADER: provider GUID and EVENT_DESCRIPTOR, optional extended data


@dataclass(frozen=True, slots=True)
class HeaderLayout:
    name: str  # stats key
    shape: Shape
    size: int  # bytes of the header; the payload follows (after extended data for EVENT)
    pointer_size: int


HEADER_LAYOUTS: Final[dict[int, HeaderLayout]] = {
    HeaderKind.SYSTEM32: HeaderLayout("system32", Shape.SYSTEM, 32, 4),
    HeaderKind.SYSTEM64: HeaderLayout("system64", Shape.SYSTEM, 32, 8),
    HeaderKind.COMPACT32: HeaderLayout("compact32", Shape.COMPACT, 24, 4),
    HeaderKind.COMPACT64: HeaderLayout("compact64", Shape.COMPACT, 24, 8),
    HeaderKind.PERFINFO32: HeaderLayout("perfinfo32", Shape.PERFINFO, 16, 4),
    HeaderKind.PERFINFO64: HeaderLayout("perfinfo64", Shape.PERFINFO, 16, 8),
    HeaderKind.FULL_HEADER32: HeaderLayout("full32", Shape.FULL, 48, 4),
    HeaderKind.FULL_HEADER64: HeaderLayout("full64", Shape.FULL, 48, 8),
    HeaderKind.INSTANCE32: HeaderLayout("instance32", Shape.INSTANCE, 72, 4),
    HeaderKind.INSTANCE64: HeaderLayout("instance64", Shape.INSTANCE, 72, 8),
    HeaderKind.EVENT_HEADER32: HeaderLayout("event32", Shape.EVENT, 80, 4),
    HeaderKind.EVENT_HEADER64: HeaderLayout("event64", Shape.EVENT, 80, 8),
}

# Kernel headers (SYSTEM, COMPACT): Version, (marker bytes), Size, HookId, ThreadId, ProcessId, SystemTime.
KERNEL_HEADER: Final = struct.Struct("<H2xHHIIq")
# PERFINFO: Version, (marker bytes), Size, HookId, SystemTime.
PERFINFO_HEADER: Final = struct.Struct("<H2xHHq")
# EVENT_TRACE_HEADER and EVENT_INSTANCE_GUID_HEADER prefix:
# Size, (marker bytes), Class.Type (opcode), Class.Level, Class.Version, ThreadId, ProcessId, TimeStamp, Guid.
CLASSIC_HEADER: Final = struct.Struct("<H2xBxHIIq16s")
# EVENT_HEADER: Size, (marker bytes), Flags, (EventProperty), ThreadId, ProcessId, TimeStamp, ProviderId,
# Id, Version, (Channel, Level), Opcode. Task, Keyword, ProcessorTime and ActivityId are not needed.
EVENT_HEADER: Final = struct.Struct("<H2xH2xIIq16sHB2xB")

EVENT_HEADER_FLAG_EXTENDED_INFO: Final = 0x0001

# The first 8 bytes of any header read as one number, and the 8 after them: for PERFINFO, Version,
# marker, Size and HookId, then the TimeStamp. With Size (bits 32-47) masked out, the number says what
# kind of record it is (for a kernel hook: which class, opcode and version); the reader uses it to pass
# over records of classes a filter leaves out without taking their headers apart.
HEAD_AND_NEXT: Final = struct.Struct("<Qq")
HEAD_SIZE_MASK: Final = 0xFFFF_0000_FFFF_FFFF  # PERFINFO: everything but Size
HEAD_EVENT_SHIFT: Final = 16  # EVENT_HEADER: Size is the low 16 bits, the rest (type, Flags) above
# EVENT_HEADER from byte 16: TimeStamp, ProviderId, then Id, Version and Channel as one number.
EVENT_TAIL: Final = struct.Struct("<q16sI")
EVENT_TAIL_OFFSET: Final = 16
# Extended data item in a file: total item Size (8-byte header included, 8-aligned), ExtType,
# Linkage (bit 0 set when another item follows), DataSize.
EXTENDED_ITEM: Final = struct.Struct("<HHHH")
EXTENDED_ITEM_LINKAGE: Final = 0x0001

# --- kernel hook ids -> classic class GUIDs -------------------------------------------------------
# Kernel headers carry HookId = group << 8 | opcode. The group selects the classic class; checked on
# the perfview trace (Windows 8): Image DCStart/DCEnd/UnLoad use the Image group (0x14), but Image
# Load is logged as hook 0x030A in the *Process* group, so it needs an explicit hook entry.

EVENT_TRACE_GUID: Final = "68fdd900-4a3e-11d1-84f4-0000f80464e3"
# MSNT_SystemTrace, the parent of every kernel class: used for groups no class is known for.
SYSTEM_TRACE_GUID: Final = "9e814aad-3204-11d2-9a82-006008a86939"

KERNEL_GROUP_GUIDS: Final[dict[int, str]] = {
    0x00: EVENT_TRACE_GUID,  # EventTrace: logfile header (0), Extension, RundownComplete, ...
    0x01: "3d6fa8d4-fe05-11d0-9dda-00c04fd7ba7c",  # DiskIo
    0x02: "3d6fa8d3-fe05-11d0-9dda-00c04fd7ba7c",  # PageFault (Memory): HardFault 32, ...
    0x03: "3d6fa8d0-fe05-11d0-9dda-00c04fd7ba7c",  # Process
    0x04: "90cbdc39-4a3e-11d1-84f4-0000f80464e3",  # FileIo
    0x05: "3d6fa8d1-fe05-11d0-9dda-00c04fd7ba7c",  # Thread
    0x06: "9a280ac0-c8e0-11d1-84e2-00c04fb998a2",  # TcpIp
    0x07: "3282fc76-feed-498e-8aa7-e70f459d430e",  # Job
    0x08: "bf3a50c5-a9c9-4988-a005-2df0b7c80f80",  # UdpIp
    0x09: "ae53722e-c863-11d2-8659-00c04fa321a1",  # Registry
    0x0A: "13976d09-a327-438c-950b-7f03192815c7",  # DbgPrint
    0x0B: "01853a65-418f-4f36-aefc-dc0f1d2fd235",  # SystemConfig (SysConfig)
    0x0E: "0268a8b6-74fd-4302-9dd0-6e8f1795c0cf",  # Pool
    0x0F: "ce1dbfb4-137e-4da6-87b0-3f59aa102cbc",  # PerfInfo: SampledProfile 46, ISR, DPC, ...
    0x10: "222962ab-6180-4b88-a825-346b75f2a24a",  # Heap
    0x11: "89497f50-effe-4440-8cf2-ce6b1cdcaca7",  # Object
    0x12: "e43445e0-0903-48c3-b878-ff0fccebdd04",  # Power
    0x14: "2cb15d1d-5fc1-11d2-abe1-00a0c911f518",  # Image
    0x15: "ce1dbfb4-137e-4da6-87b0-3f59aa102cbc",  # DPC (PerfInfo class)
    0x18: "def2fe46-7bd6-4b80-bd94-f57fe20d0ce3",  # StackWalk
    0x19: "9aec974b-5b8e-4118-9b92-3186d8002ce5",  # UMS
    0x1A: "45d8cccd-539f-4b72-a8b7-5c683142609a",  # ALPC
    0x1B: "d837ca92-12b9-44a5-ad6a-3a65b3578aa8",  # SplitIo
    0x1C: "c861d0e2-a2c1-4d36-9f9c-970bab943a12",  # ThreadPool
}

IMAGE_GUID: Final = KERNEL_GROUP_GUIDS[0x14]

# Hooks whose class is not their group's.
KERNEL_HOOK_GUIDS: Final[dict[int, str]] = {
    0x030A: IMAGE_GUID,  # Image Load (opcode 10) is logged in the Process group
}

LOGFILE_HEADER_HOOK: Final = 0x0000  # EventTrace group, opcode 0: the TRACE_LOGFILE_HEADER record

# Not a kernel group: SystemConfigEx {9b79ee91-b5fd-41c0-a243-4248e266e9d0} (VolumeMapping 35,
# SystemPaths 33, UnknownVolume 34, BuildInfo 32) is written by KernelTraceControl when a trace is
# merged, as EVENT_TRACE_HEADER records carrying that GUID. In the perfview trace they open the first
# CPU-0 data buffer (right after an EventTrace Extension record), stamped with the logfile header's own
# timestamp, pid = tid = 0; BuildInfo and opcode 37 come at the end of the trace.

# --- TRACE_LOGFILE_HEADER (payload of the first record) -------------------------------------------
# Layout up to the two name pointers is the same for 32- and 64-bit traces; the pointers are pointer
# sized, and BootTime is 8-aligned after TIME_ZONE_INFORMATION (172 bytes), so the tail moves.

LOGFILE_HEAD: Final = struct.Struct("<IIIIqIIIIIIII")
# BufferSize, Version, ProviderVersion, NumberOfProcessors, EndTime, TimerResolution, MaximumFileSize,
# LogFileMode, BuffersWritten, StartBuffers, PointerSize, EventsLost, CpuSpeedInMHz

TIME_ZONE_BIAS: Final = struct.Struct("<i")  # TIME_ZONE_INFORMATION.Bias, minutes (UTC = local + bias)
LOGFILE_TAIL: Final = struct.Struct("<qqqII")  # BootTime, PerfFreq, StartTime, ReservedFlags, BuffersLost


@dataclass(frozen=True, slots=True)
class LogfileLayout:
    time_zone: int  # offset of TIME_ZONE_INFORMATION
    tail: int  # offset of BootTime
    size: int  # fixed part; LoggerName and LogFileName (UTF-16, NUL-terminated) follow


LOGFILE_LAYOUTS: Final[dict[int, LogfileLayout]] = {
    4: LogfileLayout(time_zone=64, tail=240, size=272),
    8: LogfileLayout(time_zone=72, tail=248, size=280),
}


class ClockType(IntEnum):
    """TRACE_LOGFILE_HEADER.ReservedFlags: what record timestamps count."""

    QPC = 1  # QueryPerformanceCounter ticks at PerfFreq
    SYSTEM_TIME = 2  # FILETIME (100 ns since 1601)
    CPU_CYCLES = 3  # cycle counter at CpuSpeedInMHz
