"""Read Windows .etl trace files on any OS into RawRecords.

An .etl file is a sequence of buffers (WMI_BUFFER_HEADER + records, optionally LZ77-compressed);
each record starts with one of the header kinds of ``etl_layouts``. The first record of the first
buffer is the TRACE_LOGFILE_HEADER, which gives the pointer size and the clock needed to turn record
timestamps into UTC. Payloads are handed on undecoded: the payload decoder (providers/ data) owns
their meaning.

Damage never raises past this API once the file is open: a bad buffer or record is recorded in
``EtlReader.damage`` (file, byte offset, message), every record before it is still delivered, and
reading resumes at the next buffer.

    reader = EtlReader("trace.etl")        # EtlFormatError if it is not an .etl file
    for record in reader.records():
        ...
    reader.damage, reader.stats
"""

from __future__ import annotations

import heapq
import os
from collections import Counter
from collections.abc import Container, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from operator import attrgetter
from typing import BinaryIO, Final

from etwsensor.events import RawRecord
from etwsensor.sources import etl_layouts as L
from etwsensor.sources.etl_xpress import XpressError, decompress

_FILETIME_EPOCH: Final = datetime(1601, 1, 1, tzinfo=UTC)
_DATETIME_MIN: Final = datetime.min.replace(tzinfo=UTC)
_DATETIME_MAX: Final = datetime.max.replace(tzinfo=UTC)
_ONE_MICROSECOND: Final = timedelta(microseconds=1)  # multiplying it is ~2x cheaper than timedelta()

# Header type byte -> (shape, header size, pointer size, stats name); SYSTEM and COMPACT share a shape.
_KINDS: Final[list[tuple[L.Shape, int, int, str] | None]] = [None] * 256
for _htype, _layout in L.HEADER_LAYOUTS.items():
    _shape = L.Shape.SYSTEM if _layout.shape is L.Shape.COMPACT else _layout.shape
    _KINDS[_htype] = (_shape, _layout.size, _layout.pointer_size, _layout.name)
_HOOK_SHAPES: Final = (L.Shape.SYSTEM, L.Shape.COMPACT, L.Shape.PERFINFO)  # headers with a HookId, no GUID


class EtlFormatError(ValueError):
    """The file is not a readable .etl trace (raised only when the reader is opened)."""


@dataclass(frozen=True, slots=True)
class EtlDamage:
    """One damaged spot: what was skipped and where. ``offset`` is a byte offset in the file."""

    path: str
    offset: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}: offset {self.offset}: {self.message}"


@dataclass(frozen=True, slots=True)
class EtlHeader:
    """TRACE_LOGFILE_HEADER: the first record of every .etl file."""

    pointer_size: int  # 4 or 8: the logger's (records carry their own in their header kind)
    start_time: datetime  # UTC; record timestamps are relative to it
    end_time: datetime | None  # UTC; None when the logger never wrote it (0) or it is out of range
    boot_time: datetime | None
    perf_freq: int  # QPC ticks per second
    clock_type: L.ClockType  # ReservedFlags
    buffer_size: int  # bytes, as configured (compressed buffers are shorter in the file)
    buffers_written: int
    buffers_lost: int
    events_lost: int
    number_of_processors: int
    version: int  # raw Version field: OS major, minor, sub, subminor in bytes 0..3
    os_version: str  # "major.minor" from Version
    os_build: int  # ProviderVersion: the OS build number
    cpu_speed_mhz: int
    timer_resolution: int  # 100 ns units
    max_file_size: int  # MB
    log_file_mode: int  # EVENT_TRACE_*_MODE flags
    logger_name: str
    log_file_name: str
    time_zone_bias: int  # minutes; UTC = local time + bias
    start_timestamp: int  # the header record's raw timestamp, the clock value at start_time


@dataclass(slots=True)
class EtlStats:
    """What reading saw so far; filled as ``records()`` goes."""

    by_header_kind: dict[str, int] = field(default_factory=dict)  # "system64", "event32", ...
    buffers: int = 0
    compressed_buffers: int = 0
    skipped_records: int = 0  # WPP messages and records with corrupt extended data
    skipped_bytes: int = 0  # bytes of buffers or buffer tails given up on after damage
    unknown_groups: dict[int, int] = field(default_factory=dict)  # kernel group -> records
    # Records of GUIDs a ``records(only=…)`` filter left out, never built: (guid, manifest, id for
    # manifest events or opcode for classic ones, version) -> records
    passed_over: dict[tuple[str, bool, int, int], int] = field(default_factory=dict)

    @property
    def records(self) -> int:
        """Records read: delivered, or counted in ``passed_over``."""
        return sum(self.by_header_kind.values())


