"""RawEvent: one decoded ETW record, the contract between every source and the normalizer.

Live sessions, .etl files and recordings all produce RawEvents, so one normalizer and one rule
engine serve them all.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

import msgspec


class DecodeStatus(StrEnum):
    """What the decoder could make of a record of a known provider."""

    OK = "ok"
    UNDECODED = "undecoded"  # known event, version not in providers/: payload kept raw
    ERROR = "error"  # payload truncated or malformed: payload kept raw


class RawEvent(msgspec.Struct, kw_only=True, gc=False):
    """One ETW record with its payload decoded into typed fields.

    Manifest providers are keyed by event ``id`` (``opcode`` is None); the classic kernel
    classes are keyed by ``opcode`` (``id`` is None), as ETW itself does.

    A msgspec Struct rather than a dataclass: one is built per event, and a Struct is built in C
    (a fifth of the cost) and decoded straight from recording lines (sources/recording.py, which
    fills in ``name``). Keyword-only, so no call can mix up ids and opcodes. Not tracked by the
    cyclic GC: it holds only scalars and a dict of scalars, never a cycle.
    """

    guid: str  # provider or classic class GUID, lowercase, no braces
    provider: str  # name from providers/ ("Microsoft-Windows-Kernel-Process", "Process", ...)
    name: str = ""  # event name from providers/ ("ProcessStart", "DCStart", ...)
    id: int | None
    opcode: int | None
    version: int
    ts: Annotated[datetime, msgspec.Meta(tz=True)]  # UTC
    pid: int
    tid: int
    cpu: int
    fields: dict[str, Any]
    status: DecodeStatus = DecodeStatus.OK
    payload: bytes | None = None  # raw payload, kept only when status is not OK

    @property
    def key(self) -> int:
        """The number that selects the event inside its provider: id, or opcode for classic."""
        return self.id if self.id is not None else (self.opcode or 0)


@dataclass(slots=True)
class RawRecord:
    """One ETW record before payload decoding, as an .etl reader or a live callback sees it.

    Both the .etl reader and the live EVENT_RECORD callback produce these, so the decoder
    that turns them into RawEvents is the same code on both paths.
    """

    guid: str  # provider GUID (EVENT_HEADER) or classic class GUID (kernel headers); lowercase
    manifest: bool  # True for EVENT_HEADER records: the event is keyed by id, else by opcode
    id: int
    opcode: int
    version: int
    ts: datetime  # UTC
    pid: int
    tid: int
    cpu: int
    pointer_size: int  # 4 or 8, for this record
    payload: bytes
