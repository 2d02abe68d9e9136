""".etl reader: the real Windows 8 perfview trace against PerfView's own reading of it (its baseline),
and damaged copies of it (truncated, corrupted buffer and record sizes, random bit flips).

The trace's buffers are LZ77-compressed; an uncompressed rewrite of the same buffers (made here)
exercises the plain-buffer path and must read to the very same records.
"""

from __future__ import annotations

import json
import re
import struct
from collections import Counter
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from etwsensor.events import RawRecord
from etwsensor.sources import etl as etl_module
from etwsensor.sources.etl import EtlFormatError, EtlReader
from etwsensor.sources.etl_layouts import ClockType
from etwsensor.sources.etl_xpress import XpressError, decompress_python

DATA = Path(__file__).parents[1] / "data" / "etl"
ETL = DATA / "perfview_net.4.5.2.x64.etl"
BASELINE = DATA / "perfview_net.4.5.2.x64.baseline.json"

KERNEL_PROCESS = "22fb2cd6-0e7b-422b-a0c7-2fad1fd0e716"
KERNEL_FILE = "edd08927-9cc4-4e65-b970-c2560fb5c289"
KERNEL_EVENTTRACING = "b675ec37-bdb6-4648-bc92-f3fdc74d3ca2"
CLR = "e13c0d23-ccbc-4e12-931b-d9cc2eee27e4"
EVENT_TRACE = "68fdd900-4a3e-11d1-84f4-0000f80464e3"
PROCESS = "3d6fa8d0-fe05-11d0-9dda-00c04fd7ba7c"
THREAD = "3d6fa8d1-fe05-11d0-9dda-00c04fd7ba7c"
PAGE_FAULT = "3d6fa8d3-fe05-11d0-9dda-00c04fd7ba7c"
DISK_IO = "3d6fa8d4-fe05-11d0-9dda-00c04fd7ba7c"
IMAGE = "2cb15d1d-5fc1-11d2-abe1-00a0c911f518"
FILE_IO = "90cbdc39-4a3e-11d1-84f4-0000f80464e3"
TCP_IP = "9a280ac0-c8e0-11d1-84e2-00c04fb998a2"
UDP_IP = "bf3a50c5-a9c9-4988-a005-2df0b7c80f80"
SYSTEM_CONFIG = "01853a65-418f-4f36-aefc-dc0f1d2fd235"
SYSTEM_CONFIG_EX = "9b79ee91-b5fd-41c0-a243-4248e266e9d0"
KTC_METADATA = "bbccf6c1-6cd1-48c4-80ff-839482e37671"

# TraceEvent's type name -> (guid, manifest, id for manifest events / opcode for classic ones).
TYPES: dict[str, tuple[str, bool, int]] = {
    "Microsoft-Windows-Kernel-Process/ProcessStart/Start": (KERNEL_PROCESS, True, 1),
    "Microsoft-Windows-Kernel-Process/ProcessStop/Stop": (KERNEL_PROCESS, True, 2),
    "Microsoft-Windows-Kernel-File/Create": (KERNEL_FILE, True, 12),
    "Microsoft-Windows-Kernel-EventTracing/ETW_TASK_PROVIDER/ETW_OPCODE_REGISTER": (
        KERNEL_EVENTTRACING,
        True,
        8,
    ),
    "Microsoft-Windows-Kernel-EventTracing/ETW_TASK_PROVIDER/ETW_OPCODE_UNREGISTER": (
        KERNEL_EVENTTRACING,
        True,
        9,
    ),
    "Microsoft-Windows-Kernel-EventTracing/ETW_TASK_PROVIDER/ETW_OPCODE_ENABLE": (
        KERNEL_EVENTTRACING,
        True,
        14,
    ),
    "Microsoft-Windows-DotNETRuntime/GC/AllocationTick": (CLR, True, 10),
    "Windows Kernel/EventTrace": (EVENT_TRACE, False, 0),
    "Windows Kernel/EventTrace/Extension": (EVENT_TRACE, False, 5),
    "Windows Kernel/EventTrace/RundownComplete": (EVENT_TRACE, False, 8),
    "Windows Kernel/EventTrace/EndExtension": (EVENT_TRACE, False, 32),
    "Windows Kernel/Process/Start": (PROCESS, False, 1),
    "Windows Kernel/Process/Stop": (PROCESS, False, 2),
    "Windows Kernel/Process/DCStart": (PROCESS, False, 3),
    "Windows Kernel/Process/DCStop": (PROCESS, False, 4),
    "Windows Kernel/Process/Defunct": (PROCESS, False, 39),
    "Windows Kernel/Process/PerfCtr": (PROCESS, False, 32),
    "Windows Kernel/Process/PerfCtrRundown": (PROCESS, False, 33),
    "Windows Kernel/Image/Load": (IMAGE, False, 10),
    "Windows Kernel/Image/Unload": (IMAGE, False, 2),
    "Windows Kernel/Image/DCStart": (IMAGE, False, 3),
    "Windows Kernel/Image/DCStop": (IMAGE, False, 4),
    "Windows Kernel/Thread/Start": (THREAD, False, 1),
    "Windows Kernel/Thread/Stop": (THREAD, False, 2),
    "Windows Kernel/Memory/HardFault": (PAGE_FAULT, False, 32),
    "Windows Kernel/DiskIO/Read": (DISK_IO, False, 10),
    "Windows Kernel/DiskIO/Write": (DISK_IO, False, 11),
    "Windows Kernel/TcpIp/SendIPV6": (TCP_IP, False, 26),
    "Windows Kernel/TcpIp/RecvIPV6": (TCP_IP, False, 27),
    "Windows Kernel/UdpIp/Recv": (UDP_IP, False, 11),
    "Windows Kernel/SystemConfig/Services": (SYSTEM_CONFIG, False, 15),
    "Windows Kernel/SystemConfig/PnP": (SYSTEM_CONFIG, False, 22),
    "Windows Kernel/SystemConfig/IDEChannel": (SYSTEM_CONFIG, False, 23),  # SYSTEM32 headers in an x64 trace
    "Windows Kernel/SysConfig/SystemPaths": (SYSTEM_CONFIG_EX, False, 33),
    "Windows Kernel/SysConfig/VolumeMapping": (SYSTEM_CONFIG_EX, False, 35),
    "Windows Kernel/SysConfig/UnknownVolume": (SYSTEM_CONFIG_EX, False, 34),
    "Windows Kernel/SysConfig/BuildInfo": (SYSTEM_CONFIG_EX, False, 32),
    "KernelTraceControl/MetaData/EventInfo": (KTC_METADATA, False, 32),
}

