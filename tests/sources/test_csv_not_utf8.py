"""Defender CSV exports with bytes that are not UTF-8: each such row is damage with its line number
(exit 3, like a row file's line), never a value with escaped bytes that reaches the rules."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HEADER = b"Timestamp,DeviceName,ActionType,FileName,ProcessCommandLine,ProcessId\n"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "etwsensor", *args], capture_output=True, text=True,
                          check=False)  # fmt: skip


def export(tmp_path: Path, header: bytes = HEADER) -> Path:
    path = tmp_path / "DeviceProcessEvents.csv"
    path.write_bytes(
        header
        + b"2024-05-01T10:00:00Z,pc1,ProcessCreated,a.exe,a --evil-one,11\n"  # line 2
        + b"2024-05-01T10:00:01Z,pc1,ProcessCreated,b.exe,b --evil-\xff\xfe,12\n"  # line 3: not UTF-8
        + b'2024-05-01T10:00:02Z,pc1,ProcessCreated,c.exe,"c --evil\nsecond line",13\n'  # lines 4-5
        + b'2024-05-01T10:00:03Z,pc1,ProcessCreated,d.exe,"d\n--evil-\xc3",14\n'  # lines 6-7, cut UTF-8
        + b"2024-05-01T10:00:04Z,pc1,ProcessCreated,e.exe,e --evil-two,15\n"  # line 8
    )
    return path


def test_normalize_reports_each_row_that_is_not_utf8_with_its_line(tmp_path: Path) -> None:
    r = run("normalize", str(export(tmp_path)))
    assert r.returncode == 3, r.stderr
    assert "line 3: not UTF-8 (column ProcessCommandLine)" in r.stderr
    assert "line 6: not UTF-8 (column ProcessCommandLine)" in r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["FileName"] for row in rows] == ["a.exe", "c.exe", "e.exe"]
    assert "\\udc" not in r.stdout and "\ufffd" not in r.stdout


def test_replay_rules_never_see_escaped_bytes(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "evil.kql").write_text('DeviceProcessEvents\n| where ProcessCommandLine contains "--evil"\n')
    config = tmp_path / "c.toml"
    config.write_text("[suppression]\nwindow_seconds = 0\n")  # every match is an alert
    r = run("replay", str(export(tmp_path)), "--no-builtin", "--rules", str(rules), "--config", str(config),
            "--json-summary")  # fmt: skip
    assert r.returncode == 3, r.stderr
    fired = sorted(json.loads(line)["row"]["FileName"] for line in r.stdout.splitlines())
    assert fired == ["a.exe", "c.exe", "e.exe"]
    summary = json.loads(r.stderr.strip().splitlines()[-1])
    assert any("line 3: not UTF-8" in d for d in summary["damage"])


def test_a_header_that_is_not_utf8_is_reported_once(tmp_path: Path) -> None:
    header = HEADER.replace(b"ProcessId", b"Process\xffId")
    path = tmp_path / "DeviceProcessEvents.csv"
    path.write_bytes(header + b"2024-05-01T10:00:00Z,pc1,ProcessCreated,a.exe,a,11\n")
    r = run("normalize", str(path))
    assert r.returncode == 3, r.stderr
    assert "line 1: not UTF-8 (header cell 6)" in r.stderr
    (row,) = [json.loads(line) for line in r.stdout.splitlines()]
    assert row["FileName"] == "a.exe"  # the other columns still read
