"""Recordings: RawEvents as JSON Lines, optionally zstd-compressed (.jsonl.zst).

Line 1 is the RecordingHeader; every other line is one RawEvent. Integers and pointers are JSON
numbers, datetimes ISO-8601 UTC with ``Z``, GUIDs and SIDs strings, binary lowercase hex. Types come
back on reading from providers/, so a recording read back gives the same RawEvents. Corrupt lines
are counted and skipped with their line number. See docs/recording-format.md.
"""

from __future__ import annotations

import base64
import itertools
import json
import operator
import os
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any, ClassVar

import msgspec
import zstandard
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from etwsensor.decode.decoder import DecodeStats, EventCount
from etwsensor.decode.schema import ProviderDef, load_providers
from etwsensor.errors import validation_reason
from etwsensor.events import DecodeStatus, RawEvent
from etwsensor.sources.damage import SourceDamage
from etwsensor.sources.header import RecordingHeader
from etwsensor.sources.text import clean_strings

_OK = DecodeStatus.OK
# Per (guid, id, opcode, version) of a recording: event name, field restorers, counters.
_Kind = tuple[str, dict[str, str] | None, EventCount]


class RecordingFormatError(ValueError):
    """The file is not a recording (no valid header line)."""


class EventLine(BaseModel):
    """One RawEvent line, as documented for other tools (the hot path does not validate through it)."""

    model_config = ConfigDict(extra="forbid")

    guid: str
    provider: str
    id: int | None
    opcode: int | None
    version: int
    ts: datetime
    pid: int
    tid: int
    cpu: int
    fields: dict[str, Any] = Field(default_factory=dict)
    status: DecodeStatus = DecodeStatus.OK
    payload: str | None = Field(default=None, description="raw payload in hex, only when status is not ok")


def is_zstd(path: Path) -> bool:
    return path.name.endswith(".zst")


def format_time(dt: datetime) -> str:
    return dt.isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    """ISO-8601; a time without a zone is taken as UTC, as every time in a recording is."""
    dt = datetime.fromisoformat(text)
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)


def _json_value(v: Any) -> Any:
    if isinstance(v, datetime):
        return format_time(v)
    if isinstance(v, bytes):
        return v.hex()
    return v


def event_to_json(ev: RawEvent) -> dict[str, Any]:
    line: dict[str, Any] = {
        "guid": ev.guid,
        "provider": ev.provider,
        "id": ev.id,
        "opcode": ev.opcode,
        "version": ev.version,
        "ts": format_time(ev.ts),
        "pid": ev.pid,
        "tid": ev.tid,
        "cpu": ev.cpu,
        "fields": {k: _json_value(v) for k, v in ev.fields.items()},
    }
    if ev.status is not DecodeStatus.OK:
        line["status"] = ev.status.value
        line["payload"] = (ev.payload or b"").hex()
    return line


_encode = msgspec.json.Encoder().encode


FRAME_BYTES = 1 << 18  # a compressed recording ends a zstd frame after about this much: damage loses one


class RecordingWriter:
    """Writes a recording; zstd-compressed when the file name ends in .zst, in frames of about
    ``FRAME_BYTES`` that end at a line end, so a reader resynchronises after a corrupt frame."""

    def __init__(self, path: Path, header: RecordingHeader) -> None:
        self.path = path
        self._raw: IO[bytes] = path.open("wb")
        self._zstd = (
            zstandard.ZstdCompressor(level=9, write_checksum=True).stream_writer(self._raw, closefd=False)
            if is_zstd(path)
            else None
        )
        self._out: IO[bytes] = self._zstd if self._zstd is not None else self._raw  # type: ignore[assignment]
        self._in_frame = 0
        self._write(header.model_dump(mode="json"))
        self.events = 0

    def _write(self, obj: dict[str, Any]) -> None:
        line = _encode(obj) + b"\n"
        self._out.write(line)
        if self._zstd is not None:
            self._in_frame += len(line)
            if self._in_frame >= FRAME_BYTES:
                self._zstd.flush(zstandard.FLUSH_FRAME)
                self._in_frame = 0

    def write(self, ev: RawEvent) -> None:
        self._write(event_to_json(ev))
        self.events += 1

    def close(self) -> None:
        if self._out is not self._raw:
            self._out.close()
        self._raw.close()

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def write_recording(path: Path, header: RecordingHeader, events: Iterable[RawEvent]) -> int:
    """Write a whole recording; returns the number of events written. It is written under a temporary
    name and renamed when complete: an interrupted write never leaves a file that reads as whole."""
    partial = path.with_name(f".partial-{path.name}")  # same suffix: the same compression
    try:
        with RecordingWriter(partial, header) as w:
            for ev in events:
                w.write(ev)
            count = w.events
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return count


