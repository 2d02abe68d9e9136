"""Microsoft-Windows-Win32k API audit events (1001-1003): decoded from payload bytes (live and .etl
records) and carried through recordings like every other provider; its other events stay undecoded."""

from __future__ import annotations

import struct
from datetime import UTC, datetime
from pathlib import Path

from etwsensor.decode.decoder import Decoder
from etwsensor.events import DecodeStatus, RawRecord
from etwsensor.sources.header import RecordingHeader
from etwsensor.sources.recording import RecordingReader, write_recording

WIN32K = "8c416c79-d49b-4f01-a467-e56d3aa8234c"
TS = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
CREATED = datetime(2026, 11, 20, 8, 59, 30, tzinfo=UTC)


def filetime(dt: datetime) -> int:
    return int((dt - datetime(1601, 1, 1, tzinfo=UTC)).total_seconds() * 10_000_000)


def utf16z(text: str) -> bytes:
    return text.encode("utf-16-le") + b"\0\0"


def record(event_id: int, payload: bytes, pointer_size: int = 8, pid: int = 4242) -> RawRecord:
    return RawRecord(WIN32K, True, event_id, 0, 0, TS, pid, 77, 0, pointer_size, payload)


def raw_input_payload(pointer: str = "Q") -> bytes:
    return (
        struct.pack(
            f"<IHHI{pointer}{pointer}QIIIQIQQ",
            1,
            1,
            6,
            0x100,
            0x10_0A,
            0x7FF6_1000,
            filetime(CREATED),
            77,
            1,
            0,
            0x40,
            4242,
            filetime(CREATED),
            0x2_0000_0042,
        )
        + utf16z(r"\Device\HarddiskVolume3\Users\bob\AppData\Local\Temp\rk.exe")
        + struct.pack(f"<I{pointer}II{pointer}I", 0, 0x7FF6_0000, 0x80, 0x1000000, 0x2000, 0x20)
    )


def test_register_raw_input_devices_decodes_every_field_on_x64_and_x86() -> None:
    d = Decoder()
    for pointer_size, fmt in ((8, "Q"), (4, "I")):
        ev = d.decode(record(1001, raw_input_payload(fmt), pointer_size))
        assert ev is not None and ev.status is DecodeStatus.OK, ev
        assert (ev.provider, ev.name, ev.id) == ("Microsoft-Windows-Win32k", "RegisterRawInputDevices", 1001)
        f = ev.fields
        assert (f["UsagePage"], f["Usage"], f["Flags"], f["cVisWindows"], f["ProcessId"]) == (
            1,
            6,
            0x100,
            0,
            4242,
        )
        assert f["ProcessCreateTime"] == CREATED and f["ProcessStartKey"] == 0x2_0000_0042
        assert f["ThreadStartAddressMappedModuleName"].endswith(r"\Temp\rk.exe")
        assert f["ThreadStartAddressVadProtect"] == 0x20  # the last field: every width was right


def test_set_windows_hook_ex_and_get_async_key_state() -> None:
    d = Decoder()
    hook = (
        struct.pack("<I", 13)
        + utf16z(r"C:\Users\bob\AppData\Roaming\hk.dll")
        + struct.pack("<QQI", 0x7FF8_0000, 0x7FF8_1230, 0x0002_004E)
    )
    ev = d.decode(record(1002, hook))
    assert ev is not None and ev.name == "SetWindowsHookEx"
    assert ev.fields == {
        "FilterType": 13,
        "pstrLib": r"C:\Users\bob\AppData\Roaming\hk.dll",
        "hmod": 0x7FF8_0000,
        "pfnFilterProc": 0x7FF8_1230,
        "ReturnValue": 0x0002_004E,
    }
    ev = d.decode(record(1003, struct.pack("<III", 4242, 60_000, 512)))
    assert ev is not None and ev.name == "GetAsyncKeyState"
    assert ev.fields == {"PID": 4242, "MsSinceLastKeyEvent": 60_000, "BackgroundCallCount": 512}


def test_a_cut_payload_is_a_counted_error_and_other_win32k_events_are_not_decoded() -> None:
    d = Decoder()
    cut = d.decode(record(1003, struct.pack("<II", 4242, 1)))
    assert cut is not None and cut.status is DecodeStatus.ERROR and cut.payload is not None
    other = d.decode(record(1000, struct.pack("<IIIIIQ", 3, 3, 0, 0, 0, 0)))  # SetWinEventHook: not consumed
    assert other is None or other.status is not DecodeStatus.OK
    totals = d.stats.totals()
    assert totals["decode_errors"] == 1 and totals["other"] == 1


def test_win32k_events_round_trip_through_a_recording(tmp_path: Path) -> None:
    d = Decoder()
    events = [
        d.decode(record(1001, raw_input_payload())),
        d.decode(record(1003, struct.pack("<III", 4242, 60_000, 512))),
    ]
    assert all(e is not None for e in events)
    path = tmp_path / "w.jsonl.zst"
    write_recording(path, RecordingHeader(), [e for e in events if e is not None])
    back = list(RecordingReader(path).events())
    assert [(e.name, e.fields) for e in back] == [(e.name, e.fields) for e in events if e is not None]
    assert back[0].fields["ProcessCreateTime"] == CREATED  # FILETIME restored as a datetime
