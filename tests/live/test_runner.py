"""The live worker gives the alerts a replay of its own recording gives (and of the .etl it came from)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from etwsensor.decode import Decoder, load_providers
from etwsensor.normalize import Normalizer
from etwsensor.pipeline import Detector, replay
from etwsensor.rules import RuleSet
from etwsensor.sources.header import HostInfo, RecordingHeader
from etwsensor.sources.live.callback import RecordCallback, RecordQueue
from etwsensor.sources.live.runner import LiveLoop
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
    header = RecordingHeader(host=HostInfo(name="", device_id=""), pointer_size=8)
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
