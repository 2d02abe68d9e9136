"""EVENT_RECORD pointer → RawRecord → Decoder, fed with real records of the perfview .etl.

The records are rebuilt as the EVENT_RECORDs a real-time consumer receives and go through the very
callback the live session registers; the RawEvents must equal those EtlSource decodes from the file.
"""

from __future__ import annotations

import ctypes
import threading
from datetime import UTC, datetime

from etwsensor.decode import Decoder, load_providers
from etwsensor.events import RawRecord
from etwsensor.sources.etl_source import EtlSource
from etwsensor.sources.live import structs as S
from etwsensor.sources.live.callback import (
    RecordCallback,
    RecordQueue,
    datetime_to_filetime,
    filetime_to_datetime,
    read_record,
)
from tests.live.records import ETL, etl_records, event_record


def _drain(q: RecordQueue) -> list[RawRecord]:
    out = []
    while (rec := q.take(0)) is not None:
        out.append(rec)
    return out


def test_every_record_reads_back_field_for_field() -> None:
    originals = [r for i, r in enumerate(etl_records()) if i % 25 == 0]  # spread over the whole trace
    lives = [event_record(r, with_stack=i % 7 == 0) for i, r in enumerate(originals)]
    q = RecordQueue(len(lives))
    callback = RecordCallback(q)
    for live in lives:
        callback(live.pointer())
    got = _drain(q)
    assert callback.bad == 0 and q.dropped == 0
    # guid, manifest/classic, id, opcode, version, ts, pid, tid, cpu, pointer size, payload
    assert got == originals
    kinds = {(r.manifest, bool(r.payload)) for r in got}
    assert (True, True) in kinds and (False, True) in kinds


def test_the_live_path_decodes_to_the_same_raw_events_as_the_etl_source() -> None:
    expected = list(EtlSource(ETL).events())
    decoder = Decoder()
    q = RecordQueue(1 << 18)
    callback = RecordCallback(q)
    got = []
    known = {p.guid for p in load_providers()}
    others = 0
    for rec in etl_records():
        if rec.guid not in known:  # CLR, stacks...: a sample shows they are dropped the same way
            others += 1
            if others % 50:
                continue
        live = event_record(rec)
        callback(live.pointer())
        taken = q.take(0)
        assert taken is not None
        ev = decoder.decode(taken)
        if ev is not None:
            got.append(ev)
    assert len(got) == len(expected) > 5_000
    assert got == expected
    providers = {e.provider for e in got}
    assert {"Process", "Image", "FileIo", "Microsoft-Windows-Kernel-Process",
            "Microsoft-Windows-Kernel-File", "SystemConfigEx"} <= providers  # fmt: skip


def test_a_full_queue_drops_and_counts_and_never_blocks() -> None:
    q = RecordQueue(maxsize=10)
    callback = RecordCallback(q)
    lives = [event_record(r) for r in etl_records(25)]
    for live in lives:
        callback(live.pointer())
    assert (q.offered, q.dropped, len(q), q.high_water) == (25, 15, 10, 10)
    first = _drain(q)
    assert [r.ts for r in first] == [read_record(x.pointer()).ts for x in lives[:10]]  # the oldest are kept
    callback(lives[-1].pointer())
    assert q.stats() == {"offered": 26, "dropped": 15, "queued": 1, "high_water": 10, "capacity": 10}


def test_an_unreadable_record_is_counted_and_never_raised_into_etw() -> None:
    q = RecordQueue(4)
    callback = RecordCallback(q)
    callback(ctypes.POINTER(S.EVENT_RECORD)())  # NULL
    callback(None)
    assert callback.bad == 2 and q.offered == 0
    assert "NULL" in callback.last_error or "None" in callback.last_error


def test_filetime_round_trips_to_the_microsecond() -> None:
    ts = datetime(2014, 8, 28, 17, 3, 11, 123456, tzinfo=UTC)
    assert filetime_to_datetime(datetime_to_filetime(ts)) == ts
    assert datetime_to_filetime(datetime(1601, 1, 1, tzinfo=UTC)) == 0


def test_guids_read_as_windows_lays_them_out() -> None:
    text = "22fb2cd6-0e7b-422b-a0c7-2fad1fd0e716"
    assert S.guid_text(bytes(S.GUID.from_text(text))) == text


def test_two_consumer_threads_offering_at_once_are_counted_exactly() -> None:
    q = RecordQueue(maxsize=5000)
    lives = [event_record(r) for r in etl_records(4000)]
    callbacks = [RecordCallback(q), RecordCallback(q)]  # one per session, as on Windows

    def feed(cb: RecordCallback) -> None:
        for live in lives:
            cb(live.pointer())

    threads = [threading.Thread(target=feed, args=(cb,)) for cb in callbacks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (q.offered, q.dropped, len(q)) == (8000, 3000, 5000)


def test_take_waits_for_a_record_offered_later() -> None:
    q = RecordQueue(4)
    rec = next(etl_records(1))
    timer = threading.Timer(0.05, q.offer, args=(rec,))
    timer.start()
    assert q.take(timeout=5) == rec
    assert q.take(timeout=0.01) is None
    timer.join()


def test_the_processor_number_is_a_byte_unless_the_header_says_processor_index() -> None:
    rec = next(etl_records(1))
    live = event_record(rec)
    live.record.BufferContext.ProcessorIndex = 0x0703  # ProcessorNumber 3, Alignment byte 7
    assert read_record(live.pointer()).cpu == 3
    live.record.EventHeader.Flags |= S.EVENT_HEADER_FLAG_PROCESSOR_INDEX
    assert read_record(live.pointer()).cpu == 0x0703


def test_etw_lost_event_records_are_counted_per_session_not_queued() -> None:
    q = RecordQueue(16)
    callback = RecordCallback(q)
    lost = []
    for opcode in (32, 32, 33):  # RTLostEvent, RTLostEvent, RTLostBuffer
        live = event_record(next(etl_records(1)))
        live.record.EventHeader.ProviderId = S.GUID.from_text(S.LOST_EVENT_GUID)
        live.record.EventHeader.Flags |= S.EVENT_HEADER_FLAG_CLASSIC_HEADER
        live.record.EventHeader.EventDescriptor.Opcode = opcode
        lost.append(live)
        callback(ctypes.addressof(live.record), "etwsensor-kernel")
    callback(event_record(next(etl_records(1))).pointer(), "etwsensor-kernel")
    assert callback.lost == {("etwsensor-kernel", "RTLostEvent"): 2, ("etwsensor-kernel", "RTLostBuffer"): 1}
    assert q.offered == 1
