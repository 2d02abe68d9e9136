"""Row gates: rows no loaded rule can match are counted but not built. Nothing else may change:
the same alerts (alert_id includes ReportId, so row numbering too), the same row counts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from etwsensor.pipeline import Detector, ReplaySummary, replay
from etwsensor.rules import RuleSet

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo.jsonl.zst"


class Collect:
    def __init__(self) -> None:
        self.alerts: list[dict[str, Any]] = []

    def send(self, alert: dict[str, Any]) -> None:
        self.alerts.append(alert)


def _replay(
    ruleset: RuleSet, gated: bool, monkeypatch: pytest.MonkeyPatch
) -> tuple[list[Any], ReplaySummary]:
    with monkeypatch.context() as m:
        if not gated:
            m.setattr(RuleSet, "row_gates", lambda self: {})
        sink = Collect()
        summary = replay([DEMO], Detector(ruleset, str(DEMO)), [sink])
    alerts = [
        (a["alert_id"], a["rule"]["id"], a["table"], a["row"], a["suppressed_count"]) for a in sink.alerts
    ]
    return alerts, summary


IMAGE_BY_INITIATOR = """\
DeviceImageLoadEvents
| where InitiatingProcessFileName =~ "inputsvc.exe"
| project Timestamp, FileName, InitiatingProcessFolderPath
"""
EVERY_FILE_ROW = """\
DeviceFileEvents
| where strlen(FolderPath) > 400
| project Timestamp, FolderPath
"""
FILE_BY_ACTION = """\
DeviceFileEvents
| where ActionType == "FileCreated" and FileName endswith ".log"
| project Timestamp, FolderPath, InitiatingProcessFileName
"""


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"by_initiator.kql": IMAGE_BY_INITIATOR},  # gate decided on the initiating process's columns
        {"every_file_row.kql": EVERY_FILE_ROW},  # no needle: every file row evaluated, no file gate
        {"by_action.kql": FILE_BY_ACTION},
    ],
)
def test_gated_replay_gives_the_same_alerts_and_counts(
    extra: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, text in extra.items():
        (tmp_path / name).write_text(text)
    ruleset, failures = RuleSet.load([tmp_path], builtin=True)
    assert failures == []
    gated_alerts, gated = _replay(ruleset, True, monkeypatch)
    ruleset, _ = RuleSet.load([tmp_path], builtin=True)  # fresh prefilter memos
    plain_alerts, plain = _replay(ruleset, False, monkeypatch)
    assert gated_alerts == plain_alerts and len(gated_alerts) >= 14
    assert gated.rows == plain.rows and gated.rows_by_action == plain.rows_by_action
    assert gated.unresolved == plain.unresolved
    assert plain.rows_skipped == {}
    assert gated.rows_skipped["DeviceImageLoadEvents"] > 0  # the built-in pack lets most image loads go
    if "every_file_row.kql" in extra:
        assert "DeviceFileEvents" not in gated.rows_skipped


def test_tables_no_rule_reads_are_never_built(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "proc.kql").write_text('DeviceProcessEvents\n| where FileName =~ "powershell.exe"\n')
    ruleset, _ = RuleSet.load([tmp_path], builtin=False)
    gates = ruleset.row_gates()
    assert not gates["DeviceImageLoadEvents"].might_match({"FileName": "user32.dll"}, None)
    _, summary = _replay(ruleset, True, monkeypatch)
    assert summary.rows_skipped["DeviceImageLoadEvents"] == summary.rows["DeviceImageLoadEvents"] > 0
    assert summary.rows_skipped["DeviceFileEvents"] == summary.rows["DeviceFileEvents"] > 0
