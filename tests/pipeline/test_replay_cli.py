"""`etwsensor replay` and `etwsensor baseline` as a user runs them."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo.jsonl.zst"
SEED = "6f3c1a52-0b7e-4c1e-9a51-1056001a0001"


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "etwsensor", *args], capture_output=True, text=True, cwd=cwd, check=False
    )


def alerts_of(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


def test_replay_prints_only_alerts_on_stdout_and_the_summary_on_stderr() -> None:
    r = run("replay", str(DEMO), "--json-summary")
    assert r.returncode == 0, r.stderr
    alerts = alerts_of(r.stdout)  # every stdout line is one alert
    assert alerts and all(a["schema_version"] == "1.0" for a in alerts)
    summary = json.loads(r.stderr.strip().splitlines()[-1])
    assert summary["alerts"] == len(alerts)
    assert summary["events"] > 1000 and summary["rows"]["DeviceProcessEvents"] > 0
    assert summary["sinks"]["stdout"]["delivered"] == len(alerts)
    seed_reasons = {a["reason"] for a in alerts if a["rule"]["id"] == SEED}
    assert len(seed_reasons) == 4


def test_a_pinned_clock_far_ahead_leaves_the_24h_window_empty() -> None:
    r = run("replay", str(DEMO), "--now", "2031-01-01T00:00:00Z")
    assert r.returncode == 0, r.stderr
    assert SEED not in {a["rule"]["id"] for a in alerts_of(r.stdout)}  # `Timestamp > ago(24h)`


def test_a_broken_rule_is_reported_and_the_others_run(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "broken.kql").write_text("DeviceProcessEvents\n| where NoSuchColumn == 1\n")
    (rules / "ok.kql").write_text('DeviceProcessEvents\n| where ProcessCommandLine has "GetAsyncKeyState"\n')
    r = run("replay", str(DEMO), "--no-builtin", "--rules", str(rules))
    assert r.returncode == 1, r.stderr  # strict by default: the run goes on, the exit code tells
    assert f"{rules / 'broken.kql'}:2:" in r.stderr and "NoSuchColumn" in r.stderr
    alerts = alerts_of(r.stdout)
    assert alerts and {a["rule"]["id"] for a in alerts} == {"ok"}
    skipped = run("replay", str(DEMO), "--no-builtin", "--rules", str(rules), "--skip-bad-rules")
    assert skipped.returncode == 0, skipped.stderr
    assert [a["alert_id"] for a in alerts_of(skipped.stdout)] == [a["alert_id"] for a in alerts]


def test_a_damaged_recording_still_alerts_and_exits_3(tmp_path: Path) -> None:
    cut = tmp_path / "cut.jsonl.zst"
    data = DEMO.read_bytes()
    cut.write_bytes(data[: int(len(data) * 0.9)])
    r = run("replay", str(cut))
    assert r.returncode == 3
    assert "damaged:" in r.stderr and str(cut) in r.stderr
    assert alerts_of(r.stdout), "what could be read was processed"


def test_row_files_replay_through_the_rules(tmp_path: Path) -> None:
    rows = tmp_path / "rows.ndjson"
    rows.write_text(
        json.dumps(
            {
                "$table": "DeviceProcessEvents",
                "Timestamp": "2026-11-20T09:00:00Z",
                "DeviceName": "ws9",
                "DeviceId": "d9",
                "ActionType": "ProcessCreated",
                "FileName": "powershell.exe",
                "ProcessCommandLine": "powershell -c [Windows.Input.Keyboard]::IsKeyDown('A')",
                "ReportId": 7,
            }
        )
        + "\nnot json\n"
    )
    r = run("replay", str(rows), "--sink", f"file:{tmp_path / 'out.ndjson'}")
    assert r.returncode == 3  # the bad line is damage, counted
    assert r.stdout == ""  # the only sink is the file
    written = alerts_of((tmp_path / "out.ndjson").read_text())
    assert written and all(a["host"]["name"] == "ws9" for a in written)


def test_baseline_then_replay_with_it_is_silent(tmp_path: Path) -> None:
    allow = tmp_path / "allowlist.toml"
    r = run("baseline", str(DEMO), "-o", str(allow))
    assert r.returncode == 0, r.stderr
    assert "[[allowlist]]" in allow.read_text()
    quiet = run("replay", str(DEMO), "--config", str(allow))
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout == ""


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert run("replay", str(tmp_path / "missing.jsonl")).returncode == 2
    bad_sink = run("replay", str(DEMO), "--sink", "carrier-pigeon://x")
    assert bad_sink.returncode == 2 and "carrier-pigeon" in bad_sink.stderr
    bad_now = run("replay", str(DEMO), "--now", "yesterday")
    assert bad_now.returncode == 2 and "ISO-8601" in bad_now.stderr


def test_an_input_that_is_no_trace_is_damage_and_the_others_still_run(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.jsonl"
    bogus.write_text("this is not a recording\n")
    r = run("replay", str(bogus), str(DEMO))
    assert r.returncode == 3
    assert "bogus.jsonl: line 1 is not an etwsensor recording header" in r.stderr
    assert alerts_of(r.stdout), "the demo after it was still replayed"


@pytest.mark.skipif(shutil.which("script") is None, reason="util-linux `script` gives the command a terminal")
def test_on_a_terminal_the_progress_bar_shows_events_rows_and_alerts(tmp_path: Path) -> None:
    out = tmp_path / "alerts.ndjson"
    cmd = f"{shlex.quote(sys.executable)} -m etwsensor replay {shlex.quote(str(DEMO))} --sink file:{out}"
    r = subprocess.run(["script", "-qec", cmd, "/dev/null"], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stdout
    assert re.search(r"2,445 events \([\d,]+/s\)\s+1,034 rows\s+29 alerts", r.stdout)  # the live bar
    assert "replayed 1 input(s): 2,445 events" in r.stdout  # then the summary


def test_off_a_terminal_there_is_no_progress_bar() -> None:
    r = run("replay", str(DEMO))
    assert "/s)" not in r.stderr


def test_baseline_loads_rules_strictly_like_replay(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "good.kql").write_text("DeviceProcessEvents\n| where ProcessId >= 0\n")
    (rules / "broken.kql").write_text("DeviceProcessEvents\n| where ProcessId == \n")
    allow = tmp_path / "allow.toml"
    strict = run("baseline", str(DEMO), "--rules", str(rules), "-o", str(allow))
    assert strict.returncode == 1, strict.stderr
    assert re.search(rf"{re.escape(str(rules / 'broken.kql'))}:3:1: ", strict.stderr), strict.stderr
    assert "[[allowlist]]" in allow.read_text()  # the rules that loaded still ran
    lenient = run("baseline", str(DEMO), "--rules", str(rules), "-o", str(allow), "--skip-bad-rules")
    assert lenient.returncode == 0, lenient.stderr
    missing = run("baseline", str(DEMO), "--rules", str(tmp_path / "nope"), "-o", str(allow))
    assert missing.returncode == 2 and "no such file or folder" in missing.stderr
