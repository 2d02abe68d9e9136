"""Stateful rules through their entry points: replay of a row file, `rules check`, the rule set's
watermark (lateness, wall-clock advance), bounded state and the dcount estimate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from etwsensor.alerts.allowlist import Allowlist
from etwsensor.pipeline import Detector
from etwsensor.rules import aggregates
from etwsensor.rules.frontend import parse
from etwsensor.rules.plan import Clock
from etwsensor.rules.query import QueryCompiler
from etwsensor.rules.ruleset import Rule, RuleSet
from etwsensor.rules.stateful import ALLOWED_LATENESS, MAX_GROUPS

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
TABLE = "DeviceRegistryEvents"


def cli(*args: str, cache: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ETWSENSOR_CACHE_DIR=str(cache))
    return subprocess.run(
        [sys.executable, "-m", "etwsensor", *args], capture_output=True, text=True, env=env, check=False
    )


def _row(i: int, seconds: float, pid: int, key: str | None, table: str = TABLE) -> dict[str, Any]:
    row = {
        "$table": table,
        "Timestamp": (T0 + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z"),
        "DeviceName": "ws1",
        "DeviceId": "d1",
        "ActionType": "RegistryValueSet" if table == TABLE else "FileCreated",
        "InitiatingProcessId": pid,
        "InitiatingProcessFileName": f"p{pid}.exe",
        "ReportId": i,
    }
    if key is not None:
        row["RegistryKey"] = key
    return row


RUN_KEYS = """// id: run-keys-burst
// name: Many Run keys set by one process
// severity: high
DeviceRegistryEvents
| where RegistryKey has @"\\CurrentVersion\\Run"
| summarize n = count(), keys = make_set(RegistryKey) by DeviceId, InitiatingProcessId, bin(Timestamp, 5m)
| where n >= 3
"""


def test_replay_alerts_once_per_window_with_keys_aggregates_and_report_ids(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "burst.kql").write_text(RUN_KEYS)
    lines = [
        # pid 10: four Run keys within a window (alert once, at the third), pid 11: two (no alert)
        _row(1, 10, 10, r"HKLM\Software\Microsoft\Windows\CurrentVersion\Run\a"),
        _row(2, 20, 11, r"HKLM\Software\Microsoft\Windows\CurrentVersion\Run\b"),
        _row(3, 30, 10, r"HKLM\Software\Microsoft\Windows\CurrentVersion\Run\c"),
        _row(4, 40, 10, r"HKLM\Software\Microsoft\Windows\CurrentVersion\RunOnce\d"),
        _row(5, 50, 10, r"HKLM\Software\Microsoft\Windows\CurrentVersion\Run\e"),
        _row(6, 60, 11, r"HKLM\Software\Microsoft\Windows\CurrentVersion\Run\f"),
        _row(7, 70, 10, r"HKLM\Software\Other"),
    ]
    rows = tmp_path / "rows.ndjson"
    rows.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    r = cli("replay", str(rows), "--no-builtin", "--rules", str(rules), "--json-summary", cache=tmp_path)
    assert r.returncode == 0, r.stderr
    alerts = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(alerts) == 1
    (alert,) = alerts
    assert alert["rule"]["id"] == "run-keys-burst"
    assert alert["row"]["InitiatingProcessId"] == 10 and alert["row"]["n"] == 3
    assert alert["row"]["Timestamp"].startswith("2026-11-20T09:00:00")
    assert len(alert["row"]["keys"]) == 3
    assert alert["report_ids"] == [1, 3, 5]  # RunOnce is not the term Run
    assert alert["host"]["name"] == "ws1" and alert["time"].startswith("2026-11-20T09:00:50")
    summary = json.loads(r.stderr.strip().splitlines()[-1])
    assert summary["stateful_rules"]["run-keys-burst"]["evicted"] == 0


def test_a_window_open_at_the_end_of_the_replay_is_flushed(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "total.kql").write_text(
        "DeviceRegistryEvents\n| summarize n = count() by InitiatingProcessId, bin(Timestamp, 1h)\n"
        "| where n == 2\n"
    )
    rows = tmp_path / "rows.ndjson"
    rows.write_text("\n".join(json.dumps(_row(i, i, 5, "k")) for i in (1, 2)) + "\n")
    r = cli("replay", str(rows), "--no-builtin", "--rules", str(rules), cache=tmp_path)
    assert r.returncode == 0, r.stderr
    (alert,) = [json.loads(line) for line in r.stdout.splitlines()]
    assert alert["row"]["n"] == 2 and alert["report_ids"] == [1, 2]
    r = cli("rules", "test", str(rules / "total.kql"), str(rows), cache=tmp_path)
    assert r.returncode == 0, r.stderr
    assert [json.loads(line)["n"] for line in r.stdout.splitlines()] == [2]


def test_join_in_a_replay(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "j.kql").write_text(
        "DeviceProcessEvents | where FileName =~ 'dropper.exe'\n"
        "| join kind=inner (DeviceFileEvents | where FileName endswith '.log') on $left.ProcessId == "
        "$right.InitiatingProcessId\n"
        "| where Timestamp1 between (Timestamp .. (Timestamp + 2m))\n"
        "| project Timestamp, ProcessId, LogFile = FileName1\n"
    )
    proc = dict(_row(1, 0, 1, None, "DeviceProcessEvents"), FileName="dropper.exe", ProcessId=42)
    proc["ActionType"] = "ProcessCreated"
    near = dict(_row(2, 60, 42, None, "DeviceFileEvents"), FileName="keys.log")
    far = dict(_row(3, 600, 42, None, "DeviceFileEvents"), FileName="late.log")
    rows = tmp_path / "rows.ndjson"
    rows.write_text("\n".join(json.dumps(x) for x in (proc, near, far)) + "\n")
    r = cli("replay", str(rows), "--no-builtin", "--rules", str(rules), cache=tmp_path)
    assert r.returncode == 0, r.stderr
    (alert,) = [json.loads(line) for line in r.stdout.splitlines()]
    assert alert["row"]["LogFile"] == "keys.log" and alert["report_ids"] == [1, 2]
    assert alert["table"] == "DeviceFileEvents"  # the row that completed the pair


def test_refused_forms_are_reported_with_their_reason(tmp_path: Path) -> None:
    cases = {
        "nowindow.kql": ("DeviceProcessEvents | summarize count() by FileName", "needs a window"),
        "kind.kql": ("DeviceProcessEvents | join (DeviceFileEvents) on DeviceId", "join kind=innerunique"),
        "band.kql": (
            "DeviceProcessEvents | join kind=inner (DeviceFileEvents) on DeviceId",
            "needs a time band",
        ),
        "two.kql": (
            "DeviceProcessEvents | summarize c = count() by FileName, bin(Timestamp, 1m) "
            "| summarize count() by bin(Timestamp, 1h)",
            "only one summarize or join",
        ),
        "agg.kql": (
            "DeviceProcessEvents | summarize percentile(FileSize, 50) by bin(Timestamp, 1m)",
            "'percentile' is not an aggregation",
        ),
    }
    for name, (kql, _reason) in cases.items():
        (tmp_path / name).write_text(kql + "\n")
    r = cli("rules", "check", *(str(tmp_path / n) for n in cases), cache=tmp_path)
    assert r.returncode == 1
    for name, (_kql, reason) in cases.items():
        line = next(x for x in r.stdout.splitlines() if x.startswith(str(tmp_path / name)))
        assert reason in line, line


def _ruleset(kql: str) -> RuleSet:
    clock = Clock()
    plan = QueryCompiler(parse(kql), clock).compile()
    return RuleSet([Rule("r", "r", kql, "test", plan=plan)], clock)


def _reg(i: int, ts: datetime, pid: int) -> dict[str, Any]:
    return {"Timestamp": ts, "InitiatingProcessId": pid, "ReportId": i, "RegistryKey": "k"}


def test_late_rows_beyond_the_lateness_are_counted_and_dropped() -> None:
    rs = _ruleset(f"{TABLE} | summarize n = count() by bin(Timestamp, 1m)")
    out = rs.evaluate(TABLE, _reg(1, T0, 1), T0)
    later = T0 + timedelta(minutes=1) + ALLOWED_LATENESS  # the first minute's window closes here
    out += rs.evaluate(TABLE, _reg(2, later, 1), later)
    assert [m.row["n"] for m in out] == [1]
    within = later - ALLOWED_LATENESS + timedelta(seconds=1)  # still open: counted
    beyond = T0 + timedelta(seconds=30)  # its window closed: late
    assert rs.evaluate(TABLE, _reg(3, within, 1), later) == []
    assert rs.evaluate(TABLE, _reg(4, beyond, 1), later) == []
    assert rs.state_stats()["r"]["late"] == 1
    assert sorted(m.row["n"] for m in rs.flush()) == [1, 1]


def test_an_idle_live_stream_closes_windows_by_the_wall_clock() -> None:
    rs = _ruleset(f"{TABLE} | summarize n = count() by InitiatingProcessId, bin(Timestamp, 5m)")
    detector = Detector(rs, "live:test", Allowlist())
    assert detector.on_row(TABLE, _reg(1, T0, 7), T0) == []
    assert detector.tick(T0 + timedelta(minutes=6)) == []  # within the lateness
    (alert,) = detector.tick(T0 + timedelta(minutes=5) + ALLOWED_LATENESS)
    assert alert["row"]["n"] == 1 and alert["report_ids"] == [1]
    assert alert["table"] == TABLE and alert["time"].startswith("2026-11-20T09:00:00")
    assert rs.flush() == []  # already closed


def test_groups_are_bounded_and_evictions_counted() -> None:
    rs = _ruleset(f"{TABLE} | summarize n = count() by InitiatingProcessId, bin(Timestamp, 1h)")
    extra = 25
    for i in range(MAX_GROUPS + extra):
        rs.evaluate(TABLE, _reg(i, T0, i), T0)
    rs.advance(T0)
    stats = rs.state_stats()["r"]
    assert stats["state"] == MAX_GROUPS and stats["evicted"] == extra
    out = rs.flush()
    assert len(out) == MAX_GROUPS
    assert min(m.row["InitiatingProcessId"] for m in out) == extra  # the oldest went first


def test_dcount_is_exact_up_to_its_bound_then_close() -> None:
    rs = _ruleset(f"{TABLE} | summarize d = dcount(InitiatingProcessId) by bin(Timestamp, 1h)")
    n = aggregates.DCOUNT_EXACT * 2 + 123
    for i in range(n):
        rs.evaluate(TABLE, _reg(i, T0, i % n), T0)
        rs.evaluate(TABLE, _reg(i, T0, i % n), T0)  # every value twice
    (m,) = rs.flush()
    assert abs(m.row["d"] - n) / n < 0.05
    rs2 = _ruleset(f"{TABLE} | summarize d = dcount(InitiatingProcessId) by bin(Timestamp, 1h)")
    for i in range(aggregates.DCOUNT_EXACT):
        rs2.evaluate(TABLE, _reg(i, T0, i), T0)
    assert rs2.flush()[0].row["d"] == aggregates.DCOUNT_EXACT


DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo.jsonl.zst"
JOIN_RULE = "6f3c1a52-0b7e-4c1e-9a51-1056001a0007"
SIGNALS_RULE = "6f3c1a52-0b7e-4c1e-9a51-1056001a0008"


def test_builtin_correlation_rules_alert_once_on_the_demo_keylogger(tmp_path: Path) -> None:
    r = cli("replay", str(DEMO), "--json-summary", cache=tmp_path)
    assert r.returncode == 0, r.stderr
    alerts = [json.loads(line) for line in r.stdout.splitlines()]
    joined = [a for a in alerts if a["rule"]["id"] == JOIN_RULE]
    signals = [a for a in alerts if a["rule"]["id"] == SIGNALS_RULE]
    assert len(joined) == 1 and len(signals) == 1
    assert joined[0]["row"]["InitiatingProcessFileName"] == "inputsvc.exe"
    assert joined[0]["row"]["FileWritten"].endswith(r"\inputcache.dat")
    assert len(joined[0]["report_ids"]) == 2
    row = signals[0]["row"]
    assert row["InitiatingProcessFileName"] == "inputsvc.exe" and row["SignalCount"] == 3
    assert len(signals[0]["report_ids"]) >= 3
    summary = json.loads(r.stderr.strip().splitlines()[-1])
    assert set(summary["stateful_rules"]) == {JOIN_RULE, SIGNALS_RULE}


def test_deprecated_aggregation_spellings_are_accepted() -> None:
    rs = _ruleset(
        f"{TABLE} | summarize s = makeset(InitiatingProcessId), l = makelist(ReportId) by bin(Timestamp, 1h)"
    )
    rs.evaluate(TABLE, _reg(1, T0, 5), T0)
    rs.evaluate(TABLE, _reg(2, T0, 5), T0)
    (m,) = rs.flush()
    assert m.row["s"] == [5] and m.row["l"] == [1, 2]
