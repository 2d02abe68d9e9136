"""Readers for the variable-width and converted ETW wire types.

Each reader takes (payload, offset) and returns (value, next offset). They raise DecodeFailure on
truncated or malformed data; the decoder turns that into a counted DecodeError.
"""

from __future__ import annotations

import codecs
import struct
import uuid
from datetime import UTC, datetime, timedelta

FILETIME_EPOCH = datetime(1601, 1, 1, tzinfo=UTC)
_SYSTEMTIME = struct.Struct("<8H")
_U32 = struct.Struct("<I")
# The codec functions directly: bytes.decode() looks the codec up by name on every call (hot path).
_utf16 = codecs.utf_16_le_decode


class DecodeFailure(Exception):
    """Payload does not fit its layout (truncated, unterminated, impossible value)."""


def filetime(ticks: int) -> datetime | None:
    """FILETIME (100 ns since 1601, UTC) → aware datetime; 0 means "not set"."""
    if ticks == 0:
        return None
    try:
        return FILETIME_EPOCH + timedelta(microseconds=ticks // 10)
    except OverflowError as exc:
        raise DecodeFailure(f"FILETIME out of range: {ticks}") from exc


def systemtime(buf: bytes, off: int) -> tuple[datetime | None, int]:
    try:
        y, mo, _dow, d, h, mi, s, ms = _SYSTEMTIME.unpack_from(buf, off)
    except struct.error as exc:
        raise DecodeFailure("SYSTEMTIME truncated") from exc
    if y == 0:
        return None, off + 16
    try:
        return datetime(y, mo, d, h, mi, s, ms * 1000, tzinfo=UTC), off + 16
    except ValueError as exc:
        raise DecodeFailure(f"invalid SYSTEMTIME: {exc}") from exc


def guid(raw: bytes) -> str:
    return str(uuid.UUID(bytes_le=raw))


def utf16z(buf: bytes, off: int) -> tuple[str, int]:
    """NUL-terminated UTF-16LE. A missing terminator means the payload was cut: an error, not a guess."""
    end = buf.find(b"\x00\x00", off)
    while end != -1 and (end - off) & 1:  # the NUL pair must start on a character boundary
        end = buf.find(b"\x00\x00", end + 1)
    if end == -1:
        raise DecodeFailure("unterminated UTF-16 string")
    return _utf16(buf[off:end], "replace")[0], end + 2


def ansiz(buf: bytes, off: int) -> tuple[str, int]:
    """NUL-terminated ANSI (code page 1252, as Windows writes process image names)."""
    end = buf.find(b"\x00", off)
    if end == -1:
        raise DecodeFailure("unterminated ANSI string")
    return buf[off:end].decode("cp1252", "replace"), end + 1


def sid(buf: bytes, off: int) -> tuple[str, int]:
    """A bare SID: revision, sub-authority count, 48-bit big-endian authority, 32-bit sub-authorities."""
    if off + 8 > len(buf):
        raise DecodeFailure("SID truncated")
    revision, count = buf[off], buf[off + 1]
    if revision != 1 or count > 15:
        raise DecodeFailure(f"not a SID (revision {revision}, {count} sub-authorities)")
    end = off + 8 + 4 * count
    if end > len(buf):
        raise DecodeFailure("SID truncated")
    authority = int.from_bytes(buf[off + 2 : off + 8], "big")
    subs = struct.unpack_from(f"<{count}I", buf, off + 8)
    return "S-1-" + "-".join(map(str, (authority, *subs))), end


def token_user(buf: bytes, off: int, pointer_size: int) -> tuple[str, int]:
    """Classic Process UserSID: TOKEN_USER (SID_AND_ATTRIBUTES, 2 × pointer size) then the SID.

    A first 4 bytes of 0 means the event carries no SID; the field is then 4 bytes long (CORRECTIONS §2).
    """
    try:
        (first,) = _U32.unpack_from(buf, off)
    except struct.error as exc:
        raise DecodeFailure("UserSID truncated") from exc
    if first == 0:
        return "", off + 4
    return sid(buf, off + 2 * pointer_size)


def counted_binary(buf: bytes, off: int, size: int) -> tuple[bytes, int]:
    end = off + size
    if size < 0 or end > len(buf):
        raise DecodeFailure(f"binary of {size} bytes runs past the payload")
    return buf[off:end], end