# Types whose header PID/TID TraceEvent shows as they are (it rewrites them for classic process and
# thread events from their payloads, and for events of threads it has not seen start).
HEADER_IDENTITY = {
    "Microsoft-Windows-Kernel-Process/ProcessStart/Start",
    "Microsoft-Windows-Kernel-Process/ProcessStop/Stop",
    "Microsoft-Windows-Kernel-File/Create",
    "Windows Kernel/Image/Load",
    "Windows Kernel/EventTrace",
}

EVENT_LINE = re.compile(r"^EVENT (?P<ms>[\d,]+\.\d+): (?P<type>.+?) PID=(?P<rest>.*)$")


def key(rec: RawRecord) -> tuple[str, bool, int]:
    return rec.guid, rec.manifest, rec.id if rec.manifest else rec.opcode


@cache
def baseline() -> tuple[list[tuple[float, str, dict[str, str]]], dict[str, int]]:
    events: list[tuple[float, str, dict[str, str]]] = []
    counts: dict[str, int] = {}
    for line in json.loads(BASELINE.read_text(encoding="utf-8"))["lines"]:
        if line.startswith("COUNT "):
            name, n = line[6:].rsplit(":", 1)
            counts[name] = int(n)
        elif m := EVENT_LINE.match(line):
            rest = "PID=" + m["rest"]
            fields = dict(kv.split("=", 1) for kv in rest.rstrip("; ").split("; ") if "=" in kv)
            events.append((float(m["ms"].replace(",", "")), m["type"], fields))
    return events, counts


@cache
def full_read(ordered: bool = True) -> tuple[EtlReader, tuple[RawRecord, ...]]:
    reader = EtlReader(ETL)
    return reader, tuple(reader.records(ordered=ordered))


def file_order() -> tuple[RawRecord, ...]:
    return full_read(ordered=False)[1]


def number(text: str) -> int:
    return int(text.replace(",", ""))


def rel_ms(reader: EtlReader, rec: RawRecord) -> float:
    return (rec.ts - reader.header.start_time).total_seconds() * 1000


# --- header -----------------------------------------------------------------------------------------


def test_header_matches_perfview() -> None:
    reader = EtlReader(ETL)
    h = reader.header
    events, _ = baseline()
    ms, name, f = events[0]
    assert (ms, name) == (0.0, "Windows Kernel/EventTrace")
    assert h.buffer_size == number(f["BufferSize"])
    assert h.version == number(f["Version"])
    assert h.os_build == number(f["ProviderVersion"])
    assert h.number_of_processors == number(f["NumberOfProcessors"])
    assert h.timer_resolution == number(f["TimerResolution"])
    assert h.max_file_size == number(f["MaxFileSize"])
    assert h.log_file_mode == number(f["LogFileMode"])
    assert h.buffers_written == number(f["BuffersWritten"])
    assert h.pointer_size == number(f["PointerSize"])
    assert h.events_lost == number(f["EventsLost"])
    assert h.cpu_speed_mhz == number(f["CPUSpeed"])
    assert h.perf_freq == number(f["PerfFreq"])
    assert h.clock_type == number(f["ReservedFlags"]) == ClockType.QPC
    assert h.buffers_lost == number(f["BuffersLost"])
    assert h.logger_name == f["SessionName"]
    assert h.log_file_name == f["LogFileName"]
    assert h.time_zone_bias == number(f["UtcOffsetMinutes"])
    # TraceEvent prints "yy/MM/dd HH:mm:ss.ff..." cut after two decimals.
    for ours, theirs in ((h.start_time, "StartTime"), (h.end_time, "EndTime"), (h.boot_time, "BootTime")):
        assert ours is not None and ours.tzinfo is UTC
        assert f[theirs].endswith("...")
        assert ours.strftime("%y/%m/%d %H:%M:%S.%f")[:20] == f[theirs][:-3]
    assert h.os_version == "6.2"  # Windows 8: Version bytes 06 02 ...


# --- records ----------------------------------------------------------------------------------------


def test_record_counts_match_perfview() -> None:
    _, records = full_read()
    counts = Counter(key(r) for r in records)
    _, expected = baseline()
    for name, k in TYPES.items():
        assert counts[k] == expected[name], name


def test_classic_fileio_name_records() -> None:
    # Not in PerfView's baseline; the counts come from the trace (FileIo rundown of the FileObject cache).
    _, records = full_read()
    counts = Counter(key(r) for r in records)
    assert counts[(FILE_IO, False, 36)] == 3054  # FileRundown
    assert counts[(FILE_IO, False, 32)] == 16  # FileCreate (name record)
    assert counts[(FILE_IO, False, 35)] == 14  # FileDelete (name record going away)


def test_first_events_match_perfview_time_size_cpu_and_ids() -> None:
    """PerfView's first EVENT lines of each type against ours, sorted by time the way it merges CPUs."""
    reader, records = full_read()
    by_type: dict[tuple[str, bool, int], list[RawRecord]] = {}
    for rec in records:
        by_type.setdefault(key(rec), []).append(rec)
    seen: Counter[str] = Counter()
    checked = 0
    for ms, name, f in baseline()[0]:
        if name not in TYPES:
            continue
        ours = sorted(by_type[TYPES[name]], key=lambda r: r.ts)[seen[name]]
        seen[name] += 1
        where = f"{name} at {ms}"
        # PerfView clamps the few records stamped just before the header to 0.000.
        assert max(rel_ms(reader, ours), 0.0) == pytest.approx(ms, abs=0.0011), where
        assert len(ours.payload) == number(f["DataLen"]), where
        assert ours.cpu == number(f["ProceNum"]), where
        if name in HEADER_IDENTITY:
            assert (ours.pid, ours.tid) == (number(f["PID"]), number(f["TID"])), where
        checked += 1
    assert checked >= 60


