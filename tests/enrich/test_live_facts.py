"""Live enrichment: facts computed by the worker thread, bounded waits, and recordings that replay to
the same rows (the ImageFacts events go in before the event whose rows they completed)."""

from __future__ import annotations

import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from etwsensor.decode import Decoder
from etwsensor.enrich import CollectedFiles, Enricher, FactsWorker, parse_files_from
from etwsensor.enrich.files import Locator
from etwsensor.normalize import Normalizer
from etwsensor.pipeline import Detector
from etwsensor.rules import RuleSet
from etwsensor.sources import open_source
from etwsensor.sources.live.callback import RecordQueue
from etwsensor.sources.live.runner import LiveLoop
from etwsensor.sources.recording import RecordingReader, RecordingWriter
from tests.enrich.collection import DEMO, make_collection, sha256_of


class RowTap(Detector):
    """The detector, keeping a copy of every row it is given."""

    def __init__(self) -> None:
        super().__init__(RuleSet.load([], builtin=True)[0], "live:test")
        self.rows: list[tuple[str, dict[str, Any]]] = []

    def on_row(self, table: str, row: dict[str, Any], now: datetime | None) -> list[dict[str, Any]]:
        self.rows.append((table, dict(row)))
        return super().on_row(table, row, now)


def _replayed_rows(recording: Path) -> list[tuple[str, dict[str, Any]]]:
    reader = RecordingReader(recording)
    normalizer = Normalizer(reader.header)
    rows: list[tuple[str, dict[str, Any]]] = []
    for ev in reader.events():
        rows.extend((t, dict(r)) for t, r in normalizer.process(ev))
    rows.extend((t, dict(r)) for t, r in normalizer.flush())
    return rows


def test_a_live_recording_replays_to_the_same_enriched_rows(tmp_path: Path) -> None:
    root = make_collection(tmp_path / "disk")
    source = open_source(DEMO)
    worker = FactsWorker(CollectedFiles(parse_files_from(str(root))))
    worker.start()
    facts = Enricher(worker, wait_seconds=0.002, record=True)
    tap = RowTap()
    recording = tmp_path / "live.jsonl.zst"
    with RecordingWriter(recording, source.header) as recorder:
        loop = LiveLoop(RecordQueue(16), Decoder(), Normalizer(source.header, facts=facts), tap, [], recorder)
        for ev in source.events():
            loop.on_event(ev)
        loop.finish()
    worker.close()
    live = tap.rows
    assert any(r.get("SHA256") == sha256_of("C:\\Windows\\System32\\notepad.exe") for _, r in live)
    assert any(r.get("InitiatingProcessVersionInfoOriginalFileName") == "t64.exe" for _, r in live)
    replayed = _replayed_rows(recording)
    assert replayed == live
    stats = Normalizer(source.header).stats()  # a replay of the demo itself has no facts at all
    assert "enrich" not in stats


class GatedFiles(Locator):
    """A disk that answers only when the test lets it: the worker is as slow as the test wants."""

    def __init__(self, inner: Locator) -> None:
        self.inner = inner
        self.gate = threading.Event()

    def locate(self, path: str) -> Path | None:
        self.gate.wait(30)
        return self.inner.locate(path)

    def describe(self) -> str:
        return "gated"


def test_a_row_waits_at_most_the_bound_then_later_rows_get_the_facts(tmp_path: Path) -> None:
    root = make_collection(tmp_path / "disk")
    gated = GatedFiles(CollectedFiles(parse_files_from(str(root))))
    worker = FactsWorker(gated)
    worker.start()
    facts = Enricher(worker, wait_seconds=0.01)
    normalizer = Normalizer(open_source(DEMO).header, facts=facts)
    notepad_rows: list[dict[str, Any]] = []
    try:
        for ev in open_source(DEMO).events():
            for table, row in normalizer.process(ev):
                if table == "DeviceProcessEvents" and row["FolderPath"].endswith("notepad.exe"):
                    notepad_rows.append(row)
                    gated.gate.set()  # the disk answers only after the first notepad row went out
                    worker.wait({row["FolderPath"]}, deadline=time.monotonic() + 30)
    finally:
        gated.gate.set()
        worker.close()
    assert len(notepad_rows) > 1
    assert "SHA256" not in notepad_rows[0]  # it waited 10 ms, then went out without
    assert all(r["SHA256"] == sha256_of("C:\\Windows\\System32\\notepad.exe") for r in notepad_rows[1:])
    stats = normalizer.stats()["enrich"]
    assert stats["wait_timeouts"] >= 1 and stats["rows_filled"] > 0


def test_the_budget_refuses_big_files_and_the_queue_is_bounded(tmp_path: Path) -> None:
    from etwsensor.enrich import Budget

    root = make_collection(tmp_path / "disk")
    worker = FactsWorker(CollectedFiles(parse_files_from(str(root))), Budget(max_file_size=50_000),
                         synchronous=True)  # fmt: skip
    worker.request("C:\\Windows\\System32\\svchost.exe")  # the 1 MB shim
    worker.request("C:\\Windows\\System32\\reg.exe")  # 14 KB
    big, small = worker.done()
    assert big.error == "too_large" and big.size and not big.sha1
    assert small.error == "" and small.sha1
    queued = FactsWorker(CollectedFiles({}), max_pending=2)  # never started: nothing is taken off
    assert [queued.request(f"C:\\{i}") for i in range(3)] == [True, True, False]
    assert queued.stats()["dropped_requests"] == 1


def test_a_recording_with_damaged_image_facts_counts_them_and_goes_on(tmp_path: Path) -> None:
    from etwsensor.enrich import ImageFacts, facts_event
    from etwsensor.sources.recording import write_recording

    source = open_source(DEMO)
    events = list(source.events())
    good = facts_event(ImageFacts(path="C:\\Windows\\explorer.exe", size=3, sha1="ab", sha256="cd", md5="ef"),
                       events[0].ts)  # fmt: skip
    bad = facts_event(ImageFacts(path="C:\\x.exe"), events[0].ts)
    bad.fields["Path"] = 42  # a path that is not a string
    recording = tmp_path / "damaged.jsonl"
    write_recording(recording, source.header, [bad, good, *events])
    rows = _replayed_rows(recording)
    reader = RecordingReader(recording)
    normalizer = Normalizer(reader.header)
    for ev in reader.events():
        normalizer.process(ev)
    assert normalizer.bad_events == 1 and "ImageFacts" in normalizer.error_samples[0]
    by_explorer = [r for _, r in rows if r.get("InitiatingProcessFolderPath") == "C:\\Windows\\explorer.exe"]
    assert by_explorer and all(r["InitiatingProcessSHA1"] == "ab" and r["InitiatingProcessFileSize"] == 3
                               for r in by_explorer)  # fmt: skip
