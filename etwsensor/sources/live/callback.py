"""The ETW callback: EVENT_RECORD pointer → RawRecord → bounded queue. Runs on ETW's consumer thread.

It does the minimum (krabsetw#80, CORRECTIONS §9): one copy of the record header, one copy of the
payload (``ctypes.string_at``), one queue offer that never blocks; a full queue drops the record and
counts it. Decoding happens on the worker thread with the same ``Decoder`` that reads .etl files, so
a live record and the same record read from an .etl give the same RawEvent.
"""

from __future__ import annotations

import ctypes
import threading
from collections import deque
from datetime import UTC, datetime, timedelta
from typing import Any

from etwsensor.events import RawRecord
from etwsensor.sources.live import structs as S

_FILETIME_EPOCH = datetime(1601, 1, 1, tzinfo=UTC)
_TICK = timedelta(microseconds=1)


def filetime_to_datetime(value: int) -> datetime:
    """FILETIME (100 ns since 1601, UTC) → datetime to the microsecond, as the .etl reader gives."""
    return _FILETIME_EPOCH + _TICK * (value // 10)


def datetime_to_filetime(ts: datetime) -> int:
    delta = ts - _FILETIME_EPOCH
    return (delta.days * 86_400 + delta.seconds) * 10_000_000 + delta.microseconds * 10


class RecordQueue:
    """Bounded hand-off from the callbacks to the worker: ``offer`` never blocks; full → dropped, counted.

    A deque (append/popleft are atomic) and a lock held only to count: each session's consumer thread
    offers, possibly at the same time, and the counts must be exact. The worker sleeps on an event that
    the first record into an empty queue sets.
    """

    def __init__(self, maxsize: int = 65536) -> None:
        self._items: deque[RawRecord] = deque()
        self._count_lock = threading.Lock()
        self._ready = threading.Event()
        self.maxsize = maxsize
        self.offered = 0
        self.dropped = 0
        self.high_water = 0

    def offer(self, rec: RawRecord) -> bool:
        items = self._items
        with self._count_lock:
            self.offered += 1
            if len(items) >= self.maxsize:
                self.dropped += 1
                return False
            items.append(rec)
            size = len(items)
            if size > self.high_water:
                self.high_water = size
        if size == 1:
            self._ready.set()
        return True

    def take(self, timeout: float | None = None) -> RawRecord | None:
        """The next record, or None when none came within ``timeout`` seconds (0: do not wait)."""
        items = self._items
        try:
            return items.popleft()
        except IndexError:
            if timeout == 0:
                return None
        self._ready.clear()
        try:  # a record offered between the first look and clear() has set the event before it
            return items.popleft()
        except IndexError:
            self._ready.wait(timeout)
        try:
            return items.popleft()
        except IndexError:
            return None

    def __len__(self) -> int:
        return len(self._items)

    def stats(self) -> dict[str, int]:
        return {"offered": self.offered, "dropped": self.dropped, "queued": len(self),
                "high_water": self.high_water, "capacity": self.maxsize}  # fmt: skip


def _address(record: Any) -> int:
    """The address an EVENT_RECORD pointer (ours, pywintrace's, or a plain int) points at."""
    if isinstance(record, int):
        return record
    return ctypes.addressof(record.contents)  # ValueError for a NULL pointer; 7x cheaper than cast()


_HEADER = ctypes.c_char * S.RECORD_LAYOUT.size


def read_record(record: Any) -> RawRecord:
    """The RawRecord of one EVENT_RECORD: header fields and a copy of the payload (UserData)."""
    address = _address(record)
    h = S.RECORD_LAYOUT.unpack_from(_HEADER.from_address(address))  # read in place: one copy, of the fields
    flags = h[S.R_FLAGS]
    cpu = h[S.R_CPU]
    if not flags & S.EVENT_HEADER_FLAG_PROCESSOR_INDEX:
        cpu &= 0xFF  # ProcessorNumber is a byte; the next byte is Alignment, not part of the number
    length = h[S.R_USER_LEN]
    payload = ctypes.string_at(h[S.R_USER_DATA], length) if length else b""
    return RawRecord(
        _guid(h[S.R_GUID]),
        not flags & S.EVENT_HEADER_FLAG_CLASSIC_HEADER,
        h[S.R_ID],
        h[S.R_OPCODE],
        h[S.R_VERSION],
        filetime_to_datetime(h[S.R_TS]),
        h[S.R_PID],
        h[S.R_TID],
        cpu,
        4 if flags & S.EVENT_HEADER_FLAG_32_BIT_HEADER else 8,
        payload,
    )


_GUIDS: dict[bytes, str] = {}


def _guid(raw: bytes) -> str:
    text = _GUIDS.get(raw)
    if text is None:
        text = _GUIDS[raw] = S.guid_text(raw)
    return text


_LOST_KINDS = {S.RT_LOST_EVENT: "RTLostEvent", S.RT_LOST_BUFFER: "RTLostBuffer", S.RT_LOST_FILE: "RTLostFile"}


class RecordCallback:
    """What each session's EventRecordCallback hands an EVENT_RECORD address to, with the session's name.

    Never raises: an exception in an ETW callback can stop the trace. The records ETW inserts when it lost
    events (Lost_Event class: RTLostEvent, RTLostBuffer) are counted per session in ``lost``, not queued.
    """

    def __init__(self, out: RecordQueue) -> None:
        self.out = out
        self.bad = 0  # records that could not be read (NULL pointer, unreadable header)
        self.last_error = ""
        self.lost: dict[tuple[str, str], int] = {}  # (session, RTLostEvent/RTLostBuffer/RTLostFile) → records

    def __call__(self, record: Any, session: str = "") -> None:
        try:
            rec = read_record(record)
        except Exception as exc:  # counted, never raised into ETW
            self.bad += 1
            self.last_error = repr(exc)
            return
        if rec.guid == S.LOST_EVENT_GUID:
            key = (session, _LOST_KINDS.get(rec.opcode, f"RTLost{rec.opcode}"))
            self.lost[key] = self.lost.get(key, 0) + 1
            return
        self.out.offer(rec)
