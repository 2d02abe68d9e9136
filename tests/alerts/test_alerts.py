"""Alerts, suppression, allowlists and baseline, through the pipeline a replay uses."""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from etwsensor.alerts import Alert, AllowEntry, Allowlist, SuppressionPolicy, Suppressor
from etwsensor.alerts.baseline import allowlist_toml, collect_entries
from etwsensor.pipeline import Detector, replay
from etwsensor.rules import RuleSet

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo.jsonl.zst"
T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
SEED = "6f3c1a52-0b7e-4c1e-9a51-1056001a0001"


class ListSink:
    name = "list"

    def __init__(self) -> None:
        self.alerts: list[dict[str, Any]] = []

    def send(self, alert: dict[str, Any]) -> None:
        self.alerts.append(alert)


@pytest.fixture(scope="module")
def builtin() -> RuleSet:
    ruleset, failures = RuleSet.load([], builtin=True)
    assert failures == []
    return ruleset


def powershell_row(
    ts: datetime, report_id: int, cmd: str = "powershell -c GetAsyncKeyState"
) -> dict[str, Any]:
    return {
        "Timestamp": ts,
        "DeviceId": "dev-1",
        "DeviceName": "ws01",
        "ActionType": "ProcessCreated",
        "FileName": "powershell.exe",
        "FolderPath": "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe",
        "ProcessCommandLine": cmd,
        "InitiatingProcessFileName": "explorer.exe",
        "InitiatingProcessFolderPath": "C:\\Windows\\explorer.exe",
        "AccountName": "alice",
        "ReportId": report_id,
    }


def test_an_alert_follows_the_published_schema(builtin: RuleSet) -> None:
    det = Detector(builtin, "test.jsonl")
    alerts = det.on_row("DeviceProcessEvents", powershell_row(T0, 1), T0)
    assert alerts, "a GetAsyncKeyState command line must alert"
    for a in alerts:
        model = Alert.model_validate(a)  # every field of the documented schema, nothing else
        assert model.schema_version == "1.0"
        assert model.host.name == "ws01" and model.host.device_id == "dev-1"
        assert model.time == T0 and model.table == "DeviceProcessEvents"
        assert model.sensor.source == "test.jsonl"
        assert "T1056.001" in model.rule.techniques
    seed = next(a for a in alerts if a["rule"]["id"] == SEED)
    assert seed["reason"] == "Process with keylogger API or filename pattern"
    assert seed["row"]["ProcessCommandLine"] == "powershell -c GetAsyncKeyState"
    assert seed["row"]["Timestamp"] == "2026-11-20T09:00:00.000000Z"


def test_alert_id_is_stable_and_tells_events_apart(builtin: RuleSet) -> None:
    first = Detector(builtin, "a").on_row("DeviceProcessEvents", powershell_row(T0, 1), T0)
    again = Detector(builtin, "b").on_row("DeviceProcessEvents", powershell_row(T0, 1), T0)
    other = Detector(builtin, "a").on_row("DeviceProcessEvents", powershell_row(T0, 2), T0)
    assert [a["alert_id"] for a in first] == [a["alert_id"] for a in again]
    assert not {a["alert_id"] for a in first} & {a["alert_id"] for a in other}
    assert len({a["alert_id"] for a in first}) == len(first)  # one per rule


def test_suppression_counts_repeats_within_the_window(builtin: RuleSet) -> None:
    det = Detector(builtin, "t", suppressor=Suppressor(SuppressionPolicy(timedelta(minutes=10))))
    sent = [
        det.on_row("DeviceProcessEvents", powershell_row(T0 + timedelta(minutes=m), m), T0) for m in range(5)
    ]
    seeds = [[a for a in batch if a["rule"]["id"] == SEED] for batch in sent]
    assert [len(s) for s in seeds] == [1, 0, 0, 0, 0]
    later = det.on_row("DeviceProcessEvents", powershell_row(T0 + timedelta(minutes=11), 99), T0)
    (seed,) = [a for a in later if a["rule"]["id"] == SEED]
    assert seed["suppressed_count"] == 4
    assert det.suppressor.suppressed[SEED] == 4
    # A different key (another folder) is not suppressed by the first.
    row = powershell_row(T0 + timedelta(minutes=12), 100)
    row["InitiatingProcessFolderPath"] = "C:\\Users\\alice\\AppData\\Local\\Temp\\x.exe"
    assert any(a["rule"]["id"] == SEED for a in det.on_row("DeviceProcessEvents", row, T0))


def test_allowlist_silences_before_alerting(builtin: RuleSet) -> None:
    allow = Allowlist(
        [
            AllowEntry(
                rule=SEED,
                column="InitiatingProcessFolderPath",
                operator="endswith",
                value="\\EXPLORER.EXE",
                comment="case-insensitive",
            )
        ]
    )
    det = Detector(builtin, "t", allowlist=allow)
    alerts = det.on_row("DeviceProcessEvents", powershell_row(T0, 1), T0)
    assert SEED not in {a["rule"]["id"] for a in alerts}
    assert alerts, "the other rules still alert"
    assert allow.silenced[SEED] == 1
    regex = Allowlist(
        [AllowEntry(rule="*", column="ProcessCommandLine", operator="matches", value=r"Get\w+State")]
    )
    assert (
        Detector(builtin, "t", allowlist=regex).on_row("DeviceProcessEvents", powershell_row(T0, 1), T0) == []
    )


def test_allowlist_rejects_a_bad_regex() -> None:
    with pytest.raises(ValueError, match="invalid RE2 pattern"):
        AllowEntry(rule="*", column="FileName", operator="matches", value="(")


def test_the_demo_raises_every_seed_reason_and_every_tuned_rule(builtin: RuleSet) -> None:
    sink = ListSink()
    summary = replay([DEMO], Detector(builtin, str(DEMO)), [sink])
    reasons = {a["reason"] for a in sink.alerts if a["rule"]["id"] == SEED}
    assert reasons == {
        "Suspicious user32.dll load by unusual process",
        "Process with keylogger API or filename pattern",
        "Keylogger-related service registry entry",
        "File creation with keylogger-related name",
    }
    assert {a["rule"]["id"] for a in sink.alerts} == {r.id for r in builtin.rules}
    directinput = [a for a in sink.alerts if "DirectInput" in a["rule"]["name"]]
    assert directinput and "MostRecentApplication" in directinput[0]["row"]["RegistryKey"]
    assert summary.damage == [] and summary.decode_errors == 0
    assert summary.alerts.total() == len(sink.alerts)


def test_baseline_writes_entries_that_silence_the_recording(builtin: RuleSet, tmp_path: Path) -> None:
    collector = collect_entries()
    replay(
        [DEMO], Detector(builtin, "demo", suppressor=Suppressor(SuppressionPolicy(timedelta(0)))), [collector]
    )
    text = allowlist_toml(collector.entries(), [str(DEMO)])
    entries = [AllowEntry(**{k: v for k, v in e.items()}) for e in tomllib.loads(text)["allowlist"]]
    assert entries
    sink = ListSink()
    replay([DEMO], Detector(builtin, "demo", allowlist=Allowlist(entries)), [sink])
    assert sink.alerts == []