class _FieldTypes:
    """Field → wire type per (guid, key, version), to restore datetimes and bytes from JSON."""

    _RESTORE: ClassVar[dict[str, str]] = {"FILETIME": "time", "SYSTEMTIME": "time", "Binary": "bytes"}

    def __init__(self, providers: Iterable[ProviderDef]) -> None:
        self._by_event: dict[tuple[str, int | None, int], dict[str, str]] = {}
        for p in providers:
            for ev in p.events:
                for vd in ev.versions:
                    restore = {f.name: self._RESTORE[f.type] for f in vd.fields if f.type in self._RESTORE}
                    if restore:
                        self._by_event[(p.guid, ev.key, vd.version)] = restore

    def restorers(self, guid: str, key: int | None, version: int) -> dict[str, str] | None:
        """Field → "time"/"bytes" for an event kind; None for most, which hold only numbers and strings."""
        return self._by_event.get((guid, key, version)) if key is not None else None

    @staticmethod
    def restore_fields(restore: dict[str, str], fields: dict[str, Any]) -> None:
        for name, kind in restore.items():
            v = fields.get(name)
            if isinstance(v, str):
                fields[name] = parse_time(v) if kind == "time" else bytes.fromhex(v)


class TruncatedStream(EOFError):
    """The compressed stream ended inside a frame: the file was cut."""


_READ = 1 << 16  # compressed bytes per read: a well-compressed recording inflates ~100x
_BLOCK = 1 << 18  # bytes of lines decoded per call: the best of 64 KB … 1 MB as measured


def _whole_lines(blocks: Iterator[bytes], size: int = _BLOCK) -> Iterator[bytes]:
    """Re-cut ``blocks`` into pieces of about ``size`` bytes that end at a line end (the last
    piece may not): decoding a piece at a time keeps memory flat however well the file compressed."""
    rest = b""
    for data in blocks:
        buf = rest + data if rest else data
        pos = 0
        while len(buf) - pos > size:
            cut = buf.rfind(b"\n", pos, pos + size)
            if cut < 0:  # one line longer than a piece
                cut = buf.find(b"\n", pos + size)
                if cut < 0:
                    break
            yield buf[pos : cut + 1]
            pos = cut + 1
        cut = buf.rfind(b"\n", pos)
        if cut >= 0:
            yield buf[pos : cut + 1]
            pos = cut + 1
        rest = buf[pos:]
    if rest:
        yield rest


ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"  # the first four bytes of every zstd frame
_SALVAGE = 1 << 10  # compressed bytes per step when decoding a corrupt frame up to its damage
Gap = Callable[[int, int | None, str], None]  # compressed start, resume offset (None: end), reason


