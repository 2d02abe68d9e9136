#!/usr/bin/env python3
"""A dense .etl benchmark input: only the records etwsensor decodes, taken from a real trace.

    python scripts/dense_etl.py OUT.etl [--etl SRC.etl] [--copies N]

The perfview trace in tests/data/etl is 179,474 records of which ~4 % belong to providers the decoder
knows; a replay of it mostly measures skipping the others. This writes a trace of the same real record
bytes without them: the logfile header record once, then the decodable records (every GUID in
``Decoder().known_guids``, as ``EtlSource`` reads them) ``copies`` times. Each copy's timestamps are
moved to start ``GAP_SECONDS`` after the previous copy ends, so every CPU's stream stays in time order, the
reader's per-CPU merge sees the copies one after the other, and no alert of one copy is suppressed by
the same alert of the previous one (the default suppression window is 10 minutes): a replay gives
exactly ``copies`` times the decoded events, rows and alerts of one copy. Records keep their CPU: they are
packed in order into uncompressed fixed-size buffers (as a live logger writes them) whose headers are
copied from a real buffer of that CPU. The logfile header's EndTime and BuffersWritten are updated.
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from etwsensor.decode import Decoder  # noqa: E402
from etwsensor.sources import etl_layouts as L  # noqa: E402
from etwsensor.sources.etl import EtlReader  # noqa: E402
from etwsensor.sources.etl_xpress import decompress  # noqa: E402

PERFVIEW = ROOT / "tests" / "data" / "etl" / "perfview_net.4.5.2.x64.etl"
SLOT = 64 * 1024  # bytes per buffer in the file, header included
GAP_SECONDS = 601  # between two copies: past the alert suppression window (alerts.suppress.DEFAULT_WINDOW)

# WMI_BUFFER_HEADER fields written here (etl_layouts.BUFFER_HEADER unpacks the same ones).
BUFFER_SIZE_AT, SAVED_OFFSET_AT, OFFSET_AT, FLAGS_AT = 0x00, 0x04, 0x30, 0x34
U16, U32, I64 = struct.Struct("<H"), struct.Struct("<I"), struct.Struct("<q")


def field_offset(layout: struct.Struct, index: int) -> int:
    """Byte offset of the ``index``-th unpacked field of one of the reader's little-endian structs."""
    offset, seen, count = 0, 0, ""
    for ch in layout.format.lstrip("<"):
        if ch.isdigit():
            count += ch
            continue
        n, count = int(count or 1), ""
        if ch == "x":
            offset += n
            continue
        for _ in range(1 if ch == "s" else n):
            if seen == index:
                return offset
            seen += 1
            offset += n if ch == "s" else struct.calcsize(ch)
    raise IndexError(index)


@dataclass(frozen=True)
class ShapeFields:
    size_at: int
    ts_at: int
    guid_at: int | None  # None: a kernel hook id names the class


def fields_of(layout: struct.Struct, size: int, ts: int, guid: int | None = None) -> ShapeFields:
    return ShapeFields(
        field_offset(layout, size),
        field_offset(layout, ts),
        None if guid is None else field_offset(layout, guid),
    )


# Where each header shape keeps its Size, 64-bit timestamp and GUID, as fields of the reader's structs
# (KERNEL_HEADER: Version, Size, HookId, ThreadId, ProcessId, SystemTime; PERFINFO_HEADER: Version, Size,
# HookId, SystemTime; CLASSIC_HEADER: Size, Type, Version, ThreadId, ProcessId, TimeStamp, Guid;
# EVENT_HEADER: Size, Flags, ThreadId, ProcessId, TimeStamp, ProviderId, ...).
SHAPES: dict[L.Shape, ShapeFields] = {
    L.Shape.SYSTEM: fields_of(L.KERNEL_HEADER, 1, 5),
    L.Shape.COMPACT: fields_of(L.KERNEL_HEADER, 1, 5),
    L.Shape.PERFINFO: fields_of(L.PERFINFO_HEADER, 1, 3),
    L.Shape.FULL: fields_of(L.CLASSIC_HEADER, 0, 5, 6),
    L.Shape.INSTANCE: fields_of(L.CLASSIC_HEADER, 0, 5, 6),
    L.Shape.EVENT: fields_of(L.EVENT_HEADER, 0, 4, 5),
}
HOOK_AT = field_offset(L.KERNEL_HEADER, 2)  # HookId; the same place in PERFINFO_HEADER
assert [SHAPES[s].ts_at for s in (L.Shape.SYSTEM, L.Shape.PERFINFO, L.Shape.EVENT)] == [16, 8, 16]
assert field_offset(L.PERFINFO_HEADER, 2) == HOOK_AT == 6


