"""LZ77 decompression of compressed .etl buffers (MS-XCA §2.3-2.4, "plain LZ77", a.k.a. XPRESS).

Windows 8+ loggers in compressed mode (and relogged traces such as the perfview one) store each
buffer's records compressed after the 72-byte buffer header. libfwnt-python (libyal, LGPL-3.0+,
a runtime dependency) decompresses a 64 KiB buffer in ~0.1 ms; where it cannot be installed a
pure-Python decoder of the published algorithm takes ~10 ms per buffer, so compressed traces still
read, only slower.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Final

_U16: Final = struct.Struct("<H")
_U32: Final = struct.Struct("<I")


class XpressError(ValueError):
    """The compressed stream is corrupt."""


def decompress_python(src: bytes, expected_size: int) -> bytes:
    """Decode a plain LZ77 stream; stops at the end of input or at ``expected_size`` bytes.

    A truncated stream returns what it decoded so far (the caller compares the length with what
    the buffer header promised); a match that points before the start of the output raises.
    """
    out = bytearray()
    pos = 0
    end = len(src)
    half_byte_at = -1  # a length nibble byte whose high half is still unused
    unpack16 = _U16.unpack_from
    unpack32 = _U32.unpack_from
    while pos + 4 <= end and len(out) < expected_size:
        flags = unpack32(src, pos)[0]
        pos += 4
        bits = 32
        while bits:
            # Leading 0 flag bits are literals: copy them in one slice.
            literals = bits - (flags & ((1 << bits) - 1)).bit_length()
            if literals:
                out += src[pos : pos + literals]
                pos += literals
                bits -= literals
                if pos >= end:
                    return bytes(out[:expected_size])
                if not bits:
                    break
            bits -= 1  # a 1 bit: a match
            if pos + 2 > end:
                return bytes(out[:expected_size])
            token = unpack16(src, pos)[0]
            pos += 2
            distance = (token >> 3) + 1
            length = token & 7
            if length == 7:
                if half_byte_at < 0:
                    if pos >= end:
                        raise XpressError("match length runs past the input")
                    half_byte_at = pos
                    length = src[pos] & 0x0F
                    pos += 1
                else:
                    length = src[half_byte_at] >> 4
                    half_byte_at = -1
                if length == 15:
                    if pos >= end:
                        raise XpressError("match length runs past the input")
                    length = src[pos]
                    pos += 1
                    if length == 255:
                        if pos + 2 > end:
                            raise XpressError("match length runs past the input")
                        length = unpack16(src, pos)[0]
                        pos += 2
                        if length == 0:
                            if pos + 4 > end:
                                raise XpressError("match length runs past the input")
                            length = unpack32(src, pos)[0]
                            pos += 4
                        if length < 15 + 7:
                            raise XpressError("invalid match length")
                        length -= 15 + 7
                    length += 15
                length += 7
            length += 3
            # A match may claim up to 4 GiB (a decompression bomb): the output of a buffer never
            # exceeds the size its header declares.
            length = min(length, expected_size - len(out))
            start = len(out) - distance
            if start < 0:
                raise XpressError("match distance before the start of the output")
            if distance >= length:
                out += out[start : start + length]
            else:  # overlapping copy repeats the last `distance` bytes
                chunk = out[start:]
                out += (chunk * (length // distance + 1))[:length]
            if len(out) >= expected_size:
                return bytes(out[:expected_size])
    return bytes(out[:expected_size])


def _native() -> Callable[[bytes, int], bytes] | None:
    try:
        import pyfwnt
    except ImportError:
        return None

    def decompress_native(src: bytes, expected_size: int) -> bytes:
        try:
            out: bytes = pyfwnt.lzxpress_decompress(src, expected_size)
        except Exception:
            # libfwnt rejects truncated or corrupt streams outright; the Python decoder keeps the
            # part before the damage.
            return decompress_python(src, expected_size)
        return out

    return decompress_native


decompress: Final[Callable[[bytes, int], bytes]] = _native() or decompress_python
