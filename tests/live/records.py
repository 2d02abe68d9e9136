"""Real EVENT_RECORD structures in memory, built from the records of the perfview .etl."""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from itertools import islice
from pathlib import Path

from etwsensor.events import RawRecord
from etwsensor.sources.etl import EtlReader
from etwsensor.sources.live import structs as S
from etwsensor.sources.live.callback import datetime_to_filetime

ETL = Path(__file__).resolve().parents[1] / "data" / "etl" / "perfview_net.4.5.2.x64.etl"


@dataclass
class LiveRecord:
    """An EVENT_RECORD and the buffers it points at (kept alive as long as the record)."""

    record: S.EVENT_RECORD
    payload: ctypes.Array[ctypes.c_char]
    extended: ctypes.Array[S.EVENT_HEADER_EXTENDED_DATA_ITEM] | None = None
    stack: ctypes.Array[ctypes.c_uint64] | None = None

    def pointer(self) -> ctypes._Pointer[S.EVENT_RECORD]:
        return ctypes.pointer(self.record)


def event_record(rec: RawRecord, with_stack: bool = False) -> LiveRecord:
    """The EVENT_RECORD ETW would hand a real-time consumer for ``rec`` (FILETIME timestamps)."""
    r = S.EVENT_RECORD()
    h = r.EventHeader
    h.Size = ctypes.sizeof(S.EVENT_HEADER)
    flags = S.EVENT_HEADER_FLAG_64_BIT_HEADER if rec.pointer_size == 8 else S.EVENT_HEADER_FLAG_32_BIT_HEADER
    if not rec.manifest:
        flags |= S.EVENT_HEADER_FLAG_CLASSIC_HEADER
    h.ThreadId, h.ProcessId = rec.tid & 0xFFFFFFFF, rec.pid & 0xFFFFFFFF
    h.TimeStamp = datetime_to_filetime(rec.ts)
    h.ProviderId = S.GUID.from_text(rec.guid)
    d = h.EventDescriptor
    d.Id, d.Version, d.Opcode, d.Level, d.Keyword = rec.id, rec.version, rec.opcode, 4, 0x8000000000000010
    r.BufferContext.ProcessorIndex = rec.cpu
    r.BufferContext.LoggerId = 17
    payload = ctypes.create_string_buffer(rec.payload, len(rec.payload) or 1)
    r.UserDataLength = len(rec.payload)
    r.UserData = ctypes.addressof(payload) if rec.payload else None
    live = LiveRecord(r, payload)
    if with_stack:  # a stack-trace extended item, as stack-walk sessions deliver it: not part of the payload
        stack = (ctypes.c_uint64 * 4)(0, 0xFFFFF80000001000, 0xFFFFF80000002000, 0x7FF600001000)
        items = (S.EVENT_HEADER_EXTENDED_DATA_ITEM * 1)()
        items[0].ExtType = S.EVENT_HEADER_EXT_TYPE_STACK_TRACE64
        items[0].DataSize = ctypes.sizeof(stack)
        items[0].DataPtr = ctypes.addressof(stack)
        r.ExtendedDataCount = 1
        r.ExtendedData = ctypes.addressof(items)
        flags |= S.EVENT_HEADER_FLAG_EXTENDED_INFO
        live.extended, live.stack = items, stack
    h.Flags = flags
    return live


@cache
def _all_records() -> tuple[RawRecord, ...]:
    return tuple(EtlReader(ETL).records())


def etl_records(limit: int | None = None) -> Iterator[RawRecord]:
    """The trace's records in order (read once per test session)."""
    return islice(_all_records(), limit)
