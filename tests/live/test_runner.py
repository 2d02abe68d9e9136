"""The live worker gives the alerts a replay of its own recording gives (and of the .etl it came from)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from etwsensor.decode import Decoder, load_providers
from etwsensor.events import RawRecord
from etwsensor.normalize import Normalizer
from etwsensor.pipeline import Detector, replay
from etwsensor.rules import RuleSet
from etwsensor.sources import open_source
from etwsensor.sources.header import HostInfo, RecordingHeader
from etwsensor.sources.live.callback import RecordCallback, RecordQueue
from etwsensor.sources.live.runner import LiveLoop, ReorderWindow
from etwsensor.sources.recording import RecordingWriter
from tests.live.records import ETL, etl_records, event_record

RULES = {
    "proc.kql": '// id: t-proc\n// severity: low\nDeviceProcessEvents | where FileName =~ "Test.x64.exe"'
    ' | extend Reason = "test binary started" | project Timestamp, FileName, ProcessCommandLine, Reason',
    "img.kql": '// id: t-img\n// severity: low\nDeviceImageLoadEvents | where FileName endswith ".dll"'
    " | project Timestamp, FileName, FolderPath, InitiatingProcessFileName",
    "file.kql": '// id: t-file\n// severity: low\nDeviceFileEvents | where ActionType == "FileCreated"'
    " | project Timestamp, FolderPath, InitiatingProcessFileName",
}


class Collect:
    def __init__(self) -> None:
        self.alerts: list[dict[str, Any]] = []

    def send(self, alert: dict[str, Any]) -> None:
        self.alerts.append(alert)


def _rules(tmp_path: Path) -> RuleSet:
    for name, text in RULES.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    ruleset, failures = RuleSet.load([tmp_path], builtin=False)
    assert not failures and len(ruleset.rules) == 3
    return ruleset


def _comparable(alerts: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return sorted((a["alert_id"], a["rule"]["id"], repr(sorted(a["row"].items()))) for a in alerts)


def test_live_alerts_equal_the_replay_of_the_recording_and_of_the_etl(tmp_path: Path) -> None:
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    recording = tmp_path / "live.jsonl.zst"
    # the host the trace was made on, as a live header names it (the .etl names it in its SystemConfig record)
    etl_host = open_source(ETL).header.host
    assert etl_host.name == "BRIANROB-W8"
    header = RecordingHeader(host=HostInfo(name=etl_host.name, device_id=etl_host.device_id), pointer_size=8)
    known = {p.guid for p in load_providers()}
    q = RecordQueue(1 << 16)
    callback = RecordCallback(q)
    live_out = Collect()
    with RecordingWriter(recording, header) as recorder:
        detector = Detector(_rules(rules_dir), "live:test")
        loop = LiveLoop(q, Decoder(), Normalizer(header), detector, [live_out], recorder)
        for rec in etl_records():
            if rec.guid in known:
                live = event_record(rec)  # keeps the payload buffer alive while the callback copies it
                callback(live.pointer())
                while (taken := q.take(0)) is not None:
                    loop.on_record(taken)
        summary = loop.finish()
    assert q.dropped == 0 and callback.bad == 0
    assert summary.rows["DeviceProcessEvents"] == 1 and summary.rows["DeviceFileEvents"] > 0
    assert {a["rule"]["id"] for a in live_out.alerts} == {"t-proc", "t-img", "t-file"}

    replayed, from_etl = Collect(), Collect()
    for d in ("r1", "r2"):
        (tmp_path / d).mkdir()
    replay([recording], Detector(_rules(tmp_path / "r1"), "x"), [replayed])
    replay([ETL], Detector(_rules(tmp_path / "r2"), "x"), [from_etl])
    assert _comparable(live_out.alerts) == _comparable(replayed.alerts) == _comparable(from_etl.alerts)


def test_run_drains_the_queue_after_stop() -> None:
    header = RecordingHeader()
    q = RecordQueue(4096)
    callback = RecordCallback(q)
    ruleset, _ = RuleSet.load([], builtin=True)
    loop = LiveLoop(q, Decoder(), Normalizer(header), Detector(ruleset, "live:test"), [])
    records = list(etl_records(2000))
    lives = [event_record(rec) for rec in records]
    for live in lives:
        callback(live.pointer())
    loop.stop()
    loop.run(idle_timeout=0.01)  # already stopped: processes what is queued, then returns
    assert len(q) == 0
    assert sum(c.count for c in loop.decoder.stats.by_event.values()) == len(records)



PROCESS_CLASS = "3d6fa8d0-fe05-11d0-9dda-00c04fd7ba7c"
KERNEL_PROCESS = "22fb2cd6-0e7b-422b-a0c7-2fad1fd0e716"
IMAGE_CLASS = "2cb15d1d-5fc1-11d2-abe1-00a0c911f518"
TEST_PID = 3676  # Test.x64.exe, started inside the trace


def _late_process_start() -> list[RawRecord]:
    """The trace's records with Test.x64.exe's two process-start records delivered after its first image
    loads: as when they sit in another CPU's buffer, or in the other session, flushed a little later."""
    known = {p.guid for p in load_providers()}
    records = [r for r in etl_records() if r.guid in known]
    decoder = Decoder()
    starts = []
    for i, r in enumerate(records):
        ev = decoder.decode(r) if r.guid in (PROCESS_CLASS, KERNEL_PROCESS) else None
        pids = (ev.fields.get("ProcessId"), ev.fields.get("ProcessID")) if ev is not None else ()
        if ev is not None and ev.name in ("Start", "ProcessStart") and TEST_PID in pids:
            starts.append(i)
    assert len(starts) == 2
    moved = [records[i] for i in starts]
    rest = [r for i, r in enumerate(records) if i not in starts]
    first_load = next(i for i, r in enumerate(rest) if r.guid == IMAGE_CLASS and r.pid == TEST_PID)
    cut = first_load + 20  # the start arrives 20 records late: a few ms of stream time
    assert timedelta(0) < rest[cut].ts - moved[0].ts < timedelta(milliseconds=50)
    return rest[:cut] + moved + rest[cut:]


