"""`etwsensor trace` as a user runs it: --plan anywhere, a clear error for live tracing off Windows."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "etwsensor", "trace", *args], capture_output=True, text=True,
                          check=False)  # fmt: skip


def test_plan_json_for_the_builtin_rules() -> None:
    r = run("--plan", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    kinds = [s["kind"] for s in doc["sessions"]]
    assert kinds == ["system-logger", "manifest"]
    names = {p["name"] for s in doc["sessions"] for p in s["providers"]}
    assert {"Microsoft-Windows-Kernel-Process", "Microsoft-Windows-Kernel-File",
            "Microsoft-Windows-Kernel-Registry"} <= names  # fmt: skip


def test_plan_follows_the_rules_given(tmp_path: Path) -> None:
    (tmp_path / "p.kql").write_text('// id: p\nDeviceProcessEvents | where FileName =~ "x.exe"\n', "utf-8")
    r = run("--plan", "--json", "--no-builtin", "--rules", str(tmp_path))
    assert r.returncode == 0, r.stderr
    names = {p["name"] for s in json.loads(r.stdout)["sessions"] for p in s["providers"]}
    assert names == {"SystemTraceProvider", "Microsoft-Windows-Kernel-Process",
                     "Microsoft-Windows-Kernel-EventTracing"}  # fmt: skip


def test_plan_logman_prints_the_commands_and_a_valid_wpr_profile() -> None:
    r = run("--plan", "--logman")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "wpr -start etwsensor.wprp -filemode" in out and "wpr -stop etwsensor.etl" in out
    end = "</WindowsPerformanceRecorder>"
    xml = out[out.index("<?xml") : out.index(end) + len(end)]
    root = ET.fromstring(xml.split("\n", 1)[1])
    providers = {p.get("Name"): p for p in root.iter("EventProvider")}
    kernel_file = providers["edd08927-9cc4-4e65-b970-c2560fb5c289"]
    ids = [int(e.get("Value", "")) for e in kernel_file.iter("EventId")]
    assert ids == [10, 11, 12, 13, 14, 16, 18, 26, 27, 30]
    assert providers["22fb2cd6-0e7b-422b-a0c7-2fad1fd0e716"].find("CaptureStateOnStart") is not None
    assert "b675ec37-bdb6-4648-bc92-f3fdc74d3ca2" not in providers  # the tamper watch is live-only
    kernel_keywords = [k.get("Value") for k in root.iter("Keyword") if k.get("Value", "").isalpha()]
    assert kernel_keywords == ["ProcessThread", "Loader"]
    lines = out.splitlines()
    # one NT Kernel Logger session (one file, one stream) with the classic classes of every planned table
    flags = "(process,img,registry,disk,file,fileio)"  # in table order (RuleSet.tables_read)
    kernel = f'logman start "NT Kernel Logger" -p "Windows Kernel Trace" {flags}'
    assert sum(line.startswith(kernel) for line in lines) == 1
    assert not any(line.startswith("logman update") for line in lines)
    for line in lines:  # cmd.exe would pass a trailing "REM" to logman as arguments
        assert not (line.startswith("logman") and "REM" in line)
    assert "QueryDosDevice" in out and "devmap.json" in out


def test_plan_text_is_readable() -> None:
    r = run("--plan")
    assert r.returncode == 0, r.stderr
    assert "session etwsensor-kernel (system-logger)" in r.stdout
    assert "class Process {3d6fa8d0-fe05-11d0-9dda-00c04fd7ba7c}" in r.stdout


@pytest.mark.skipif(sys.platform == "win32", reason="the non-Windows refusal")
def test_live_tracing_off_windows_is_one_line_and_exit_2() -> None:
    r = run("--duration", "1")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "needs Windows" in r.stderr


def test_json_without_plan_is_a_usage_error() -> None:
    r = run("--json")
    assert r.returncode == 2 and "--plan" in r.stderr


def test_an_existing_stop_file_is_refused_before_anything_starts(tmp_path: Path) -> None:
    flag = tmp_path / "stop.flag"
    flag.touch()
    r = run("--stop-file", str(flag), "--duration", "1")
    assert r.returncode == 2 and "already exists" in r.stderr and r.stderr.count("\n") == 1


def test_a_bad_session_prefix_is_a_usage_error() -> None:
    r = run("--session-prefix", "bad name!", "--plan")
    assert r.returncode == 2 and "--session-prefix" in r.stderr


def test_the_plan_shows_the_prefixed_session_names() -> None:
    r = run("--plan", "--session-prefix", "ci")
    assert r.returncode == 0 and "session ci-kernel (system-logger)" in r.stdout
