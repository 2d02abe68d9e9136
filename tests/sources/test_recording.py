"""Recordings: JSON Lines (+zstd) round trip, damaged lines counted, not raised."""

from __future__ import annotations

import copy
import json
import random
import string
from datetime import UTC, datetime
from pathlib import Path

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from etwsensor.events import DecodeStatus, RawEvent
from etwsensor.sources import SourceOpenError, open_source
from etwsensor.sources.header import HostInfo, RecordingHeader
from etwsensor.sources.recording import RecordingReader, write_recording

KPROC = "22fb2cd6-0e7b-422b-a0c7-2fad1fd0e716"
KREG = "70eb4f03-c1de-4f73-a051-33d13d5413bd"
PROC = "3d6fa8d0-fe05-11d0-9dda-00c04fd7ba7c"
PS_IMAGE = "\\Device\\HarddiskVolume3\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe"
T0 = datetime(2026, 4, 16, 9, 30, 0, 123456, tzinfo=UTC)

HEADER = RecordingHeader(
    host=HostInfo(name="WS-042", device_id="d3b07384d113edec49eaa6238ad5ff00", os_build="10.0.22631"),
    pointer_size=8,
    device_map={"\\Device\\HarddiskVolume3": "C:"},
    sids={"S-1-5-21-1-2-3-1001": "CONTOSO\\alice"},
    start=T0,
)


def events() -> list[RawEvent]:
    return [
        RawEvent(
            KPROC,
            "Microsoft-Windows-Kernel-Process",
            "ProcessStart",
            1,
            None,
            3,
            T0,
            4,
            8,
            0,
            {
                "ProcessID": 7040,
                "ProcessSequenceNumber": 1234,
                "CreateTime": T0,
                "ParentProcessID": 812,
                "ParentProcessSequenceNumber": 99,
                "SessionID": 1,
                "Flags": 0,
                "ProcessTokenElevationType": 3,
                "ProcessTokenIsElevated": 0,
                "MandatoryLabel": "S-1-16-8192",
                "ImageName": PS_IMAGE,
                "ImageChecksum": 0,
                "TimeDateStamp": 0,
                "PackageFullName": "",
                "PackageRelativeAppId": "",
            },
        ),
        RawEvent(
            PROC,
            "Process",
            "Start",
            None,
            1,
            4,
            T0,
            4,
            8,
            1,
            {
                "UniqueProcessKey": 0xFFFFE0000AA1C080,
                "ProcessId": 7040,
                "ParentId": 812,
                "SessionId": 1,
                "ExitStatus": 259,
                "DirectoryTableBase": 0x1AB000,
                "Flags": 0,
                "UserSID": "S-1-5-21-1-2-3-1001",
                "ImageFileName": "powershell.exe",
                "CommandLine": "powershell -c GetAsyncKeyState — ünïcode",
                "PackageFullName": "",
                "ApplicationId": "",
            },
        ),
        RawEvent(
            KREG,
            "Microsoft-Windows-Kernel-Registry",
            "SetValueKey",
            5,
            None,
            0,
            T0,
            7040,
            9,
            0,
            {
                "KeyObject": 0xFFFF8001,
                "Status": 0,
                "Type": 2,
                "DataSize": 8,
                "KeyName": "",
                "ValueName": "ImagePath",
                "CapturedDataSize": 4,
                "CapturedData": b"\x00\xff\x10\x20",
                "PreviousDataType": 0,
                "PreviousDataSize": 0,
                "PreviousDataCapturedSize": 0,
                "PreviousData": b"",
            },
        ),
        RawEvent(PROC, "Process", "Start", None, 1, 9, T0, 4, 8, 1, {}, DecodeStatus.UNDECODED, b"\x01\x02"),
    ]