@dataclass(frozen=True)
class Record:
    cpu: int
    raw: bytes  # the whole record, header included, unpadded
    layout: L.HeaderLayout
    ts: int


def source_buffers(raw: bytes) -> Iterator[tuple[bytes, bytes]]:
    """(72-byte header, decompressed records region) of every buffer of a trace, in file order."""
    offset = 0
    while offset < len(raw):
        head = raw[offset : offset + L.BUFFER_HEADER_SIZE]
        size, saved, _context, _filled, flags, _kind = L.BUFFER_HEADER.unpack(head)
        body = raw[offset + L.BUFFER_HEADER_SIZE : offset + size]
        wanted = saved - L.BUFFER_HEADER_SIZE
        yield head, decompress(body, wanted) if flags & L.BufferFlag.COMPRESSED else body[:wanted]
        offset += size


def cpu_of(head: bytes) -> int:
    _size, _saved, context, _filled, flags, _kind = L.BUFFER_HEADER.unpack(head)
    return context if flags & L.BufferFlag.PROC_INDEX else context & 0xFF


def guid_of(data: bytes, pos: int, layout: L.HeaderLayout) -> str:
    fields = SHAPES[layout.shape]
    if fields.guid_at is not None:
        return str(uuid.UUID(bytes_le=data[pos + fields.guid_at : pos + fields.guid_at + 16]))
    (hook,) = U16.unpack_from(data, pos + HOOK_AT)
    return L.KERNEL_HOOK_GUIDS.get(hook) or L.KERNEL_GROUP_GUIDS.get(hook >> 8, L.SYSTEM_TRACE_GUID)


def records_of(data: bytes, cpu: int) -> Iterator[Record]:
    """Every record of a buffer's records region; WPP messages are passed over (never decoded)."""
    pos = 0
    while pos + 4 <= len(data):
        (marker,) = U32.unpack_from(data, pos)
        if marker == L.PADDING_MARKER:
            return
        if marker & L.MARKER_FLAGS != L.MARKER_FLAGS:
            assert marker & L.MARKER_FLAGS == L.MESSAGE_FLAGS, f"unexpected marker {marker:#x}"
            pos += ((marker & 0xFFFF) + 7) & ~7
            continue
        layout = L.HEADER_LAYOUTS[(marker >> 16) & 0xFF]
        fields = SHAPES[layout.shape]
        (size,) = U16.unpack_from(data, pos + fields.size_at)
        (ts,) = I64.unpack_from(data, pos + fields.ts_at)
        yield Record(cpu, data[pos : pos + size], layout, ts)
        pos += (size + 7) & ~7


def shifted(rec: Record, delta: int) -> bytes:
    if not delta:
        return rec.raw
    out = bytearray(rec.raw)
    I64.pack_into(out, SHAPES[rec.layout.shape].ts_at, rec.ts + delta)
    return bytes(out)