def _rows_initiated_by_test_exe(tmp_path: Path, window: ReorderWindow) -> list[str]:
    (tmp_path / "f.kql").write_text(
        "// id: t-f\n// severity: low\nDeviceImageLoadEvents | where InitiatingProcessId == 3676"
        " | project Timestamp, FolderPath, InitiatingProcessFileName\n",
        encoding="utf-8",
    )
    ruleset, failures = RuleSet.load([tmp_path / "f.kql"], builtin=False)
    assert not failures
    out = Collect()
    q = RecordQueue(1 << 16)
    loop = LiveLoop(q, Decoder(), Normalizer(RecordingHeader()), Detector(ruleset, "live:test"), [out],
                    reorder=window)  # fmt: skip
    for rec in _late_process_start():
        loop.on_record(rec)
    loop.finish()
    return [str(a["row"]["InitiatingProcessFileName"]) for a in out.alerts]


def test_the_reorder_window_gives_rows_the_process_that_started_ms_earlier_but_arrived_later(
    tmp_path: Path,
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    unordered = _rows_initiated_by_test_exe(tmp_path / "a", ReorderWindow(seconds=0))
    assert unordered.count("") >= 5  # without reordering the first rows miss their InitiatingProcess
    window = ReorderWindow(seconds=2)
    ordered = _rows_initiated_by_test_exe(tmp_path / "b", window)
    assert len(ordered) == len(unordered) and set(ordered) == {"Test.x64.exe"}
    assert window.reordered == 2 and window.late == 0


def test_the_reorder_window_is_bounded_and_releases_a_quiet_stream() -> None:
    now = [0.0]
    window = ReorderWindow(seconds=2, capacity=100, monotonic=lambda: now[0])
    decoder = Decoder()
    events = [ev for r in etl_records(3000) if (ev := decoder.decode(r)) is not None]
    released = []
    for ev in reversed(events[:500]):  # worst case: newest first
        released += window.push(ev)
    assert len(window) == 100  # never more than the capacity held
    now[0] = 1.0
    assert list(window.idle()) == []  # waited less than the window
    now[0] = 2.5
    released += window.idle()  # the stream went quiet: everything held for 2 s of wall time leaves
    assert len(window) == 0 and len(released) == 500
    # past the capacity the oldest leave early; what then comes older still is passed on at once (late)
    assert window.reordered == 100 and window.reordered + window.late == 499
