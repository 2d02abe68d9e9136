"""The payload decoder: every wire type, bad payloads counted not raised, unknown versions kept raw."""

from __future__ import annotations

import struct
import uuid
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from etwsensor.decode.decoder import Decoder
from etwsensor.decode.schema import FieldDef, ProviderDef, VersionDef, load_providers
from etwsensor.events import DecodeStatus, RawRecord

TS = datetime(2020, 7, 29, 0, 7, 3, tzinfo=UTC)
GUID = "11111111-2222-3333-4444-555555555555"


def one_event_provider(fields: list[tuple[str, str] | tuple[str, str, str]]) -> ProviderDef:
    defs = [{"name": f[0], "type": f[1], **({"count": f[2]} if len(f) == 3 else {})} for f in fields]
    return ProviderDef.model_validate(
        {
            "name": "Test",
            "guid": GUID,
            "kind": "manifest",
            "events": [{"id": 7, "name": "Probe", "versions": [{"version": 0, "fields": defs}]}],
        }
    )


def record(
    payload: bytes,
    *,
    guid: str = GUID,
    manifest: bool = True,
    key: int = 7,
    version: int = 0,
    pointer_size: int = 8,
) -> RawRecord:
    return RawRecord(
        guid,
        manifest,
        key if manifest else 0,
        0 if manifest else key,
        version,
        TS,
        10,
        20,
        1,
        pointer_size,
        payload,
    )


def decode_one(fields: list[tuple[str, str] | tuple[str, str, str]], payload: bytes, pointer_size: int = 8):
    d = Decoder([one_event_provider(fields)])
    ev = d.decode(record(payload, pointer_size=pointer_size))
    assert ev is not None
    return ev, d


@pytest.mark.parametrize(
    ("typ", "fmt", "value"),
    [
        ("UInt8", "<B", 0xFE),
        ("Int8", "<b", -2),
        ("UInt16", "<H", 0xBEEF),
        ("Int16", "<h", -300),
        ("UInt32", "<I", 0xDEADBEEF),
        ("Int32", "<i", -70000),
        ("HexInt32", "<I", 0x80000005),
        ("UInt64", "<Q", 2**63 + 5),
        ("Int64", "<q", -(2**40)),
        ("HexInt64", "<Q", 0xFFFFF80012345678),
    ],
)
def test_integers_decode_little_endian(typ: str, fmt: str, value: int) -> None:
    ev, _ = decode_one([("V", typ), ("After", "UInt16")], struct.pack(fmt, value) + b"\x34\x12")
    assert ev.status is DecodeStatus.OK
    assert ev.fields == {"V": value, "After": 0x1234}


@pytest.mark.parametrize(("pointer_size", "fmt"), [(4, "<I"), (8, "<Q")])
def test_pointer_width_follows_the_trace(pointer_size: int, fmt: str) -> None:
    value = 0x7FFE0000 if pointer_size == 4 else 0xFFFFA0012345F000
    ev, _ = decode_one(
        [("P", "Pointer"), ("N", "UInt32")], struct.pack(fmt, value) + struct.pack("<I", 9), pointer_size
    )
    assert ev.fields == {"P": value, "N": 9}


def test_boolean_filetime_guid() -> None:
    ft = 132404548233564000  # 2020-07-29T00:07:03.3564Z
    g = uuid.UUID("22fb2cd6-0e7b-422b-a0c7-2fad1fd0e716")
    payload = struct.pack("<IQ", 1, ft) + g.bytes_le + struct.pack("<Q", 0)
    ev, _ = decode_one([("B", "Boolean"), ("T", "FILETIME"), ("G", "GUID"), ("Unset", "FILETIME")], payload)
    assert ev.fields == {
        "B": True,
        "T": datetime(2020, 7, 29, 0, 7, 3, 356400, tzinfo=UTC),
        "G": "22fb2cd6-0e7b-422b-a0c7-2fad1fd0e716",
        "Unset": None,
    }