@dataclass(frozen=True, slots=True)
class _Clock:
    """Raw record timestamp -> UTC: ``ref_time + (raw - ref_raw) / freq`` seconds, to the nearest µs."""

    ref_raw: int
    ref_time: datetime
    freq: int

    def micros(self, raw: int) -> int:
        """µs from ``ref_time`` to the raw timestamp, to the nearest (as the reader computes it)."""
        return ((raw - self.ref_raw) * 2_000_000 + self.freq) // (2 * self.freq)

    def raw_range(self) -> tuple[int, int]:
        """The lowest and highest raw timestamps whose time is a datetime (``micros`` is monotonic:
        the bounds solve ``micros(raw) >= lowest`` and ``micros(raw) <= highest`` exactly)."""
        one_us = _ONE_MICROSECOND
        lowest = (_DATETIME_MIN - self.ref_time) // one_us
        highest = (_DATETIME_MAX - self.ref_time) // one_us
        two_freq = 2 * self.freq
        # micros >= lowest  <=>  (raw - ref) * 2e6 >= lowest * 2f - f  <=>  raw >= ref + ceil(that / 2e6)
        low = self.ref_raw - ((self.freq - lowest * two_freq) // 2_000_000)
        # micros <= highest  <=>  (raw - ref) * 2e6 + f < (highest + 1) * 2f  <=>  raw <= ref + ceil(…) - 1
        high = self.ref_raw - ((self.freq - (highest + 1) * two_freq) // 2_000_000) - 1
        return low, high


def _filetime(value: int) -> datetime | None:
    if value <= 0:
        return None
    try:
        return _FILETIME_EPOCH + timedelta(microseconds=value // 10)
    except OverflowError:
        return None


def _utf16z(data: bytes, start: int) -> tuple[str, int]:
    """A NUL-terminated UTF-16LE string at ``start``: (text, offset after the NUL)."""
    end = start
    while end + 1 < len(data) and (data[end] or data[end + 1]):
        end += 2
    return data[start:end].decode("utf-16-le", errors="replace"), end + 2


def _parse_header(path: str, pointer_size: int, raw_ts: int, payload: bytes) -> EtlHeader:
    layout = L.LOGFILE_LAYOUTS[pointer_size]
    if len(payload) < layout.size:
        raise EtlFormatError(f"{path}: logfile header is {len(payload)} bytes, expected {layout.size}")
    (
        buffer_size,
        version,
        provider_version,
        processors,
        end_time,
        timer_resolution,
        max_file_size,
        log_file_mode,
        buffers_written,
        _start_buffers,
        _pointer_size_field,
        events_lost,
        cpu_speed,
    ) = L.LOGFILE_HEAD.unpack_from(payload, 0)
    (bias,) = L.TIME_ZONE_BIAS.unpack_from(payload, layout.time_zone)
    boot_time, perf_freq, start_time, reserved_flags, buffers_lost = L.LOGFILE_TAIL.unpack_from(
        payload, layout.tail
    )
    start = _filetime(start_time)
    if start is None:
        raise EtlFormatError(f"{path}: logfile header has no valid StartTime ({start_time})")
    try:
        clock_type = L.ClockType(reserved_flags)
    except ValueError:
        raise EtlFormatError(f"{path}: unknown clock type {reserved_flags} in the logfile header") from None
    if clock_type is L.ClockType.QPC and perf_freq <= 0:
        raise EtlFormatError(f"{path}: logfile header has no performance frequency")
    if clock_type is L.ClockType.CPU_CYCLES and cpu_speed <= 0:
        raise EtlFormatError(f"{path}: logfile header has no CPU speed for its cycle clock")
    logger_name, after = _utf16z(payload, layout.size)
    log_file_name, _ = _utf16z(payload, after)
    return EtlHeader(
        pointer_size=pointer_size,
        start_time=start,
        end_time=_filetime(end_time),
        boot_time=_filetime(boot_time),
        perf_freq=perf_freq,
        clock_type=clock_type,
        buffer_size=buffer_size,
        buffers_written=buffers_written,
        buffers_lost=buffers_lost,
        events_lost=events_lost,
        number_of_processors=processors,
        version=version,
        os_version=f"{version & 0xFF}.{(version >> 8) & 0xFF}",
        os_build=provider_version,
        cpu_speed_mhz=cpu_speed,
        timer_resolution=timer_resolution,
        max_file_size=max_file_size,
        log_file_mode=log_file_mode,
        logger_name=logger_name,
        log_file_name=log_file_name,
        time_zone_bias=bias,
        start_timestamp=raw_ts,
    )


class _ClassRecordMarks:
    """What every record header of a classic class and opcode holds: the class GUID (FULL and
    INSTANCE headers), or, in a kernel header (SYSTEM, COMPACT, PERFINFO), a HookId that maps to the
    class, four bytes after the marker's type and flags bytes. Payload bytes can hold them too: such a
    buffer is then walked to find out. Searched with ``bytes.find``, which is many times faster than a
    regular expression that starts with a byte class."""

    def __init__(self, guid: str, opcode: int) -> None:
        raw = bytes.fromhex(guid.replace("-", ""))
        self.guid = raw[3::-1] + raw[5:3:-1] + raw[7:5:-1] + raw[8:]  # as the file holds it (see _guid)
        groups = [group for group, known in L.KERNEL_GROUP_GUIDS.items() if known == guid]
        if guid == L.SYSTEM_TRACE_GUID:  # what kernel groups without a known class are delivered as
            groups += [group for group in range(256) if group not in L.KERNEL_GROUP_GUIDS]
        hooks = {group << 8 | opcode for group in groups}
        hooks |= {
            hook for hook, known in L.KERNEL_HOOK_GUIDS.items() if known == guid and hook & 0xFF == opcode
        }
        self.hooks = [hook.to_bytes(2, "little") for hook in sorted(hooks)]
        self.kernel_types = frozenset(
            t for t, layout in L.HEADER_LAYOUTS.items() if layout.shape in _HOOK_SHAPES
        )

    def found_in(self, data: bytes, end: int) -> bool:
        if data.find(self.guid, 0, end) >= 0:
            return True
        for hook in self.hooks:
            at = data.find(hook, 6, end)
            while at >= 0:  # HookId at record offset 6, the marker's type at 2 and flags at 3
                if data[at - 4] in self.kernel_types and data[at - 3] & 0xC0 == 0xC0:
                    return True
                at = data.find(hook, at + 1, end)
        return False


def _clock_for(header: EtlHeader) -> _Clock:
    if header.clock_type is L.ClockType.SYSTEM_TIME:
        # Timestamps are FILETIMEs already.
        return _Clock(0, _FILETIME_EPOCH, 10_000_000)
    freq = header.perf_freq if header.clock_type is L.ClockType.QPC else header.cpu_speed_mhz * 1_000_000
    return _Clock(header.start_timestamp, header.start_time, freq)


@dataclass(slots=True)
class _PassingOver:
    """What a ``records(only=…)`` filter was seen to leave out, learned from the records the full path
    passed over, so later records with the same header marks are passed over with a few operations
    (they are counted in one list per buffer, folded into the stats at the buffer's end)."""

    only: Container[str]
    perfinfo: set[int] = field(default_factory=set)  # first 8 bytes, Size masked: type, version, hook
    # EVENT_HEADER type and Flags (no extended data) -> header type << 32, for the record's mark
    event_heads: dict[int, int] = field(default_factory=dict)
    # provider GUID as the file holds it -> its place in ``guids`` << 40, for the record's mark
    event_guids: dict[bytes, int] = field(default_factory=dict)
    guids: list[str] = field(default_factory=list)

    def learn_event(self, head: int, htype: int, guid_bytes: bytes, guid: str) -> None:
        self.event_heads[head >> L.HEAD_EVENT_SHIFT] = htype << 32
        if guid_bytes not in self.event_guids:
            self.event_guids[guid_bytes] = len(self.guids) << 40
            self.guids.append(guid)


@dataclass(frozen=True, slots=True)
class _Buffer:
    """One buffer's records region (header stripped, decompressed) and where it came from."""

    file_offset: int
    length: int  # bytes in the file, header included: the next buffer starts after them
    data: bytes
    filled: int  # bytes of records in data
    cpu: int
    compressed: bool
    truncated: bool  # the file or the compressed stream ended before the buffer did

    def where(self, pos: int) -> tuple[int, str]:
        """File offset of a position in ``data``, and a note for compressed buffers, whose
        decompressed positions have no file offset (the buffer's own is given)."""
        if self.compressed:
            return self.file_offset, f" (byte {pos} of the decompressed buffer)"
        return self.file_offset + L.BUFFER_HEADER_SIZE + pos, ""


class EtlReader:
    """A .etl file: ``header`` at open, then ``records()``; ``damage`` and ``stats`` fill as it reads."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(path)
        self.damage: list[EtlDamage] = []
        self.stats = EtlStats()
        self._hook_guids: dict[int, str] = dict(L.KERNEL_HOOK_GUIDS)
        self._guid_text: dict[bytes, str] = {}
        self._passing: _PassingOver | None = None
        try:
            with open(self.path, "rb") as fh:
                first = self._read_buffer(fh, 0, record_damage=False)
        except OSError as exc:
            raise EtlFormatError(f"{self.path}: cannot read: {exc.strerror or exc}") from exc
        if isinstance(first, str):
            raise EtlFormatError(f"{self.path}: not an .etl file: {first}")
        self.header = self._header_from(first)
        self._clock = _clock_for(self.header)

    # --- opening -------------------------------------------------------------------------------------

    def _header_from(self, first: _Buffer) -> EtlHeader:
        data = first.data
        if first.filled < 4:
            raise EtlFormatError(f"{self.path}: not an .etl file: the first buffer holds no record")
        (marker,) = L.MARKER.unpack_from(data, 0)
        layout = L.HEADER_LAYOUTS.get((marker >> 16) & 0xFF)
        if (
            marker & L.MARKER_FLAGS != L.MARKER_FLAGS
            or layout is None
            or layout.shape is not L.Shape.SYSTEM
            or first.filled < layout.size
        ):
            raise EtlFormatError(
                f"{self.path}: not an .etl file: first record (marker {marker:#010x}) is not a logfile header"
            )
        _version, size, hook, _tid, _pid, raw_ts = L.KERNEL_HEADER.unpack_from(data, 0)
        if hook != L.LOGFILE_HEADER_HOOK or not layout.size <= size <= first.filled:
            raise EtlFormatError(f"{self.path}: not an .etl file: first record is not a logfile header")
        return _parse_header(self.path, layout.pointer_size, raw_ts, bytes(data[layout.size : size]))

    @staticmethod
    def _buffer_header(head: bytes) -> tuple[int, int, int, int] | str:
        """(size, saved, cpu, flags) of a buffer header, or why it is unusable."""
        if len(head) < L.BUFFER_HEADER_SIZE:
            return f"truncated buffer header ({len(head)} of {L.BUFFER_HEADER_SIZE} bytes)"
        size, saved, context, _filled, flags, _kind = L.BUFFER_HEADER.unpack(head)
        if not L.BUFFER_HEADER_SIZE <= size <= L.MAX_BUFFER_SIZE:
            return f"invalid buffer size {size}"
        if not L.BUFFER_HEADER_SIZE <= saved <= L.MAX_BUFFER_SIZE:
            return f"invalid filled size {saved}"
        cpu = context if flags & L.BufferFlag.PROC_INDEX else context & 0xFF
        return size, saved, cpu, flags

    def _read_buffer(self, fh: BinaryIO, offset: int, record_damage: bool = True) -> _Buffer | str:
        """The buffer at ``offset``, or why its header is unusable."""
        fh.seek(offset)
        parsed = self._buffer_header(fh.read(L.BUFFER_HEADER_SIZE))
        if isinstance(parsed, str):
            return parsed
        size, saved, cpu, flags = parsed
        body = fh.read(size - L.BUFFER_HEADER_SIZE)
        truncated = len(body) < size - L.BUFFER_HEADER_SIZE
        if truncated and record_damage:
            self._damage(
                offset + L.BUFFER_HEADER_SIZE + len(body),
                f"file ends inside a buffer ({len(body) + L.BUFFER_HEADER_SIZE} of {size} bytes)",
            )
        compressed = bool(flags & L.BufferFlag.COMPRESSED)
        wanted = saved - L.BUFFER_HEADER_SIZE
        if compressed:
            try:
                data = decompress(body, wanted)
            except XpressError as exc:
                data = b""
                if record_damage:
                    self._damage(offset, f"compressed buffer is corrupt ({exc})")
            if len(data) < wanted:
                if record_damage and not truncated:
                    self._damage(offset, f"compressed buffer decodes to {len(data)} of {wanted} bytes")
                truncated = True
        else:
            if saved > size and record_damage:
                self._damage(offset, f"filled size {saved} exceeds the buffer size {size}")
            data = body
        return _Buffer(offset, size, data, min(wanted, len(data)), cpu, compressed, truncated)

    def _damage(self, offset: int, message: str) -> None:
        self.damage.append(EtlDamage(self.path, offset, message))

    def _record_damage(self, buffer: _Buffer, pos: int, message: str) -> None:
        offset, note = buffer.where(pos)
        self._damage(offset, message + note)

    # --- reading -------------------------------------------------------------------------------------

    def records(self, ordered: bool = True, only: Container[str] | None = None) -> Iterator[RawRecord]:
        """Every record of the file.

        ``ordered``: by timestamp, merging the per-CPU buffer streams as ETW's ProcessTrace does, so
        a stateful consumer sees rundowns and starts before what refers to them. ``False``: in file
        order (buffers of different CPUs interleave out of time order), which is a little faster.
        ``only``: deliver only the records of these provider/class GUIDs; the others are counted in
        ``stats.passed_over`` without being built (a trace of a profiler is mostly samples, stacks and
        CLR events no decoder here reads). Damage is found and reported the same either way.
        Each call reads the file anew and starts ``damage`` and ``stats`` afresh.
        """
        self.damage.clear()
        self.stats = EtlStats()
        self._passing = None
        try:
            fh = open(self.path, "rb")  # noqa: SIM115 - closed in the finally below, across yields
        except OSError as exc:
            self._damage(0, f"cannot open: {exc.strerror or exc}")
            return
        try:
            try:
                buffers = self._buffer_offsets(fh)
            except OSError as exc:
                self._damage(0, f"read error while listing buffers: {exc.strerror or exc}")
                return
            if not ordered:
                for offset, _cpu in buffers:
                    yield from self._buffer_records(fh, offset, only)
                return
            by_cpu: dict[int, list[int]] = {}
            for offset, cpu in buffers:
                by_cpu.setdefault(cpu, []).append(offset)
            streams = [self._stream(fh, offsets, only) for _, offsets in sorted(by_cpu.items())]
            yield from heapq.merge(*streams, key=attrgetter("ts"))
        finally:
            fh.close()

    def head_class_records(self, buffers: int, guid: str, opcode: int) -> Iterator[RawRecord]:
        """The classic records of one class GUID and opcode among the first ``buffers`` buffers, in file
        order: a bounded look ahead before ``records()`` (which starts ``damage`` and ``stats`` afresh).
        A buffer is walked only if its bytes hold what such a record's header must (the class GUID,
        or a kernel header mark followed by a hook of that class and opcode), so looking for one rare
        record costs little more than reading the buffers."""
        marks = _ClassRecordMarks(guid, opcode)
        try:
            with open(self.path, "rb") as fh:
                for offset, _cpu in self._buffer_offsets(fh)[:buffers]:
                    buffer = self._read_buffer(fh, offset, record_damage=False)
                    if isinstance(buffer, str) or not marks.found_in(buffer.data, buffer.filled):
                        continue
                    try:
                        found = [r for r in self._walk(buffer, only=(guid,)) if r.opcode == opcode]
                    except Exception:  # as in records(): a defect here must not end the file
                        continue
                    yield from (r for r in found if r.guid == guid and not r.manifest)
        except OSError:
            return

    def _stream(self, fh: BinaryIO, offsets: list[int], only: Container[str] | None) -> Iterator[RawRecord]:
        for offset in offsets:
            yield from self._buffer_records(fh, offset, only)

    def _buffer_records(
        self, fh: BinaryIO, offset: int, only: Container[str] | None = None
    ) -> Iterator[RawRecord]:
        try:
            buffer = self._read_buffer(fh, offset)
        except OSError as exc:
            buffer = f"read error: {exc.strerror or exc}"
        if isinstance(buffer, str):  # the file changed since its buffers were listed, or an I/O error
            self._damage(offset, buffer)
            return
        self.stats.buffers += 1
        self.stats.compressed_buffers += buffer.compressed
        try:
            yield from self._walk(buffer, only)
        except Exception as exc:  # last resort: a defect here must not end the file
            self._damage(offset, f"buffer abandoned: {type(exc).__name__}: {exc}")

    def _buffer_offsets(self, fh: BinaryIO) -> list[tuple[int, int]]:
        """(offset, cpu) of every buffer whose header is usable; the others are recorded as damage."""
        size = os.fstat(fh.fileno()).st_size
        found: list[tuple[int, int]] = []
        offset = 0
        while offset < size:
            fh.seek(offset)
            parsed = self._buffer_header(fh.read(L.BUFFER_HEADER_SIZE))
            if isinstance(parsed, str):
                offset = self._resync(fh, offset, size, parsed)
                continue
            found.append((offset, parsed[2]))
            offset += parsed[0]
        return found

    def _resync(self, fh: BinaryIO, offset: int, size: int, why: str) -> int:
        """After an unusable buffer header: the next offset to try, or ``size`` to stop."""
        self._damage(offset, why)
        step = self.header.buffer_size
        # Uncompressed loggers write fixed-size buffers: try the next slot if it looks like a buffer.
        nxt = offset + step
        if L.BUFFER_HEADER_SIZE <= step <= L.MAX_BUFFER_SIZE and nxt + L.BUFFER_HEADER_SIZE <= size:
            fh.seek(nxt)
            parsed = self._buffer_header(fh.read(L.BUFFER_HEADER_SIZE))
            if not isinstance(parsed, str) and parsed[0] == step:
                self.stats.skipped_bytes += step
                return nxt
        self.stats.skipped_bytes += size - offset
        self._damage(offset, "cannot find the next buffer: rest of the file skipped")
        return size

    def _walk(self, buffer: _Buffer, only: Container[str] | None = None) -> Iterator[RawRecord]:
        """The records of one buffer. Hot path: one Struct unpack per header, one RawRecord per record."""
        data = buffer.data
        end = buffer.filled
        cpu = buffer.cpu
        ref_raw, ref_time, freq = self._clock.ref_raw, self._clock.ref_time, self._clock.freq
        two_freq = 2 * freq  # rounding to the nearest microsecond
        one_us = _ONE_MICROSECOND
        kinds = _KINDS
        marker_at = L.MARKER.unpack_from
        kernel_at = L.KERNEL_HEADER.unpack_from
        perfinfo_at = L.PERFINFO_HEADER.unpack_from
        classic_at = L.CLASSIC_HEADER.unpack_from
        event_at = L.EVENT_HEADER.unpack_from
        hook_guids = self._hook_guids
        guid_text = self._guid_text
        counts = [0] * 256  # per header type, folded into stats when the buffer is done
        marker_flags, padding = L.MARKER_FLAGS, L.PADDING_MARKER
        extended_info = L.EVENT_HEADER_FLAG_EXTENDED_INFO
        kernel, perfinfo, event = L.Shape.SYSTEM, L.Shape.PERFINFO, L.Shape.EVENT
        no_id = 0xFFFFFFFF
        passed_over = self.stats.passed_over
        # The raw timestamps that make a datetime: checked without building one for the records the
        # filter leaves out, so their damage is reported the same.
        raw_lowest, raw_highest = self._clock.raw_range()
        passing = self._passing
        if passing is None or passing.only is not only:
            passing = self._passing = _PassingOver(only) if only is not None else None
        # Passed over on header marks seen before (see _PassingOver); anything else, or anything out
        # of place, takes the full path below, which reports it.
        passed: list[int] = []  # PERFINFO: the header's first 8 bytes, Size masked
        passed_events: list[int] = []  # Id, Version, Channel | type << 32 | GUID's place << 40
        pass_over, pass_over_event = passed.append, passed_events.append
        head_at, event_tail_at = L.HEAD_AND_NEXT.unpack_from, L.EVENT_TAIL.unpack_from
        size_mask, event_shift, event_tail = L.HEAD_SIZE_MASK, L.HEAD_EVENT_SHIFT, L.EVENT_TAIL_OFFSET
        passing_perfinfo = passing.perfinfo if passing is not None else set()
        passing_heads = passing.event_heads if passing is not None else {}
        passing_guids = passing.event_guids if passing is not None else {}
        passing_guid_text = passing.guids if passing is not None else []
        quick = bool(passing_perfinfo or passing_heads)  # else (nothing passed over yet) not worth a look
        pos = 0
        try:
            while pos + 4 <= end:
                if quick and pos + 16 <= end:
                    head, raw_ts = head_at(data, pos)
                    mark = head & size_mask
                    if mark in passing_perfinfo:
                        size = (head >> 32) & 0xFFFF
                        if size >= 16 and pos + size <= end and raw_lowest <= raw_ts <= raw_highest:
                            pass_over(mark)
                            pos += (size + 7) & ~7
                            continue
                    else:
                        mark = passing_heads.get(head >> event_shift, -1)
                        size = head & 0xFFFF
                        if mark >= 0 and size >= 80 and pos + size <= end:
                            raw_ts, guid_bytes, described = event_tail_at(data, pos + event_tail)
                            guid_mark = passing_guids.get(guid_bytes, -1)
                            if guid_mark >= 0 and raw_lowest <= raw_ts <= raw_highest:
                                pass_over_event(described | mark | guid_mark)
                                pos += (size + 7) & ~7
                                continue
                (marker,) = marker_at(data, pos)
                if marker == padding:
                    break
                htype = (marker >> 16) & 0xFF
                kind = kinds[htype] if marker & marker_flags == marker_flags else None
                if kind is None:
                    if marker & marker_flags == L.MESSAGE_FLAGS and (marker & 0xFFFF) >= 8:
                        # WPP TraceMessage: not an event any provider here decodes; skip it.
                        pos += ((marker & 0xFFFF) + 7) & ~7
                        self.stats.skipped_records += 1
                        continue
                    self._give_up(buffer, pos, f"unknown record header (marker {marker:#010x})")
                    return
                shape, header_size, pointer_size, name = kind
                if pos + header_size > end:
                    self._give_up(buffer, pos, f"{name} record header runs past the buffer end")
                    return
                # Most frequent first: PERFINFO (samples, rundowns), EVENT_HEADER, then the rest.
                if shape is perfinfo:
                    version, size, hook, raw_ts = perfinfo_at(data, pos)
                    tid = pid = no_id  # PERFINFO headers carry neither; ETW reports ULONG -1
                    opcode = hook & 0xFF
                    guid = hook_guids.get(hook) or self._kernel_guid(hook)
                    manifest = False
                    event_id = 0
                elif shape is event:
                    size, flags, tid, pid, raw_ts, guid_bytes, event_id, version, opcode = event_at(data, pos)
                    guid = guid_text.get(guid_bytes) or self._guid(guid_bytes)
                    manifest = True
                elif shape is kernel:  # SYSTEM and COMPACT
                    version, size, hook, tid, pid, raw_ts = kernel_at(data, pos)
                    opcode = hook & 0xFF
                    guid = hook_guids.get(hook) or self._kernel_guid(hook)
                    manifest = False
                    event_id = 0
                else:  # FULL or INSTANCE: classic (MOF) event with its class GUID
                    size, opcode, version, tid, pid, raw_ts, guid_bytes = classic_at(data, pos)
                    guid = guid_text.get(guid_bytes) or self._guid(guid_bytes)
                    manifest = False
                    event_id = 0
                record_end = pos + size
                if size < header_size or record_end > end:
                    if buffer.truncated and size >= header_size:
                        self._give_up(buffer, pos, f"{name} record cut off where the buffer data ends")
                    else:
                        self._give_up(buffer, pos, f"{name} record size {size} is invalid")
                    return
                payload_start = pos + header_size
                if shape is event and flags & extended_info:
                    payload_start = self._skip_extended_data(data, payload_start, record_end)
                    if payload_start < 0:
                        self._record_damage(buffer, pos, "extended data overruns the record: record skipped")
                        self.stats.skipped_records += 1
                        pos += (size + 7) & ~7
                        continue
                if only is not None and guid not in only:
                    if not raw_lowest <= raw_ts <= raw_highest:
                        self._record_damage(buffer, pos, f"timestamp {raw_ts} out of range")
                    elif passing is not None:  # learn the marks of what is passed over
                        if shape is perfinfo and hook in hook_guids:  # not an unknown group: counted each
                            passing_perfinfo.add(head_at(data, pos)[0] & size_mask)
                            quick = True
                        elif shape is event and not flags & extended_info:
                            passing.learn_event(head_at(data, pos)[0], htype, guid_bytes, guid)
                            quick = True
                    counts[htype] += 1
                    key = (guid, manifest, event_id if manifest else opcode, version)
                    passed_over[key] = passed_over.get(key, 0) + 1
                    pos += (size + 7) & ~7
                    continue
                try:
                    ts = ref_time + one_us * (((raw_ts - ref_raw) * 2_000_000 + freq) // two_freq)
                except OverflowError:
                    ts = _DATETIME_MIN if raw_ts < ref_raw else _DATETIME_MAX
                    self._record_damage(buffer, pos, f"timestamp {raw_ts} out of range")
                counts[htype] += 1
                yield RawRecord(
                    guid,
                    manifest,
                    event_id,
                    opcode,
                    version,
                    ts,
                    pid,
                    tid,
                    cpu,
                    pointer_size,
                    data[payload_start:record_end],
                )
                pos += (size + 7) & ~7
        finally:
            for mark, count in Counter(passed).items():  # PERFINFO: type, version, hook
                htype, hook = (mark >> 16) & 0xFF, mark >> 48
                counts[htype] += count
                key = (hook_guids[hook], False, hook & 0xFF, mark & 0xFFFF)
                passed_over[key] = passed_over.get(key, 0) + count
            for mark, count in Counter(passed_events).items():
                counts[(mark >> 32) & 0xFF] += count
                key = (passing_guid_text[mark >> 40], True, mark & 0xFFFF, (mark >> 16) & 0xFF)
                passed_over[key] = passed_over.get(key, 0) + count
            by_kind = self.stats.by_header_kind
            for htype, count in enumerate(counts):
                if count:
                    name = L.HEADER_LAYOUTS[htype].name
                    by_kind[name] = by_kind.get(name, 0) + count

    @staticmethod
    def _skip_extended_data(data: bytes, pos: int, record_end: int) -> int:
        """Offset of the payload after the extended data items, or -1 if they are corrupt."""
        item_at = L.EXTENDED_ITEM.unpack_from
        while True:
            if pos + L.EXTENDED_ITEM.size > record_end:
                return -1
            item_size, _ext_type, linkage, data_size = item_at(data, pos)
            if item_size < L.EXTENDED_ITEM.size or data_size > item_size - L.EXTENDED_ITEM.size:
                return -1
            pos += item_size
            if pos > record_end:
                return -1
            if not linkage & L.EXTENDED_ITEM_LINKAGE:
                return pos

    def _give_up(self, buffer: _Buffer, pos: int, why: str) -> None:
        self._record_damage(buffer, pos, f"{why}: rest of the buffer skipped")
        self.stats.skipped_bytes += buffer.filled - pos

    def _kernel_guid(self, hook: int) -> str:
        group = hook >> 8
        guid = L.KERNEL_GROUP_GUIDS.get(group)
        if guid is None:
            self.stats.unknown_groups[group] = self.stats.unknown_groups.get(group, 0) + 1
            return L.SYSTEM_TRACE_GUID  # not cached, so every such record is counted
        self._hook_guids[hook] = guid
        return guid

    def _guid(self, raw: bytes) -> str:
        text = raw.hex()
        # GUID fields 1-3 are little-endian in the file.
        guid = f"{raw[3::-1].hex()}-{raw[5:3:-1].hex()}-{raw[7:5:-1].hex()}-{text[16:20]}-{text[20:32]}"
        self._guid_text[raw] = guid
        return guid