def _zstd_blocks(fh: IO[bytes], on_gap: Gap | None = None) -> Iterator[bytes]:
    """Decompressed data of a zstd stream, frame after frame (appended recordings, and writers that end
    a frame every megabyte). A corrupt frame is decoded up to its damage, then reading resumes at the
    next frame magic; ``on_gap`` hears of each gap (and a newline ends the line the gap cut). Without
    ``on_gap`` a corrupt frame raises. A stream that stops inside a frame raises TruncatedStream."""
    dctx = zstandard.ZstdDecompressor()
    dobj = dctx.decompressobj()
    offset = frame_start = emitted = 0  # bytes read; where this frame starts; its output so far
    while block := fh.read(_READ):
        offset += len(block)
        try:
            data = dobj.decompress(block)
            emitted += len(data)
            yield data
            while dobj.eof and dobj.unused_data:  # the next frame starts inside this block
                unused = dobj.unused_data
                frame_start, emitted = offset - len(unused), 0
                dobj = dctx.decompressobj()
                data = dobj.decompress(unused)
                emitted += len(data)
                yield data
        except zstandard.ZstdError as exc:
            if on_gap is None:
                raise
            salvaged, damaged_at = _salvage(fh, dctx, frame_start, emitted)
            if salvaged:
                yield salvaged
            resume = _next_magic(fh, max(damaged_at, frame_start + 1))
            on_gap(damaged_at, resume, f"corrupt zstd frame ({exc})")
            yield b"\n"
            if resume is None:
                return
            fh.seek(resume)
            offset = frame_start = resume
            emitted = 0
            dobj = dctx.decompressobj()
    if not dobj.eof:  # the last, partial line is part of the damage
        raise TruncatedStream("the compressed stream ends inside a frame (file cut short?)")


def _salvage(fh: IO[bytes], dctx: zstandard.ZstdDecompressor, start: int, skip: int) -> tuple[bytes, int]:
    """Decode the frame at ``start`` again in small steps up to its damage: the output not yet given
    (after ``skip`` bytes), and the compressed offset where the damage was met."""
    fh.seek(start)
    dobj = dctx.decompressobj()
    out = bytearray()
    at = start
    while piece := fh.read(_SALVAGE):
        try:
            out += dobj.decompress(piece)
        except zstandard.ZstdError:
            break
        at += len(piece)
        if dobj.eof or len(out) > skip + (64 << 20):  # never hold more than a frame's worth
            break
    return bytes(out[skip:]), at


def _next_magic(fh: IO[bytes], start: int) -> int | None:
    """The offset of the next zstd frame magic at or after ``start``, or None."""
    fh.seek(start)
    tail = b""
    base = start
    while chunk := fh.read(_READ):
        buf = tail + chunk
        found = buf.find(ZSTD_MAGIC)
        if found >= 0:
            return base - len(tail) + found
        tail = buf[-(len(ZSTD_MAGIC) - 1) :]
        base += len(chunk)
    return None


def _plain_blocks(fh: IO[bytes]) -> Iterator[bytes]:
    while block := fh.read(_BLOCK):
        yield block


# The fast path decodes lines straight into RawEvents; strict on purpose: a line it refuses (a time
# without a zone, a number as a string) takes the lenient per-line path, which accepts what the
# format allows and names the damage of what it does not. Hex payloads (status not ok) never reach
# it: msgspec would read them as base64.
_decode_lines = msgspec.json.Decoder(RawEvent).decode_lines
_decode_any = msgspec.json.Decoder().decode


_PAYLOAD = operator.attrgetter("payload")


def _hex_payload(ev: RawEvent) -> None:
    """The payload of a line the block decoder read: msgspec reads a bytes field as base64, and the
    recording's hex text (hex digits are base64 digits too) decodes as base64 only when its length is
    a multiple of 4, without padding, so the base64 text is that hex exactly. Like the lenient
    reader, a payload beside status "ok" is dropped. ValueError when it is not hex."""
    if ev.status is _OK or ev.payload is None:
        ev.payload = None
    else:
        ev.payload = bytes.fromhex(base64.b64encode(ev.payload).decode("ascii"))


def _count_lines(block: bytes) -> int:
    """The lines in ``block`` (a last line without its newline counts): a memchr per line is several
    times faster than ``bytes.count``, which compares byte by byte."""
    find = block.find
    n = 0
    at = find(b"\n")
    while at >= 0:
        n += 1
        at = find(b"\n", at + 1)
    return n + (block[-1:] != b"\n")