def test_systemtime() -> None:
    payload = struct.pack("<8H", 2024, 2, 5, 29, 23, 59, 58, 250)
    ev, _ = decode_one([("T", "SYSTEMTIME")], payload)
    assert ev.fields["T"] == datetime(2024, 2, 29, 23, 59, 58, 250000, tzinfo=UTC)
    bad, d = decode_one([("T", "SYSTEMTIME")], struct.pack("<8H", 2024, 13, 0, 1, 0, 0, 0, 0))
    assert bad.status is DecodeStatus.ERROR and d.stats.totals()["decode_errors"] == 1


def test_strings_utf16_and_ansi() -> None:
    # "x\u0100" is 78 00 00 01 in UTF-16LE: its 00 00 at an odd offset must not end the string.
    s1 = "x\u0100é C:\\Windows"
    payload = s1.encode("utf-16-le") + b"\0\0" + b"cmd.exe\0" + "tail".encode("utf-16-le") + b"\0\0"
    fields: list[tuple[str, str] | tuple[str, str, str]] = [
        ("U", "UnicodeString"),
        ("A", "AnsiString"),
        ("Last", "UnicodeString"),
    ]
    ev, _ = decode_one(fields, payload)
    assert ev.fields == {"U": s1, "A": "cmd.exe", "Last": "tail"}
    cut, _ = decode_one(fields, payload[:-2])  # a cut payload, not a shorter string
    assert cut.status is DecodeStatus.ERROR
    cut, _ = decode_one([("A", "AnsiString")], b"cmd.e")
    assert cut.status is DecodeStatus.ERROR


def test_sid_and_token_user() -> None:
    system = bytes.fromhex("0101000000000005") + struct.pack("<I", 18)
    user = bytes.fromhex("0105000000000005") + struct.pack("<5I", 21, 1004336348, 1177238915, 682003330, 1001)
    ev, _ = decode_one([("S", "SID"), ("N", "UInt8")], user + b"\x07")
    assert ev.fields == {"S": "S-1-5-21-1004336348-1177238915-682003330-1001", "N": 7}
    # CORRECTIONS §2, airbus trace: TOKEN_USER (2 x pointer size) then the SID.
    blob = bytes.fromhex("20dc9cfc88b4ffff0000000003000000") + system
    ev, _ = decode_one([("UserSID", "TokenUser"), ("Name", "AnsiString")], blob + b"x.exe\0")
    assert ev.fields == {"UserSID": "S-1-5-18", "Name": "x.exe"}
    blob32 = bytes.fromhex("20dc9cfc03000000") + system
    ev, _ = decode_one([("UserSID", "TokenUser"), ("Name", "AnsiString")], blob32 + b"x.exe\0", 4)
    assert ev.fields["UserSID"] == "S-1-5-18"
    ev, _ = decode_one([("UserSID", "TokenUser"), ("Name", "AnsiString")], b"\0\0\0\0" + b"Idle\0")
    assert ev.fields == {"UserSID": "", "Name": "Idle"}  # no SID: the field is 4 bytes


def test_counted_binary() -> None:
    payload = struct.pack("<H", 4) + b"\x01\x02\x03\x04" + struct.pack("<I", 3)
    ev, _ = decode_one([("Size", "UInt16"), ("Data", "Binary", "Size"), ("Type", "UInt32")], payload)
    assert ev.fields == {"Size": 4, "Data": b"\x01\x02\x03\x04", "Type": 3}
    short, _ = decode_one([("Size", "UInt16"), ("Data", "Binary", "Size")], struct.pack("<H", 9) + b"ab")
    assert short.status is DecodeStatus.ERROR and short.payload == struct.pack("<H", 9) + b"ab"


@pytest.mark.parametrize(
    "payload", [b"", b"\x01\x00", struct.pack("<I", 5), struct.pack("<IQ", 5, 1) + b"\x41\x00"]
)
def test_truncated_payloads_are_counted_errors(payload: bytes) -> None:
    ev, d = decode_one([("Pid", "UInt32"), ("Key", "Pointer"), ("Name", "UnicodeString")], payload)
    assert ev.status is DecodeStatus.ERROR
    assert ev.fields == {} and ev.payload == payload
    assert d.stats.totals() == {"events": 1, "decode_errors": 1, "undecoded": 0, "other": 0}


