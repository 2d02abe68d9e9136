"""The trace command's live wiring on Linux: fake host and sessions, everything else real.

The fake sessions feed the perfview .etl's records through the real callback on their own thread; the
command's queue, worker, watchdog, recording, sinks and summary run as on Windows.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from etwsensor.config import load_settings
from etwsensor.pipeline import Detector, replay, suppressor_from
from etwsensor.rules import RuleSet
from etwsensor.sources.live import cli as live_cli
from etwsensor.sources.live.callback import RecordCallback
from etwsensor.sources.live.plan import TracePlan, plan_for_rules
from etwsensor.sources.recording import RecordingReader
from tests.live.fakes import FakeHost, FakeSessions

RULE = (
    "// id: t-img\n// severity: low\n"
    'DeviceImageLoadEvents | where FileName endswith ".dll" | project Timestamp, FileName, FolderPath\n'
)


class Collect:
    def __init__(self) -> None:
        self.alerts: list[dict[str, object]] = []

    def send(self, alert: dict[str, object]) -> None:
        self.alerts.append(alert)


def test_trace_runs_records_alerts_and_reports_a_tamper(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(live_cli, "POLL_SECONDS", 0.05)
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "img.kql").write_text(RULE, encoding="utf-8")
    ruleset, failures = RuleSet.load([tmp_path / "rules"], builtin=False)
    assert not failures
    plan = plan_for_rules(ruleset, instance="99")
    made: list[FakeSessions] = []

    def make(p: TracePlan, callback: RecordCallback) -> FakeSessions:
        made.append(FakeSessions(p, callback))
        return made[-1]

    alerts_file, recording = tmp_path / "alerts.ndjson", tmp_path / "live.jsonl.zst"
    live_cli.run_live(plan, ruleset, load_settings(None), [f"file:{alerts_file}"], recording, 1.0, True,
                      FakeHost(), make)  # fmt: skip
    (sessions,) = made
    assert sessions.calls == ["start", "restart etwsensor-kernel-99", "stop"]
    err = capsys.readouterr().err.strip().splitlines()
    summary = json.loads(err[-1])
    assert err[-2] == f"recorded {summary['events']} events to {recording}"
    assert summary["live"]["queue"]["dropped"] == 0
    assert summary["live"]["queue"]["offered"] == sessions.fed > 5000
    assert summary["live"]["health"]["sessions"]["etwsensor-kernel-99"]["restarts"] == 1

    alerts = [json.loads(line) for line in alerts_file.read_text("utf-8").splitlines()]
    health = [a for a in alerts if a["table"] == "SensorHealth"]
    assert [a["rule"]["id"] for a in health] == ["etwsensor-etw-session-tamper"]
    assert health[0]["sensor"]["source"] == "live:etwsensor-kernel-99"
    detections = sorted(a["alert_id"] for a in alerts if a["table"] != "SensorHealth")
    assert 0 < len(detections) <= 35  # 35 dll loads in the trace, less what the default suppression holds

    reader = RecordingReader(recording)
    assert reader.header.host.name == "ws01" and reader.header.sids == {
        "S-1-5-21-1-2-3-1001": "CONTOSO\\alice"
    }
    replayed = Collect()
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "img.kql").write_text(RULE, encoding="utf-8")
    sup = load_settings(None).suppression
    per_rule = {k: (v.window_seconds, v.key_columns) for k, v in sup.rules.items()}
    suppressor = suppressor_from(sup.window_seconds, sup.key_columns, per_rule)
    replay(
        [recording],
        Detector(RuleSet.load([tmp_path / "r"], builtin=False)[0], "x", None, suppressor),
        [replayed],
    )
    assert sorted(str(a["alert_id"]) for a in replayed.alerts) == detections


def test_a_session_that_cannot_start_stops_the_others_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import typer

    from etwsensor.sources.live.session import LiveError, start_error

    ruleset, _ = RuleSet.load([], builtin=True)
    plan = plan_for_rules(ruleset, instance="5")

    class NoRoom(FakeSessions):
        def start(self) -> None:
            self.calls.append("start")
            raise LiveError(start_error(1450, "etwsensor-providers-5"))

    made: list[FakeSessions] = []

    def make(p: TracePlan, callback: RecordCallback) -> FakeSessions:
        made.append(NoRoom(p, callback))
        return made[-1]

    with pytest.raises(typer.Exit) as exit_info:
        sinks = [f"file:{tmp_path / 'a.ndjson'}"]
        live_cli.run_live(plan, ruleset, load_settings(None), sinks, None, 1.0, False, FakeHost(), make)
    assert exit_info.value.exit_code == 2
    assert made[0].calls == ["start", "stop"]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "EtwMaxLoggers" in err
