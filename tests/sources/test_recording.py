"""Recordings: JSON Lines (+zstd) round trip, damaged lines counted, not raised."""

from __future__ import annotations

import copy
import io
import itertools
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
            guid=KPROC,
            provider="Microsoft-Windows-Kernel-Process",
            name="ProcessStart",
            id=1,
            opcode=None,
            version=3,
            ts=T0,
            pid=4,
            tid=8,
            cpu=0,
            fields={
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
            guid=PROC,
            provider="Process",
            name="Start",
            id=None,
            opcode=1,
            version=4,
            ts=T0,
            pid=4,
            tid=8,
            cpu=1,
            fields={
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
            guid=KREG,
            provider="Microsoft-Windows-Kernel-Registry",
            name="SetValueKey",
            id=5,
            opcode=None,
            version=0,
            ts=T0,
            pid=7040,
            tid=9,
            cpu=0,
            fields={
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
        RawEvent(
            guid=PROC,
            provider="Process",
            name="Start",
            id=None,
            opcode=1,
            version=9,
            ts=T0,
            pid=4,
            tid=8,
            cpu=1,
            fields={},
            status=DecodeStatus.UNDECODED,
            payload=b"\x01\x02",
        ),
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
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(raw), read_across_frames=True)
    lines = reader.read().splitlines()
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


# --- the block decoder: lines are decoded ~256 KB at a time, damaged blocks line by line -------------


def _many(n: int) -> list[RawEvent]:
    out = []
    for i in range(n):
        ev = copy.deepcopy(events()[i % 3])  # the three OK events; the raw-payload one is added apart
        ev.fields = {**ev.fields, "Seq": i}
        out.append(ev)
    return out


@pytest.mark.parametrize("name", ["big.jsonl", "big.jsonl.zst"])
def test_damage_deep_in_a_long_recording_keeps_its_line_number_and_the_rest(
    tmp_path: Path, name: str
) -> None:
    good = _many(6000)  # ~2.5 MB of lines: many blocks
    path = tmp_path / "plain.jsonl"
    write_recording(path, HEADER, good)
    lines = path.read_text(encoding="utf-8").splitlines()
    lines.insert(4500, '{"guid": "x", "provider": ')  # line 4501: cut JSON, deep in a later block
    # line 5201: a second copy of event 5198 (line 5201 before the insert) with a time without a zone,
    # which the lenient path reads as UTC; line 5202: not JSON
    lines.insert(5200, lines[5200].replace("Z", "", 1))
    lines.insert(5201, lines[5202].replace('"pid":', '"pid":"x",', 1))
    text = ("\n".join(lines) + "\n").encode()
    target = tmp_path / name
    target.write_bytes(zstandard.ZstdCompressor().compress(text) if name.endswith(".zst") else text)
    reader = RecordingReader(target)
    got = list(reader.events())
    assert [d.where for d in reader.damage] == ["line 4501", "line 5202"]
    assert got == [*good[:5199], good[5198], *good[5199:]]
    assert reader.stats.totals()["events"] == len(good) + 1


def test_a_raw_payload_line_in_a_long_recording(tmp_path: Path) -> None:
    undecoded = events()[3]
    many = _many(3000)
    many.insert(1700, undecoded)
    path = tmp_path / "r.jsonl.zst"
    write_recording(path, HEADER, many)
    reader = RecordingReader(path)
    assert list(reader.events()) == many
    assert reader.damage == []
    assert reader.stats.totals()["undecoded"] == 1


@settings(max_examples=200, deadline=None)
@given(
    data=st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=40).map(
        lambda ls: b"\n".join(ls)
    ),
    size=st.integers(min_value=1, max_value=64),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=6),
)
def test_whole_lines_recuts_without_losing_or_splitting_a_line(
    data: bytes, size: int, cuts: list[int]
) -> None:
    from etwsensor.sources.recording import _whole_lines

    points = sorted({c for c in cuts if c < len(data)} | {0, len(data)})
    chunks = [data[a:b] for a, b in itertools.pairwise(points)]
    pieces = list(_whole_lines(iter(chunks), size))
    assert b"".join(pieces) == data
    assert all(p.endswith(b"\n") for p in pieces[:-1])
    assert all(p for p in pieces)


@pytest.mark.parametrize("name", ["long.jsonl", "long.jsonl.zst"])
def test_lines_longer_than_a_block_are_read(tmp_path: Path, name: str) -> None:
    huge = copy.deepcopy(events()[1])
    huge.fields["CommandLine"] = "x" * 600_000  # the first block then holds the header alone
    many = [huge, *_many(10), huge]
    path = tmp_path / name
    write_recording(path, HEADER, many)
    reader = RecordingReader(path)
    assert list(reader.events()) == many
    assert reader.damage == []


@pytest.mark.parametrize("name", ["p.jsonl", "p.jsonl.zst"])
def test_raw_payloads_of_every_length_read_back_in_a_long_recording(tmp_path: Path, name: str) -> None:
    """The block decoder reads hex payloads as base64 when they happen to be valid base64 (hex text of
    4k characters): they must come back as the same bytes; the others go the line-by-line way."""
    undecoded = events()[3]
    many = _many(1200)
    for i, size in enumerate(range(0, 9)):  # hex lengths 0, 2, 4 … 16
        raw = copy.deepcopy(undecoded)
        raw.payload = bytes(range(200, 200 + size))
        many.insert(100 * (i + 1), raw)
    path = tmp_path / name
    write_recording(path, HEADER, many)
    reader = RecordingReader(path)
    assert list(reader.events()) == many
    assert reader.damage == []
    assert reader.stats.totals()["undecoded"] == 9


def test_a_payload_that_is_not_hex_is_damage_on_its_line_and_one_beside_ok_is_dropped(tmp_path: Path) -> None:
    good = _many(1500)
    path = tmp_path / "r.jsonl"
    write_recording(path, HEADER, good)
    lines = path.read_text(encoding="utf-8").splitlines()
    undecoded = json.loads(lines[1])
    undecoded.update(status="undecoded", payload="zzzz")  # valid base64, not hex
    lines.insert(1000, json.dumps(undecoded))  # line 1001
    lines[1200] = lines[1200][:-1] + ', "payload": "00ff"}'  # status ok: the payload is not kept
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    reader = RecordingReader(path)
    got = list(reader.events())
    assert [d.where for d in reader.damage] == ["line 1001"]
    assert got == good
    assert all(ev.payload is None for ev in got)