def test_payload_starts_after_extended_data() -> None:
    # Kernel-File Create records carry a stack-trace extended item; the payload must start after it.
    _, records = full_read()
    creates = sorted((r for r in records if key(r) == (KERNEL_FILE, True, 12)), key=lambda r: r.ts)
    irp, file_object = struct.unpack_from("<QQ", creates[0].payload)
    assert (irp, file_object) == (0xFFFFFA830393A3E8, 0xFFFFFA83004BDA90)  # baseline's first Create
    start = next(r for r in records if key(r) == (KERNEL_PROCESS, True, 1))
    assert struct.unpack_from("<I", start.payload)[0] == 3676  # ProcessID of the baseline's ProcessStart


def test_volume_mapping_payloads() -> None:
    _, records = full_read()
    mappings = [r for r in records if key(r) == (SYSTEM_CONFIG_EX, False, 35)]
    pairs = [tuple(r.payload.decode("utf-16-le").split("\0")[:2]) for r in mappings]
    assert pairs[:2] == [("\\??\\", ""), ("\\SystemRoot\\", "C:\\Windows\\")]
    assert ("\\Device\\CdRom0\\", "D:\\") in pairs


def test_pointer_size_per_record() -> None:
    # A 64-bit trace holds 32-bit records too (PerfView's own CLR events, KernelTraceControl metadata).
    _, records = full_read()
    sizes = Counter((r.guid, r.pointer_size) for r in records if r.guid in (CLR, KTC_METADATA, PROCESS))
    assert sizes[(CLR, 4)] > 0 and sizes[(CLR, 8)] > 0
    assert sizes[(KTC_METADATA, 4)] > 0
    assert sizes[(PROCESS, 4)] == 0


def test_ordered_records_are_the_file_records_sorted_by_time() -> None:
    _, ordered = full_read()
    records = file_order()
    assert sorted(records, key=lambda r: (r.ts, r.cpu)) == list(ordered)
    assert ordered != records  # per-CPU buffers interleave out of time order in the file
    assert ordered[0].guid == EVENT_TRACE and ordered[0].opcode == 0


def test_stats_and_no_damage_on_the_real_trace() -> None:
    reader, records = full_read()
    assert reader.damage == []
    assert reader.stats.records == len(records)
    assert set(reader.stats.by_header_kind) == {
        "system32",
        "system64",
        "perfinfo64",
        "full32",
        "full64",
        "event32",
        "event64",
    }
    assert reader.stats.buffers == reader.header.buffers_written
    assert reader.stats.compressed_buffers == reader.stats.buffers - 1  # all but the header buffer
    assert all(r.ts.tzinfo is UTC for r in records[:1000])
    # SampledProfile records have PERFINFO headers, which carry no pid/tid: ETW's ULONG -1 stands in.
    samples = [r for r in records if (r.guid, r.opcode) == ("ce1dbfb4-137e-4da6-87b0-3f59aa102cbc", 46)]
    assert samples and all(r.pid == r.tid == 0xFFFFFFFF for r in samples)


# --- the plain (uncompressed) buffer path and damage ------------------------------------------------

BUFFER = struct.Struct("<II")  # BufferSize, SavedOffset
FLAGS_AT = 0x34
COMPRESSED = 0x40


def buffers_of(raw: bytes) -> list[tuple[int, int]]:
    """(offset, size) of every buffer."""
    out = []
    offset = 0
    while offset < len(raw):
        size, _ = BUFFER.unpack_from(raw, offset)
        out.append((offset, size))
        offset += size
    return out


def uncompressed(raw: bytes, slot: int = 65536) -> bytes:
    """The same trace with every buffer decompressed into a fixed-size slot, as a live logger writes."""
    out = bytearray()
    for offset, size in buffers_of(raw):
        head = bytearray(raw[offset : offset + 72])
        _, saved = BUFFER.unpack_from(head)
        (flags,) = struct.unpack_from("<H", head, FLAGS_AT)
        body = raw[offset + 72 : offset + size]
        if flags & COMPRESSED:
            body = decompress_python(body, saved - 72)
            struct.pack_into("<H", head, FLAGS_AT, flags & ~COMPRESSED)
        length = max(slot, 72 + len(body))
        struct.pack_into("<I", head, 0, length)
        out += head + body + b"\xff" * (length - 72 - len(body))
    return bytes(out)


@pytest.fixture(scope="module")
def plain_etl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("etl") / "plain.etl"
    path.write_bytes(uncompressed(ETL.read_bytes()))
    return path


def read(path: Path, ordered: bool = False) -> tuple[EtlReader, list[RawRecord]]:
    """File order by default: damage tests compare prefixes of the file's record sequence."""
    reader = EtlReader(path)
    return reader, list(reader.records(ordered=ordered))


def test_uncompressed_rewrite_reads_the_same_records(plain_etl: Path) -> None:
    reader, records = read(plain_etl)
    assert reader.damage == []
    assert reader.stats.compressed_buffers == 0
    assert tuple(records) == file_order()


def test_pure_python_decompression_gives_the_same_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without the optional libfwnt-python the reader falls back to the pure-Python decoder.
    monkeypatch.setattr(etl_module, "decompress", decompress_python)
    path = tmp_path / "prefix.etl"
    path.write_bytes(small_trace())
    reader, records = read(path)
    assert reader.damage == []
    assert len(records) > 1000
    assert tuple(records) == file_order()[: len(records)]