def test_unknown_version_is_kept_raw_and_counted() -> None:
    d = Decoder([one_event_provider([("Pid", "UInt32")])])
    ev = d.decode(record(b"\1\0\0\0", version=9))
    assert ev is not None and ev.status is DecodeStatus.UNDECODED and ev.payload == b"\1\0\0\0"
    assert ev.name == "Probe" and ev.provider == "Test" and ev.id == 7 and ev.opcode is None
    assert d.stats.totals() == {"events": 1, "decode_errors": 0, "undecoded": 1, "other": 0}


def test_other_providers_and_events_are_counted_not_decoded() -> None:
    d = Decoder([one_event_provider([("Pid", "UInt32")])])
    assert d.decode(record(b"\0" * 8, guid="e13c0d23-ccbc-4e12-931b-d9cc2eee27e4", key=10)) is None  # CLR
    assert d.decode(record(b"\0" * 8, key=8)) is None  # a known provider's event we do not consume
    stats = d.stats.as_json()
    assert (stats["events"], stats["other"]) == (2, 2)
    clr = next(e for e in stats["by_event"] if e["guid"].startswith("e13c0d23"))
    assert clr == {
        "provider": "e13c0d23-ccbc-4e12-931b-d9cc2eee27e4",
        "guid": clr["guid"],
        "id": 10,
        "opcode": None,
        "name": "",
        "version": 0,
        "count": 1,
        "decode_errors": 0,
        "undecoded": 0,
    }


def test_classic_records_are_keyed_by_opcode() -> None:
    d = Decoder()
    payload = (
        struct.pack("<QIIIiQ", 0xFFFFE0000AA1C080, 3676, 3508, 1, 259, 0x1AB000)
        + bytes.fromhex("20dc9cfc88b4ffff0000000003000000")
        + bytes.fromhex("0101000000000005")
        + struct.pack("<I", 18)
        + b"Test.x64.exe\0"
        + "Test.x64.exe".encode("utf-16-le")
        + b"\0\0"
    )
    ev = d.decode(
        record(payload, guid="3d6fa8d0-fe05-11d0-9dda-00c04fd7ba7c", manifest=False, key=1, version=3)
    )
    assert ev is not None and ev.status is DecodeStatus.OK
    assert (ev.provider, ev.name, ev.id, ev.opcode) == ("Process", "Start", None, 1)
    assert ev.fields["ProcessId"] == 3676 and ev.fields["ParentId"] == 3508
    assert ev.fields["UserSID"] == "S-1-5-18"
    assert ev.fields["ImageFileName"] == "Test.x64.exe" and ev.fields["CommandLine"] == "Test.x64.exe"
    # The same record as a manifest event (EVENT_HEADER) of that GUID is not a Process Start.
    assert d.decode(record(payload, guid="3d6fa8d0-fe05-11d0-9dda-00c04fd7ba7c", key=1, version=3)) is None


ALL_LAYOUTS = [(p, ev.key, vd) for p in load_providers() for ev in p.events for vd in ev.versions]


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(ALL_LAYOUTS),
    st.binary(max_size=200),
    st.sampled_from([4, 8]),
)
def test_random_payloads_never_raise(
    layout: tuple[ProviderDef, int, VersionDef], payload: bytes, pointer_size: int
) -> None:
    p, key, vd = layout
    d = Decoder([p])
    rec = record(
        payload,
        guid=p.guid,
        manifest=p.kind == "manifest",
        key=key,
        version=vd.version,
        pointer_size=pointer_size,
    )
    ev = d.decode(rec)
    assert ev is not None
    assert ev.status in (DecodeStatus.OK, DecodeStatus.ERROR)
    if ev.status is DecodeStatus.OK:
        assert list(ev.fields) == [f.name for f in vd.fields]


def test_field_def_rejects_uncounted_binary() -> None:
    with pytest.raises(ValueError, match="count"):
        FieldDef(name="Data", type="Binary")