class BufferWriter:
    """Packs each CPU's records, in order, into fixed-size uncompressed buffers; a buffer's place in
    the file is where it was started, so the logfile header's buffer is the first."""

    def __init__(self, templates: dict[int, bytes]) -> None:
        self.templates = templates
        self.buffers: list[bytearray] = []
        self.open: dict[int, bytearray] = {}

    def add(self, cpu: int, record: bytes) -> None:
        padded = record + b"\0" * (-len(record) % L.RECORD_ALIGNMENT)
        buf = self.open.get(cpu)
        if buf is None or len(buf) + len(padded) > SLOT:
            buf = self.open[cpu] = bytearray(self.templates[cpu])
            self.buffers.append(buf)
        buf += padded

    def finish(self) -> list[bytes]:
        out = []
        for buf in self.buffers:
            filled = len(buf)
            U32.pack_into(buf, BUFFER_SIZE_AT, SLOT)
            U32.pack_into(buf, SAVED_OFFSET_AT, filled)
            U32.pack_into(buf, OFFSET_AT, filled)
            (flags,) = U16.unpack_from(buf, FLAGS_AT)
            U16.pack_into(buf, FLAGS_AT, flags & ~L.BufferFlag.COMPRESSED)
            out.append(bytes(buf) + b"\xff" * (SLOT - filled))
        return out


def ticks_per_second(reader: EtlReader) -> int:
    h = reader.header
    if h.clock_type is L.ClockType.SYSTEM_TIME:
        return 10_000_000
    return h.perf_freq if h.clock_type is L.ClockType.QPC else h.cpu_speed_mhz * 1_000_000


def logfile_record(first: Record, end_shift_s: float, buffers: int) -> bytes:
    """The TRACE_LOGFILE_HEADER record with EndTime moved by ``end_shift_s`` and BuffersWritten set."""
    out = bytearray(first.raw)
    at = first.layout.size
    values = list(L.LOGFILE_HEAD.unpack_from(out, at))
    if values[4]:  # EndTime, a FILETIME (0: never written)
        values[4] += round(end_shift_s * 10_000_000)
    values[8] = buffers  # BuffersWritten
    L.LOGFILE_HEAD.pack_into(out, at, *values)
    return bytes(out)


def write_dense_etl(src: Path, dst: Path, copies: int) -> dict[str, object]:
    """Write the dense trace; returns what it holds."""
    reader = EtlReader(src)
    if reader.header.pointer_size != 8:
        raise SystemExit(f"{src}: only 64-bit traces are supported")
    known = Decoder().known_guids
    raw = src.read_bytes()
    templates: dict[int, bytes] = {}
    kept: list[Record] = []
    first: Record | None = None
    for head, data in source_buffers(raw):
        cpu = cpu_of(head)
        templates.setdefault(cpu, head)
        for rec in records_of(data, cpu):
            if first is None:
                first = rec  # the logfile header, always the first record of the file
                continue
            if guid_of(rec.raw, 0, rec.layout) in known:
                kept.append(rec)
    assert first is not None and kept, f"{src}: no decodable records"
    # whole seconds, so every copy's record times (to the microsecond) move by exactly the same amount
    freq = ticks_per_second(reader)
    span = max(r.ts for r in kept) - min(first.ts, *(r.ts for r in kept))
    shift = (-(-span // freq) + GAP_SECONDS) * freq
    writer = BufferWriter(templates)
    writer.add(first.cpu, first.raw)  # placeholder, rewritten below once the buffer count is known
    for k in range(copies):
        for rec in kept:
            writer.add(rec.cpu, shifted(rec, k * shift))
    buffers = writer.finish()
    header_record = logfile_record(first, (copies - 1) * shift / freq, len(buffers))
    at = L.BUFFER_HEADER_SIZE
    buffers[0] = buffers[0][:at] + header_record + buffers[0][at + len(header_record) :]
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(b"".join(buffers))
    return {
        "file": str(dst),
        "from": str(src),
        "copies": copies,
        "records_per_copy": len(kept),
        "records": 1 + copies * len(kept),
        "buffers": len(buffers),
        "bytes": SLOT * len(buffers),
        "copy_every_s": shift // freq,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--etl", type=Path, default=PERFVIEW, help="the real trace to take records from")
    ap.add_argument("--copies", type=int, default=28, help="times the decodable records are written")
    args = ap.parse_args()
    json.dump(write_dense_etl(args.etl, args.out, args.copies), sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
