"""The EVENT_RECORD family with fixed-width ctypes: the layouts Windows x64 uses."""

from __future__ import annotations

import ctypes
import struct
import sys

import pytest

from etwsensor.sources.live import structs as S

X64 = ctypes.sizeof(ctypes.c_void_p) == 8


@pytest.mark.skipif(not X64, reason="sizes below are the x64 ones")
def test_sizes_are_the_windows_x64_sizes() -> None:
    assert ctypes.sizeof(S.EVENT_DESCRIPTOR) == 16
    assert ctypes.sizeof(S.EVENT_HEADER) == 80
    assert ctypes.sizeof(S.ETW_BUFFER_CONTEXT) == 4
    assert ctypes.sizeof(S.EVENT_HEADER_EXTENDED_DATA_ITEM) == 16
    assert ctypes.sizeof(S.EVENT_RECORD) == 112
    assert ctypes.sizeof(S.WNODE_HEADER) == 48
    assert ctypes.sizeof(S.EVENT_TRACE_PROPERTIES) == 120
    assert ctypes.sizeof(S.EVENT_FILTER_DESCRIPTOR) == 16
    assert ctypes.sizeof(S.ENABLE_TRACE_PARAMETERS) == 48
    assert ctypes.sizeof(S.EVENT_TRACE_HEADER) == 48
    assert ctypes.sizeof(S.EVENT_TRACE) == 88
    assert ctypes.sizeof(S.TRACE_LOGFILE_HEADER) == 280
    assert ctypes.sizeof(S.EVENT_TRACE_LOGFILEW) == 448
    assert S.EVENT_TRACE_LOGFILEW.LogfileHeader.offset == 120
    assert S.EVENT_TRACE_LOGFILEW.EventRecordCallback.offset == 424


def test_offsets_match_evntcons_h() -> None:
    assert S.EVENT_HEADER.TimeStamp.offset == 16
    assert S.EVENT_HEADER.ProviderId.offset == 24
    assert S.EVENT_HEADER.EventDescriptor.offset == 40
    assert S.EVENT_HEADER.ActivityId.offset == 64
    assert S.EVENT_DESCRIPTOR.Opcode.offset == 5
    assert S.EVENT_DESCRIPTOR.Keyword.offset == 8
    assert S.EVENT_RECORD.BufferContext.offset == 80
    assert S.EVENT_RECORD.UserDataLength.offset == 86
    assert S.EVENT_RECORD.ExtendedData.offset == 88
    assert S.EVENT_RECORD.UserData.offset == 88 + ctypes.sizeof(ctypes.c_void_p)


def test_the_one_unpack_layout_reads_every_field_where_ctypes_put_it() -> None:
    r = S.EVENT_RECORD()
    h = r.EventHeader
    h.Flags, h.ThreadId, h.ProcessId, h.TimeStamp = 0x0140, 0x1111, 0x2222, 0x01D0_0000_1234_5678
    h.ProviderId = S.GUID.from_text("3d6fa8d0-fe05-11d0-9dda-00c04fd7ba7c")
    h.EventDescriptor.Id, h.EventDescriptor.Version, h.EventDescriptor.Opcode = 0x1234, 3, 39
    r.BufferContext.ProcessorIndex, r.ExtendedDataCount, r.UserDataLength = 7, 2, 515
    r.ExtendedData, r.UserData = 0xDEAD0, 0xBEEF0
    assert S.RECORD_LAYOUT.size <= ctypes.sizeof(S.EVENT_RECORD)
    v = S.RECORD_LAYOUT.unpack(ctypes.string_at(ctypes.addressof(r), S.RECORD_LAYOUT.size))
    assert (v[S.R_FLAGS], v[S.R_TID], v[S.R_PID]) == (0x0140, 0x1111, 0x2222)
    assert v[S.R_TS] == 0x01D0_0000_1234_5678
    assert S.guid_text(v[S.R_GUID]) == "3d6fa8d0-fe05-11d0-9dda-00c04fd7ba7c"
    assert (v[S.R_ID], v[S.R_VERSION], v[S.R_OPCODE]) == (0x1234, 3, 39)
    assert (v[S.R_CPU], v[S.R_EXT_COUNT], v[S.R_USER_LEN]) == (7, 2, 515)
    assert (v[S.R_EXT_DATA], v[S.R_USER_DATA]) == (0xDEAD0, 0xBEEF0)


def test_properties_buffer_has_room_for_the_names_controltrace_writes() -> None:
    buf = S.trace_properties_buffer()
    p = buf.Properties
    assert p.Wnode.BufferSize == ctypes.sizeof(buf)
    assert p.LoggerNameOffset == ctypes.sizeof(S.EVENT_TRACE_PROPERTIES)
    assert p.LogFileNameOffset == p.LoggerNameOffset + S.MAX_SESSION_NAME * 2  # UTF-16, as on Windows
    S.set_utf16(buf.LoggerName, "etwsensor-kernel-42")
    assert S.get_utf16(buf.LoggerName) == "etwsensor-kernel-42"
    raw = ctypes.string_at(ctypes.addressof(buf) + p.LoggerNameOffset, 40)
    assert raw == "etwsensor-kernel-42\x00".encode("utf-16-le")


def test_event_id_filter_is_the_evntprov_layout() -> None:
    raw = bytes(S.event_id_filter((1, 2, 15)))
    assert raw == struct.pack("<BBHHHH", 1, 0, 3, 1, 2, 15)


PYWINTRACE = [
    # ours, pywintrace's module and structure: the same layout (pywintrace's use platform wintypes)
    ("EVENT_RECORD", "evntcons", "EVENT_RECORD"),
    ("EVENT_HEADER", "evntcons", "EVENT_HEADER"),
    ("EVENT_TRACE_PROPERTIES", "evntrace", "EVENT_TRACE_PROPERTIES"),
    ("WNODE_HEADER", "wmistr", "WNODE_HEADER"),
    ("ENABLE_TRACE_PARAMETERS", "evntrace", "ENABLE_TRACE_PARAMETERS"),
    ("EVENT_FILTER_DESCRIPTOR", "evntprov", "EVENT_FILTER_DESCRIPTOR"),
    ("EVENT_TRACE_HEADER", "evntrace", "EVENT_TRACE_HEADER"),
    ("EVENT_TRACE", "evntrace", "EVENT_TRACE"),
    ("TRACE_LOGFILE_HEADER", "evntrace", "TRACE_LOGFILE_HEADER"),
    ("EVENT_TRACE_LOGFILEW", "evntrace", "EVENT_TRACE_LOGFILE"),
]


@pytest.mark.skipif(sys.platform != "win32", reason="pywintrace imports ctypes.windll: Windows only")
@pytest.mark.parametrize(("ours", "module", "theirs"), PYWINTRACE)
def test_the_layouts_equal_pywintraces_on_windows(ours: str, module: str, theirs: str) -> None:
    import importlib

    mine = getattr(S, ours)
    other = getattr(importlib.import_module(f"etw.{module}"), theirs)
    assert ctypes.sizeof(mine) == ctypes.sizeof(other)
    assert ctypes.alignment(mine) == ctypes.alignment(other)
    theirs = {f[0] for f in other._fields_}
    shared = [f[0] for f in mine._fields_ if f[0] in theirs]
    assert len(shared) >= len(mine._fields_) // 2
    for name in shared:
        assert getattr(mine, name).offset == getattr(other, name).offset, name