def _decode_json(line: bytes) -> Any:
    """One line of JSON. msgspec refuses lone surrogate escapes (``"\ud800"``); the standard library
    takes them, and they then become U+FFFD like everywhere else (``etwsensor.sources.text``)."""
    try:
        return _decode_any(line)
    except msgspec.DecodeError:
        if b"\\ud" not in line.lower():
            raise
    return clean_strings(json.loads(line))


def _check_types(guid: Any, ident: Any, opcode: Any, version: Any, provider: Any) -> None:
    if not isinstance(guid, str) or not isinstance(provider, str) or type(version) is not int:
        raise TypeError("guid and provider must be strings, version an integer")
    if not (ident is None or type(ident) is int) or not (opcode is None or type(opcode) is int):
        raise TypeError("id and opcode must be integers or null")


class RecordingReader:
    """Reads a recording. ``header`` is parsed at open; ``events()`` yields RawEvents.

    A line that is not a valid event is counted in ``damage`` with its line number and skipped; a
    compressed stream that breaks off ends the reading with a damage entry. Nothing else raises.

    Speed: each block of ~256 KB of lines is decoded by msgspec in one call into RawEvents; only
    a block with a damaged line or a raw payload is decoded line by line.
    """

    def __init__(self, path: Path, providers: Iterable[ProviderDef] | None = None) -> None:
        self.path = path
        self.damage: list[SourceDamage] = []
        self.stats = DecodeStats()
        provs = tuple(providers if providers is not None else load_providers())
        self._names: dict[tuple[str, int | None], str] = {
            (p.guid, ev.key): ev.name for p in provs for ev in p.events
        }
        self._types = _FieldTypes(provs)
        self._kinds: dict[tuple[str, int | None, int | None, int], _Kind] = {}
        self._fh: IO[bytes] = path.open("rb")
        self._lineno = 1  # the number of the last line read
        raw = _zstd_blocks(self._fh, self._gap) if is_zstd(path) else _plain_blocks(self._fh)
        self._blocks = _whole_lines(raw)
        self._first = b""  # what follows the header line in the first block
        try:
            head = next(self._blocks, b"")
            first, _, self._first = head.partition(b"\n")
            self.header = RecordingHeader.model_validate_json(first)
        except ValidationError as exc:
            self._close()
            reason = validation_reason(exc)
            raise RecordingFormatError(
                f"{path}: line 1 is not an etwsensor recording header: {reason}"
            ) from exc
        except (ValueError, OSError, EOFError, zstandard.ZstdError) as exc:
            self._close()
            raise RecordingFormatError(f"{path}: line 1 is not an etwsensor recording header: {exc}") from exc

    def _close(self) -> None:
        self._fh.close()

    def _gap(self, start: int, resume: int | None, reason: str) -> None:
        where = f"compressed bytes {start}..{resume}" if resume is not None else f"compressed byte {start} on"
        then = "reading resumed at the next frame" if resume is not None else "no later frame"
        self.damage.append(SourceDamage(
            str(self.path), f"after line {self._lineno}", f"{reason}: {where} lost; {then}"
        ))  # fmt: skip

    def events(self) -> Iterator[RawEvent]:
        lineno = 1  # the number of the last line read
        kinds, kind_of, restore_fields = self._kinds, self._kind, self._types.restore_fields
        try:
            for block in itertools.chain((self._first,), self._blocks):
                if not block:  # the first block may hold the header alone
                    continue
                events = self._decode_block(block)
                if events is None:  # a damaged line or a raw payload in the block: line by line
                    yield from self._lenient_block(block, lineno)
                    events = []
                # The hot loop of every replay: one dict lookup per event for its kind.
                for ev in events:
                    kind = kinds.get((ev.guid, ev.id, ev.opcode, ev.version))
                    if kind is None:
                        kind = kind_of(ev.guid, ev.id, ev.opcode, ev.version, ev.provider)
                    ev.name, restore, counts = kind
                    if restore is not None:
                        restore_fields(restore, ev.fields)
                    counts.count += 1
                    if ev.status is not _OK:  # rare: a raw payload, or "undecoded" written by hand
                        counts.note(ev.status)
                    yield ev
                lineno += _count_lines(block)
                self._lineno = lineno
        except (zstandard.ZstdError, OSError, EOFError) as exc:
            self.damage.append(SourceDamage(str(self.path), f"line {lineno + 1}", f"stream broken: {exc}"))
        finally:
            self._close()

    @staticmethod
    def _decode_block(block: bytes) -> list[RawEvent] | None:
        """Every line of ``block`` as a RawEvent (name not set yet); None when one of them needs the
        lenient path. A hex payload that is not also valid base64 sends the block there too (those
        that are come back right through ``_hex_payload``)."""
        try:
            events = _decode_lines(block)
        except (msgspec.DecodeError, ValueError, RecursionError):  # ValueError: bytes not UTF-8
            return None
        if list(map(_PAYLOAD, events)).count(None) != len(events):  # rare: raw payloads
            try:
                for ev in events:
                    _hex_payload(ev)
            except ValueError:  # not hex after all
                return None
        return events

    def _lenient_block(self, block: bytes, lineno: int) -> Iterator[RawEvent]:
        """The events of a block the fast decoder refused; ``lineno`` is the line before it."""
        for n, line in enumerate(block.split(b"\n"), start=lineno + 1):
            if line.strip():
                ev = self._lenient(line, n)
                if ev is not None:
                    yield ev

    def _lenient(self, line: bytes, lineno: int) -> RawEvent | None:
        """One line the block decoder refused → RawEvent, or a damage entry naming the line."""
        try:
            d = _decode_json(line)
            if not isinstance(d, dict):
                raise TypeError("not a JSON object")
            guid, ident, opcode, version = d["guid"], d["id"], d["opcode"], d["version"]
            _check_types(guid, ident, opcode, version, d["provider"])  # every line: kinds are cached
            fields = d["fields"]
            if not isinstance(fields, dict):
                raise TypeError("fields must be an object")
            kind = self._kinds.get((guid, ident, opcode, version))
            if kind is None:
                kind = self._kind(guid, ident, opcode, version, d["provider"])
            name, restore, counts = kind
            if restore is not None:
                self._types.restore_fields(restore, fields)
            status = _OK if "status" not in d else DecodeStatus(d["status"])
            payload = None if status is _OK else bytes.fromhex(d["payload"])
            ev = RawEvent(
                guid=guid,
                provider=d["provider"],
                name=name,
                id=ident,
                opcode=opcode,
                version=version,
                ts=parse_time(d["ts"]),
                pid=int(d["pid"]),
                tid=int(d["tid"]),
                cpu=int(d["cpu"]),
                fields=fields,
                status=status,
                payload=payload,
            )
        except (ValueError, KeyError, TypeError, AttributeError, msgspec.DecodeError) as exc:
            self.damage.append(SourceDamage(str(self.path), f"line {lineno}", f"not a valid event: {exc}"))
            return None
        except RecursionError:
            reason = "not a valid event: nested too deeply"
            self.damage.append(SourceDamage(str(self.path), f"line {lineno}", reason))
            return None
        counts.count += 1
        if status is not _OK:
            counts.note(status)
        return ev

    def _kind(self, guid: Any, ident: Any, opcode: Any, version: Any, provider: Any) -> _Kind:
        """Name, field restorers and counters of a (provider, event, version) seen for the first time."""
        _check_types(guid, ident, opcode, version, provider)
        key = ident if ident is not None else opcode
        name = self._names.get((guid, key), "")
        counts = self.stats.entry(guid, ident, opcode, version, provider, name, known=bool(name))
        kind = (name, self._types.restorers(guid, key, version), counts)
        self._kinds[(guid, ident, opcode, version)] = kind
        return kind