def test_truncated_inside_a_compressed_buffer(tmp_path: Path) -> None:
    raw = ETL.read_bytes()
    offset, size = buffers_of(raw)[40]
    path = tmp_path / "cut.etl"
    path.write_bytes(raw[: offset + size // 2])
    reader, records = read(path)
    full = file_order()
    assert tuple(records) == full[: len(records)]
    before = len(read_prefix(tmp_path, raw[:offset]))
    assert before < len(records) < len(full)  # the decodable half of buffer 40 is delivered too
    assert reader.damage and all(d.path == str(path) for d in reader.damage)
    assert offset <= reader.damage[0].offset <= offset + size // 2
    assert "file ends inside a buffer" in reader.damage[0].message


def read_prefix(tmp_path: Path, data: bytes) -> list[RawRecord]:
    path = tmp_path / "prefix.etl"
    path.write_bytes(data)
    return read(path)[1]


def test_truncated_inside_a_record(tmp_path: Path, plain_etl: Path) -> None:
    raw = plain_etl.read_bytes()
    offset, _ = buffers_of(raw)[25]
    cut = offset + 72 + 20_003  # not on an 8-byte record boundary: inside a record
    path = tmp_path / "cut.etl"
    path.write_bytes(raw[:cut])
    reader, records = read(path)
    full = file_order()
    before = read_prefix(tmp_path, raw[:offset])
    assert tuple(records) == full[: len(records)]
    assert len(before) < len(records)
    messages = [d.message for d in reader.damage]
    assert any("record cut off" in m for m in messages), messages
    cut_damage = next(d for d in reader.damage if "record cut off" in d.message)
    assert offset + 72 <= cut_damage.offset < cut <= cut_damage.offset + 65536
    assert cut_damage.path == str(path)


def test_corrupted_buffer_size_skips_that_buffer(tmp_path: Path, plain_etl: Path) -> None:
    raw = bytearray(plain_etl.read_bytes())
    offset, _ = buffers_of(bytes(raw))[30]
    struct.pack_into("<I", raw, offset, 0x7FFFFFF0)
    path = tmp_path / "bad-size.etl"
    path.write_bytes(raw)
    reader, records = read(path)
    full = file_order()
    lost = lost_block(records, full)
    assert lost > 0
    assert reader.damage[0].offset == offset
    assert "invalid buffer size" in reader.damage[0].message
    assert reader.stats.buffers == reader.header.buffers_written - 1


def test_corrupted_buffer_size_in_a_compressed_trace_keeps_what_came_before(tmp_path: Path) -> None:
    raw = bytearray(ETL.read_bytes())
    offset, _ = buffers_of(bytes(raw))[50]
    struct.pack_into("<I", raw, offset, 3)
    path = tmp_path / "bad-size.etl"
    path.write_bytes(raw)
    reader, records = read(path)
    assert tuple(records) == file_order()[: len(records)]
    assert len(records) == len(read_prefix(tmp_path, bytes(raw[:offset])))
    assert reader.damage[0].offset == offset and reader.damage[0].path == str(path)


def test_corrupted_record_size_skips_the_rest_of_its_buffer(tmp_path: Path, plain_etl: Path) -> None:
    raw = bytearray(plain_etl.read_bytes())
    offset, _ = buffers_of(bytes(raw))[60]
    record = offset + 72
    (marker,) = struct.unpack_from("<I", raw, record)
    htype = (marker >> 16) & 0xFF
    size_at = 4 if htype in (1, 2, 3, 4, 16, 17) else 0  # kernel headers keep Size after Version
    struct.pack_into("<H", raw, record + size_at, 0xFFF8)
    path = tmp_path / "bad-record.etl"
    path.write_bytes(raw)
    reader, records = read(path)
    lost = lost_block(records, file_order())
    assert lost > 0
    assert [d.offset for d in reader.damage] == [record]
    assert "record size 65528 is invalid" in reader.damage[0].message
    assert reader.stats.buffers == reader.header.buffers_written  # only that buffer's rest is lost


def lost_block(records: list[RawRecord], full: tuple[RawRecord, ...]) -> int:
    """Checks that ``records`` is ``full`` less one contiguous block; returns the block's length."""
    first_diff = next(
        (i for i, (a, b) in enumerate(zip(records, full, strict=False)) if a != b), len(records)
    )
    lost = len(full) - len(records)
    assert tuple(records[first_diff:]) == full[first_diff + lost :]
    return lost


def test_corrupt_extended_data_skips_only_that_record(tmp_path: Path, plain_etl: Path) -> None:
    raw = bytearray(plain_etl.read_bytes())
    needle = bytes.fromhex("2789d0edc49c654eb970c2560fb5c289")  # Kernel-File GUID as stored (bytes_le)
    # The first EVENT_HEADER64 record with extended data whose provider is Kernel-File (the GUID also
    # appears inside Kernel-EventTracing payloads).
    at = raw.index(needle) - 24
    while raw[at + 2 : at + 4] != b"\x13\xc0" or not raw[at + 4] & 1:
        at = raw.index(needle, at + 25) - 24
    struct.pack_into("<H", raw, at + 80, 4)  # first extended item's size < its own header
    path = tmp_path / "bad-ext.etl"
    path.write_bytes(raw)
    reader, records = read(path)
    assert lost_block(records, file_order()) == 1
    assert [d.offset for d in reader.damage] == [at]
    assert reader.stats.skipped_records == 1


# --- not an .etl ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [b"", b"MZ\x90\x00" + b"\x00" * 200, b'{"format": "etwsensor-recording"}\n', bytes(range(256)) * 4],
)
def test_not_an_etl_file_raises_naming_it(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x.etl"
    path.write_bytes(content)
    with pytest.raises(EtlFormatError, match=re.escape(str(path))):
        EtlReader(path)


def test_missing_file_raises_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "missing.etl"
    with pytest.raises(EtlFormatError, match=re.escape(str(path))):
        EtlReader(path)


# --- decompressor -----------------------------------------------------------------------------------


def test_python_decompressor_matches_libfwnt_on_the_real_buffers() -> None:
    pyfwnt = pytest.importorskip("pyfwnt")
    raw = ETL.read_bytes()
    for offset, size in buffers_of(raw)[1:40]:
        _, saved = BUFFER.unpack_from(raw, offset)
        body = raw[offset + 72 : offset + size]
        assert decompress_python(body, saved - 72) == pyfwnt.lzxpress_decompress(body, saved - 72)


def test_python_decompressor_known_streams() -> None:
    # MS-XCA §3.1 example: "abcdefghijklmnopqrstuvwxyz" as literals (flags 0x3f ff ff ff: 26 literals).
    literals = bytes.fromhex("3f000000") + b"abcdefghijklmnopqrstuvwxyz"
    assert decompress_python(literals, 26) == b"abcdefghijklmnopqrstuvwxyz"
    # MS-XCA §3.2 example: "abc" then a 297-byte overlapping match at distance 3.
    # flags, "abc", token 0x0017 (distance 3, length 7: extended), nibble 15, byte 255, u16 0x0126.
    repeated = bytes.fromhex("ffffff1f 616263 1700 0f ff 2601")
    assert decompress_python(repeated, 300) == b"abc" * 100
    with pytest.raises(XpressError):
        decompress_python(bytes.fromhex("feffffff") + b"\x18\x00", 10)  # match before any output


# --- fuzzing: nothing but EtlFormatError at open, nothing at all while reading ----------------------


@cache
def small_trace() -> bytes:
    raw = ETL.read_bytes()
    offset, size = buffers_of(raw)[4]
    return raw[: offset + size]  # header buffer and four compressed buffers


@cache
def small_plain_trace() -> bytes:
    return uncompressed(small_trace(), slot=0)


def read_all_or_format_error(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "fuzz.etl"
    path.write_bytes(data)
    try:
        reader = EtlReader(path)
    except EtlFormatError:
        return
    records = list(reader.records())
    for rec in records:
        assert isinstance(rec.ts, datetime) and isinstance(rec.payload, bytes)
    for damage in reader.damage:
        assert damage.path == str(path) and 0 <= damage.offset <= len(data)
    # A GUID filter delivers the same records of those GUIDs and finds the same damage. (In file
    # order: merging per-CPU streams whose damaged timestamps went backwards depends on what is merged.)
    damage, read = list(reader.damage), reader.stats.records
    only = {FILE_IO, KERNEL_PROCESS, PROCESS}
    assert len(list(reader.records(only=only))) == sum(r.guid in only for r in records)
    assert sorted(map(str, reader.damage)) == sorted(map(str, damage)) and reader.stats.records == read
    in_file_order = list(reader.records(ordered=False))
    damage = list(reader.damage)
    assert list(reader.records(ordered=False, only=only)) == [r for r in in_file_order if r.guid in only]
    assert reader.damage == damage and reader.stats.records == read
    assert reader.stats.passed_over == passed_over_of(in_file_order, only)


def passed_over_of(records: list[RawRecord], only: set[str]) -> dict[tuple[str, bool, int, int], int]:
    """What a filter's ``stats.passed_over`` must say: the left-out records as they would have been built."""
    return dict(Counter((*key(r), r.version) for r in records if r.guid not in only))


FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(data=st.binary(max_size=4096))
def test_fuzz_random_bytes(tmp_path: Path, data: bytes) -> None:
    read_all_or_format_error(tmp_path, data)


@FUZZ
@given(cut=st.integers(min_value=0, max_value=200_000), plain=st.booleans())
def test_fuzz_truncations(tmp_path: Path, cut: int, plain: bool) -> None:
    data = small_plain_trace() if plain else small_trace()
    read_all_or_format_error(tmp_path, data[: cut % (len(data) + 1)])


@FUZZ
@given(
    flips=st.lists(st.tuples(st.integers(min_value=0), st.integers(min_value=0, max_value=7)), max_size=8),
    plain=st.booleans(),
)
def test_fuzz_bit_flips(tmp_path: Path, flips: list[tuple[int, int]], plain: bool) -> None:
    data = bytearray(small_plain_trace() if plain else small_trace())
    for at, bit in flips:
        data[at % len(data)] ^= 1 << bit
    read_all_or_format_error(tmp_path, bytes(data))


@FUZZ
@given(
    at=st.integers(min_value=0, max_value=2000), value=st.binary(min_size=1, max_size=8), plain=st.booleans()
)
def test_fuzz_header_region_overwrites(tmp_path: Path, at: int, value: bytes, plain: bool) -> None:
    # Bit flips rarely land in the headers; overwrite bytes where the buffer and record headers are.
    data = bytearray(small_plain_trace() if plain else small_trace())
    data[at : at + len(value)] = value
    read_all_or_format_error(tmp_path, bytes(data))


# --- every header kind and clock type, on hand-built files ------------------------------------------
# Layouts written out here independently of etl_layouts (the real trace checks those for the kinds
# it has; these cover compact, instance, perfinfo32, WPP messages, unknown kinds and other clocks).

START_FT = 132_404_548_206_236_160  # 2020-07-29 00:07:00.623616 UTC as a FILETIME
START = datetime(2020, 7, 29, 0, 7, 0, 623616, tzinfo=UTC)
GUID_A = "11223344-5566-7788-99aa-bbccddeeff00"
GUID_B = "0badf00d-0000-4000-8000-000000000001"


def guid_le(text: str) -> bytes:
    import uuid

    return uuid.UUID(text).bytes_le


def align8(record: bytes) -> bytes:
    return record + b"\0" * (-len(record) % 8)


def kernel_record(htype: int, hook: int, payload: bytes, ts: int, tid: int = 7, pid: int = 9) -> bytes:
    header = {1: 32, 2: 32, 3: 24, 4: 24, 0x10: 16, 0x11: 16}[htype]
    size = header + len(payload)
    if header == 16:
        head = struct.pack("<HBBHHq", 2, htype, 0xC0, size, hook, ts)
    else:
        head = struct.pack("<HBBHHIIq", 3, htype, 0xC0, size, hook, tid, pid, ts)
        head += b"\0" * (header - len(head))  # KernelTime, UserTime
    return align8(head + payload)


def logfile_record(
    pointer_size: int, clock: int, ts: int, perf_freq: int = 10_000_000, mhz: int = 2000
) -> bytes:
    fixed, tz, tail = (280, 72, 248) if pointer_size == 8 else (272, 64, 240)
    body = bytearray(fixed)
    struct.pack_into(
        "<IIIIqIIIIIIII", body, 0, 4096, 0x0A00000A, 19045, 4, 0, 156250, 0, 1, 3, 1, pointer_size, 5, mhz
    )
    struct.pack_into("<i", body, tz, -60)
    struct.pack_into("<qqqII", body, tail, START_FT - 10**9, perf_freq, START_FT, clock, 2)
    body += "Test Logger\0".encode("utf-16-le") + "C:\\t.etl\0".encode("utf-16-le")
    htype = 2 if pointer_size == 8 else 1
    return kernel_record(htype, 0x0000, bytes(body), ts, tid=11, pid=22)


def buffer(records: bytes, cpu: int = 0, size: int = 4096) -> bytes:
    saved = 72 + len(records)
    head = struct.pack("<II32xBxH4xIHH16x", size, saved, cpu, 0, saved, 0x0001, 0)
    return head + records + b"\xff" * (size - saved)


def event_record(ts: int, payload: bytes, items: list[tuple[int, bytes]], htype: int = 0x13) -> bytes:
    ext = b""
    for i, (ext_type, data) in enumerate(items):
        item_size = 8 + len(align8(data))
        ext += struct.pack("<HHHH", item_size, ext_type, int(i < len(items) - 1), len(data)) + align8(data)
    flags = 0x0001 if items else 0
    size = 80 + len(ext) + len(payload)
    head = struct.pack("<HBBHHIIq", size, htype, 0xC0, flags, 0, 33, 44, ts)
    head += guid_le(GUID_B) + struct.pack("<HBBBBHQ", 1001, 2, 0, 4, 0, 0, 0) + b"\0" * 24
    return align8(head + ext + payload)


def classic_record(htype: int, ts: int, opcode: int, payload: bytes) -> bytes:
    header = 48 if htype in (0x0A, 0x14) else 72
    head = struct.pack("<HBBBBHIIq", header + len(payload), htype, 0xC0, opcode, 4, 5, 55, 66, ts)
    head += guid_le(GUID_A)
    return align8(head + b"\0" * (header - len(head)) + payload)


def test_every_header_kind(tmp_path: Path) -> None:
    t0 = 5_000_000
    records = [
        kernel_record(1, 0x0301, b"P32", t0 + 100),  # SYSTEM32 Process Start
        kernel_record(4, 0x0502, b"T64", t0 + 200),  # COMPACT64 Thread End
        kernel_record(3, 0x030A, b"I32", t0 + 250),  # COMPACT32 Image Load (Process group hook)
        kernel_record(0x10, 0x0F2E, b"S", t0 + 300),  # PERFINFO32 SampledProfile
        classic_record(0x0A, t0 + 400, 7, b"F32"),  # EVENT_TRACE_HEADER, 32-bit
        classic_record(0x15, t0 + 500, 9, b"I64"),  # EVENT_INSTANCE_GUID_HEADER, 64-bit
        event_record(t0 + 600, b"payload!", [(1, b"r" * 16), (6, b"s" * 20)]),
        event_record(t0 + 700, b"no-ext", [], htype=0x12),
        align8(struct.pack("<HBBHH", 16, 0, 0x80, 1, 0) + b"wppdata!"),  # WPP message: skipped
        kernel_record(2, 0x1F01, b"?", t0 + 800),  # group 0x1F: no class known
    ]
    unknown_at = sum(len(r) for r in records)
    records += [
        align8(struct.pack("<HBB", 24, 0x0C, 0xC0) + b"\0" * 20),
        kernel_record(2, 0x0301, b"lost", t0),
    ]
    data = buffer(logfile_record(8, 1, t0)) + buffer(b"".join(records), cpu=3)
    path = tmp_path / "kinds.etl"
    path.write_bytes(data)
    reader, got = read(path)
    h = reader.header
    assert (h.pointer_size, h.clock_type, h.start_time, h.time_zone_bias) == (8, ClockType.QPC, START, -60)
    assert (h.logger_name, h.log_file_name, h.os_version, h.os_build) == (
        "Test Logger",
        "C:\\t.etl",
        "10.0",
        19045,
    )
    assert (h.buffers_written, h.events_lost, h.buffers_lost, h.cpu_speed_mhz) == (3, 5, 2, 2000)
    summary = [
        (r.guid, r.manifest, r.id, r.opcode, r.version, r.pid, r.tid, r.cpu, r.pointer_size, r.payload)
        for r in got
    ]
    assert summary == [
        (EVENT_TRACE, False, 0, 0, 3, 22, 11, 0, 8, summary[0][-1]),
        (PROCESS, False, 0, 1, 3, 9, 7, 3, 4, b"P32"),
        (THREAD, False, 0, 2, 3, 9, 7, 3, 8, b"T64"),
        (IMAGE, False, 0, 10, 3, 9, 7, 3, 4, b"I32"),
        ("ce1dbfb4-137e-4da6-87b0-3f59aa102cbc", False, 0, 46, 2, 0xFFFFFFFF, 0xFFFFFFFF, 3, 4, b"S"),
        (GUID_A, False, 0, 7, 5, 66, 55, 3, 4, b"F32"),
        (GUID_A, False, 0, 9, 5, 66, 55, 3, 8, b"I64"),
        (GUID_B, True, 1001, 0, 2, 44, 33, 3, 8, b"payload!"),
        (GUID_B, True, 1001, 0, 2, 44, 33, 3, 4, b"no-ext"),
        ("9e814aad-3204-11d2-9a82-006008a86939", False, 0, 1, 3, 9, 7, 3, 8, b"?"),
    ]
    assert [(r.ts - START) // timedelta(microseconds=1) for r in got] == [
        0,
        10,
        20,
        25,
        30,
        40,
        50,
        60,
        70,
        80,
    ]
    assert reader.stats.by_header_kind == {
        "system64": 2,
        "system32": 1,
        "compact64": 1,
        "compact32": 1,
        "perfinfo32": 1,
        "full32": 1,
        "instance64": 1,
        "event64": 1,
        "event32": 1,
    }
    assert reader.stats.skipped_records == 1 and reader.stats.unknown_groups == {0x1F: 1}
    assert [(d.offset, "unknown record header" in d.message) for d in reader.damage] == [
        (4096 + 72 + unknown_at, True)
    ]


@pytest.mark.parametrize(("clock", "pointer_size"), [(2, 8), (3, 4)])
def test_system_time_and_cycle_clocks(tmp_path: Path, clock: int, pointer_size: int) -> None:
    if clock == 2:  # timestamps are FILETIMEs
        t0, later = START_FT, START_FT + 12_345_670
    else:  # CPU cycles at CpuSpeedInMHz = 2000
        t0, later = 10**12, 10**12 + 2000 * 1_234_567
    records = kernel_record(2, 0x0301, b"x", later)
    path = tmp_path / "clock.etl"
    path.write_bytes(buffer(logfile_record(pointer_size, clock, t0)) + buffer(records))
    reader, got = read(path)
    assert reader.header.clock_type == clock and reader.header.pointer_size == pointer_size
    assert got[0].ts == START
    assert (got[1].ts - START).total_seconds() == pytest.approx(1.234567, abs=1e-6)


def test_a_guid_filter_delivers_those_records_and_counts_the_others() -> None:
    _, everything = full_read()
    reader = EtlReader(ETL)
    only = {KERNEL_PROCESS, IMAGE, SYSTEM_CONFIG}
    kept = tuple(reader.records(only=only))
    assert kept == tuple(r for r in everything if r.guid in only)
    assert reader.stats.records == len(everything) and reader.damage == []
    others = Counter(
        (r.guid, r.manifest, r.id if r.manifest else r.opcode, r.version)
        for r in everything
        if r.guid not in only
    )
    assert reader.stats.passed_over == dict(others)


def test_the_etl_source_counts_what_it_does_not_build_as_the_decoder_would() -> None:
    from etwsensor.decode.decoder import Decoder
    from etwsensor.sources.etl_source import EtlSource

    decoder = Decoder()
    events = [ev for rec in EtlReader(ETL).records() if (ev := decoder.decode(rec)) is not None]
    source = EtlSource(ETL)
    assert list(source.events()) == events
    assert source.stats.as_json() == decoder.stats.as_json()
    assert source.stats.totals()["other"] > 170_000  # the CLR, stack and sample records of this trace


@settings(max_examples=300, deadline=None)
@given(
    ref_raw=st.integers(min_value=0, max_value=1 << 62),
    freq=st.integers(min_value=1, max_value=10**10),
    offset_days=st.integers(min_value=-800_000, max_value=3_000_000),
    nudge=st.integers(min_value=-3, max_value=3),
)
def test_the_raw_timestamp_range_is_exactly_where_a_time_exists(
    ref_raw: int, freq: int, offset_days: int, nudge: int
) -> None:
    ref_time = datetime(2020, 7, 29, tzinfo=UTC)
    clock = etl_module._Clock(ref_raw, ref_time, freq)
    low, high = clock.raw_range()

    def makes_a_time(raw: int) -> bool:
        try:
            ref_time + timedelta(microseconds=1) * clock.micros(raw)
        except OverflowError:
            return False
        return True

    for raw in (low - 1 + nudge, low + nudge, high + nudge, high + 1 + nudge):
        assert makes_a_time(raw) == (low <= raw <= high)
    raw = ref_raw + offset_days * 86_400 * freq + nudge
    assert makes_a_time(raw) == (low <= raw <= high)


# --- looking ahead for one class's records (the host name) ------------------------------------------


def _class_records(guid: str, opcode: int) -> list[RawRecord]:
    return [r for r in file_order() if (r.guid, r.opcode, r.manifest) == (guid, opcode, False)]


@pytest.mark.parametrize(
    ("guid", "opcode"),
    [
        (SYSTEM_CONFIG, 10),  # the CPU record: kernel SYSTEM64 header, hook 0x0B0A
        (SYSTEM_CONFIG, 15),  # Services: 157 of them
        (IMAGE, 10),  # Image Load: logged under a Process-group hook (0x030A)
        (PROCESS, 3),  # DCStart
        (SYSTEM_CONFIG_EX, 35),  # VolumeMapping: classic FULL64 headers carrying the class GUID
    ],
)
def test_the_class_look_ahead_finds_what_a_full_walk_finds(guid: str, opcode: int) -> None:
    expected = _class_records(guid, opcode)
    assert expected
    assert list(EtlReader(ETL).head_class_records(1000, guid, opcode)) == expected


def test_the_class_look_ahead_walks_only_buffers_that_can_hold_the_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    walked: list[int] = []
    real = EtlReader._walk

    def counted(self: EtlReader, buffer: object, only: object = None) -> object:
        walked.append(buffer.file_offset)  # type: ignore[attr-defined]
        return real(self, buffer, only)  # type: ignore[arg-type]

    monkeypatch.setattr(EtlReader, "_walk", counted)
    reader = EtlReader(ETL)
    assert list(reader.head_class_records(184, SYSTEM_CONFIG, 10)) == []  # it is in the 185th buffer
    found = list(reader.head_class_records(185, SYSTEM_CONFIG, 10))
    assert found == _class_records(SYSTEM_CONFIG, 10) and len(found) == 1
    assert len(walked) == 1  # of the 369 buffers read by both, only the one holding it was walked


def _cpu_record() -> RawRecord:
    (cpu,) = _class_records(SYSTEM_CONFIG, 10)
    return cpu


def _system64(version: int, hook: int, payload: bytes, ts: int) -> bytes:
    head = struct.pack("<HBBHHIIq", version, 2, 0xC0, 32 + len(payload), hook, 0, 0, ts) + b"\0" * 8
    return align8(head + payload)


def _full64(guid: str, opcode: int, version: int, payload: bytes, ts: int) -> bytes:
    head = struct.pack("<HBBBBHIIq", 48 + len(payload), 0x14, 0xC0, opcode, 0, version, 0, 0, ts)
    return align8(head + guid_le(guid) + b"\0" * 8 + payload)


def _host_trace(tmp_path: Path, *buffers_of_records: bytes) -> Path:
    t0 = 5_000_000
    path = tmp_path / "host.etl"
    data = buffer(logfile_record(8, 1, t0)) + b"".join(
        buffer(r, cpu=1, size=8192) for r in buffers_of_records
    )
    path.write_bytes(data)
    return path


def _decoy(t0: int) -> bytes:
    # A sample whose payload holds what a SystemConfig CPU header starts with, 8-aligned: the look
    # ahead walks that buffer and finds no such record in it.
    fake_header = struct.pack("<HBBHH", 3, 2, 0xC0, 64, 0x0B0A)
    return kernel_record(0x11, 0x0F2E, b"\0" * 8 + fake_header + b"\0" * 24, t0 + 10)


@pytest.mark.parametrize("form", ["kernel", "classic"])
def test_the_host_name_is_found_behind_a_decoy_in_either_header_form(tmp_path: Path, form: str) -> None:
    from etwsensor.enrich.device import etl_host_name
    from etwsensor.sources.etl_source import EtlSource

    cpu = _cpu_record()
    t0 = 5_000_000
    if form == "kernel":
        record = _system64(cpu.version, 0x0B0A, cpu.payload, t0 + 20)
    else:
        record = _full64(SYSTEM_CONFIG, 10, cpu.version, cpu.payload, t0 + 20)
    other_class = kernel_record(2, 0x0A0A, b"\0" * 32, t0 + 15)  # DbgPrint group, opcode 10: not it
    path = _host_trace(tmp_path, _decoy(t0), other_class + record)
    assert etl_host_name(EtlReader(path)) == "BRIANROB-W8"
    assert EtlSource(path).header.host.name == "BRIANROB-W8"


def test_a_trace_without_the_cpu_record_has_no_host_name_and_still_replays(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from etwsensor.cli import app
    from etwsensor.sources.etl_source import EtlSource

    path = _host_trace(tmp_path, _decoy(5_000_000))
    source = EtlSource(path)
    assert (source.header.host.name, source.header.host.device_id) == ("", "")
    assert list(source.events()) == [] and source.damage == []
    result = CliRunner().invoke(app, ["replay", str(path), "--json-summary"])
    assert result.exit_code == 0, result.output


# --- passing over the records a filter leaves out ----------------------------------------------------


def _perfinfo(hook: int, ts: int, payload: bytes = b"12345678", version: int = 2) -> bytes:
    return align8(struct.pack("<HBBHHq", version, 0x11, 0xC0, 16 + len(payload), hook, ts) + payload)


def _event(guid: str, ts: int, event_id: int, version: int, htype: int = 0x13, ext: bool = False) -> bytes:
    items = align8(struct.pack("<HHHH", 16, 1, 0, 8) + b"extended") if ext else b""
    size = 80 + len(items) + 4
    head = struct.pack("<HBBHHIIq", size, htype, 0xC0, int(ext), 0, 33, 44, ts)
    head += guid_le(guid) + struct.pack("<HBBBBHQ", event_id, version, 0, 4, 0, 0, 0) + b"\0" * 24
    return align8(head + items + b"data")


def test_records_passed_over_are_counted_and_checked_as_the_full_path_would(tmp_path: Path) -> None:
    # Repeats of the same header marks take the reader's quick way past them; each kind of oddity
    # in a repeat (time out of range, a record cut off, an unknown group, extended data) must still
    # be counted and reported exactly as when every record is built.
    t0 = 5_000_000
    far = -(2**63) + 1  # a raw timestamp no datetime has
    first = [
        _perfinfo(0x0F2E, t0 + 1),
        _perfinfo(0x0F2E, t0 + 2),
        _perfinfo(0x0F2E, t0 + 3, version=3),  # another version: counted apart
        _perfinfo(0x1820, t0 + 4, b"stack" * 5),
        _event(GUID_B, t0 + 5, 7, 1),
        _event(GUID_B, t0 + 6, 7, 1),
        _event(GUID_B, t0 + 7, 8, 1, htype=0x12),
        _event(GUID_B, t0 + 8, 7, 1, ext=True),
        _event(GUID_A, t0 + 9, 1, 0),  # kept
        _perfinfo(0x0F2E, far),  # out of range: reported, still counted
        _event(GUID_B, far, 7, 1),
        kernel_record(0x11, 0x1F01, b"?", t0 + 10),  # no class known for group 0x1F: counted each time
        kernel_record(0x11, 0x1F01, b"?", t0 + 11),
        _event(GUID_B, t0 + 12, 7, 1),
        _perfinfo(0x0F2E, t0 + 13),
    ]
    cut = _perfinfo(0x0F2E, t0 + 14)  # runs past the end of the data the buffer holds
    second = [_perfinfo(0x0F2E, t0 + 20), _event(GUID_B, t0 + 21, 7, 1), cut[:8] + struct.pack("<q", t0)]
    path = tmp_path / "passing.etl"
    records = (
        buffer(logfile_record(8, 1, t0)) + buffer(b"".join(first), cpu=0) + buffer(b"".join(second), cpu=1)
    )
    path.write_bytes(records)

    reader = EtlReader(path)
    everything = list(reader.records(ordered=False))
    damage, kinds, unknown = (
        list(map(str, reader.damage)),
        reader.stats.by_header_kind,
        reader.stats.unknown_groups,
    )
    assert len(damage) == 3  # two timestamps, one cut record
    only = {GUID_A}
    kept = list(reader.records(ordered=False, only=only))
    assert [r.guid for r in kept] == [GUID_A]
    assert list(map(str, reader.damage)) == damage
    assert reader.stats.by_header_kind == kinds and reader.stats.unknown_groups == unknown == {0x1F: 2}
    assert reader.stats.passed_over == passed_over_of(everything, only)
    assert reader.stats.passed_over[(GUID_B, True, 7, 1)] == 6
    assert reader.stats.passed_over[("ce1dbfb4-137e-4da6-87b0-3f59aa102cbc", False, 0x2E, 2)] == 5
    assert reader.stats.records == len(everything)
    # Another filter starts afresh: the records the first read learned to pass over are kept now.
    assert list(reader.records(ordered=False, only={GUID_B})) == [r for r in everything if r.guid == GUID_B]
    assert len([r for r in everything if r.guid == GUID_B]) == 7
    assert reader.stats.passed_over == passed_over_of(everything, {GUID_B})