@pytest.mark.parametrize("name", ["r.jsonl", "r.jsonl.zst"])
def test_round_trip_gives_the_same_events(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    assert write_recording(path, HEADER, events()) == 4
    reader = RecordingReader(path)
    assert reader.header == HEADER
    assert list(reader.events()) == events()
    assert reader.damage == []
    totals = reader.stats.totals()
    assert totals == {"events": 4, "decode_errors": 0, "undecoded": 1, "other": 0}


def test_compressed_when_the_name_ends_in_zst(tmp_path: Path) -> None:
    write_recording(tmp_path / "r.jsonl.zst", HEADER, events())
    raw = (tmp_path / "r.jsonl.zst").read_bytes()
    assert raw[:4] == b"\x28\xb5\x2f\xfd"
    lines = zstandard.ZstdDecompressor().decompressobj().decompress(raw).splitlines()
    head = json.loads(lines[0])
    assert head["format"] == "etwsensor-recording" and head["version"] == 1
    assert head["device_map"] == {"\\Device\\HarddiskVolume3": "C:"}
    ev = json.loads(lines[3])
    assert ev["fields"]["CapturedData"] == "00ff1020"  # binary as lowercase hex
    assert json.loads(lines[1])["fields"]["CreateTime"] == "2026-04-16T09:30:00.123456Z"


def test_damaged_lines_are_counted_with_their_number(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    write_recording(path, HEADER, events())
    lines = path.read_text(encoding="utf-8").splitlines()
    lines.insert(2, '{"guid": "x", "provider": ')  # line 3: cut JSON
    lines.insert(4, '{"guid": "x"}')  # line 5: missing keys
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    reader = RecordingReader(path)
    got = list(reader.events())
    assert got == events()
    assert [d.where for d in reader.damage] == ["line 3", "line 5"]
    assert all(str(path) in str(d) for d in reader.damage)


def test_a_cut_compressed_recording_keeps_what_came_before(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl.zst"
    rng = random.Random(7)  # varied lines, so the stream has many compressed blocks to cut between
    many = []
    for i in range(3000):
        ev = copy.deepcopy(events()[1])
        ev.fields["ProcessId"] = i
        ev.fields["CommandLine"] = "".join(rng.choices(string.printable, k=200))
        many.append(ev)
    write_recording(path, HEADER, many)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    reader = RecordingReader(path)
    got = list(reader.events())
    assert 0 < len(got) < len(many)
    assert got == many[: len(got)]
    assert len(reader.damage) == 1 and "broken" in reader.damage[0].message


def test_not_a_recording(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text('{"format": "something-else"}\n')
    with pytest.raises(SourceOpenError, match=r"x\.jsonl: line 1 is not an etwsensor recording header"):
        open_source(path)
    with pytest.raises(SourceOpenError, match="no such file"):
        open_source(tmp_path / "missing.jsonl")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(min_value=0, max_value=4000), flips=st.lists(st.integers(0, 4000), max_size=5))
def test_damaged_bytes_never_raise_past_the_reader(tmp_path: Path, cut: int, flips: list[int]) -> None:
    path = tmp_path / "fuzz.jsonl.zst"
    write_recording(path, HEADER, events() * 20)
    data = bytearray(path.read_bytes())
    for i in flips:
        if i < len(data):
            data[i] ^= 0x5A
    path.write_bytes(bytes(data[: max(cut, 1)]))
    try:
        reader = RecordingReader(path)
    except ValueError:
        return  # header unreadable: a clear error at open, as documented
    for ev in reader.events():
        assert isinstance(ev, RawEvent)


def test_written_lines_follow_the_published_models(tmp_path: Path) -> None:
    from etwsensor.sources.recording import EventLine

    path = tmp_path / "r.jsonl"
    write_recording(path, HEADER, events())
    first, *rest = path.read_text(encoding="utf-8").splitlines()
    assert RecordingHeader.model_validate_json(first) == HEADER
    for line in rest:
        EventLine.model_validate_json(line)


def test_published_schemas_are_current() -> None:
    from etwsensor.schemas import published_schemas

    docs = Path(__file__).resolve().parents[2] / "docs"
    for name, schema in published_schemas().items():
        on_disk = json.loads((docs / name).read_text(encoding="utf-8"))
        assert on_disk == schema, f"docs/{name} is stale: run scripts/gen_schemas.py"
