"""`etwsensor replay some.evtx winlogbeat.ndjson DeviceProcessEvents.csv` as a responder runs it, and the
same inputs through `normalize`, `rules test` and `baseline`."""

from __future__ import annotations

import csv
import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[1] / "data" / "windows"
RULE = 'DeviceProcessEvents\n| where FileName =~ "wevtutil.exe" and ProcessCommandLine has "cl"\n'
REG_RULE = 'DeviceRegistryEvents\n| where RegistryKey has @"\\Software" and RegistryValueName == "Key 1"\n'


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "etwsensor", *args], capture_output=True, text=True, check=False
    )


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("win")
    evtx = tmp / "Security.evtx"
    evtx.write_bytes(
        gzip.decompress((DATA / "security-windows2019_4688_Process_Created.evtx.gz").read_bytes())
    )
    golden = json.loads(gzip.decompress((DATA / "sysmon-11-registry.golden.json.gz").read_bytes()))
    ndjson = tmp / "winlogbeat.ndjson"
    ndjson.write_text("".join(json.dumps(d) + "\n" for d in golden))
    # A Defender portal export: Defender's columns, Timestamp without Z, empty cells, one column it lacks
    exported = tmp / "DeviceProcessEvents.csv"
    with exported.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["Timestamp", "DeviceName", "ActionType", "FileName", "ProcessCommandLine", "ProcessId",
                    "InitiatingProcessFileName", "LogonId", "IsProcessRemoteSession", "Extra"])  # fmt: skip
        w.writerow(["2024-05-01T10:00:00.123", "pc1", "ProcessCreated", "wevtutil.exe", "wevtutil cl System",
                    "4242", "cmd.exe", "", "False", "x"])  # fmt: skip
        w.writerow(["2024-05-01T10:00:01Z", "pc1", "ProcessCreated", "notepad.exe", "notepad", "not a number",
                    "explorer.exe", "", "", ""])  # fmt: skip
    # A Sentinel / Log Analytics JSON export: Type names the table, extra columns, a _string twin
    sentinel = tmp / "sentinel.json"
    sentinel.write_text(json.dumps([
        {"TenantId": "t", "Type": "DeviceProcessEvents", "SourceSystem": "",
         "TimeGenerated": "2024-05-01T11:00:00Z",
         "Timestamp": "2024-05-01T11:00:00Z", "DeviceName": "pc2", "ActionType": "ProcessCreated",
         "FileName": "wevtutil.exe", "ProcessCommandLine": "wevtutil.exe cl Security", "ProcessId": 7,
         "_BilledSize": 1.5, "_IsBillable": "True"},
        {"TenantId": "t", "Type": "DeviceRegistryEvents", "TimeGenerated": "2024-05-01T11:00:01Z",
         "DeviceName": "pc2", "ActionType": "RegistryValueSet", "RegistryKey": "",
         "RegistryKey_string": "HKEY_X",
         "AdditionalFields": {"a": 1}},
    ]))  # fmt: skip
    rules = tmp / "rules"
    rules.mkdir()
    (rules / "wevtutil.kql").write_text(RULE)
    (rules / "regkey.kql").write_text(REG_RULE)
    return {"evtx": evtx, "ndjson": ndjson, "csv": exported, "sentinel": sentinel, "rules": rules}


def test_replay_of_evtx_ecs_json_and_defender_exports(inputs: dict[str, Path]) -> None:
    paths = [str(inputs[k]) for k in ("evtx", "ndjson", "csv", "sentinel")]
    r = run("replay", *paths, "--no-builtin", "--rules", str(inputs["rules"]), "--json-summary")
    assert r.returncode == 3, r.stderr  # the CSV's bad ProcessId is damage: counted, reported, skipped
    alerts = [json.loads(line) for line in r.stdout.splitlines()]
    by_rule: dict[str, list[str]] = {}
    for a in alerts:
        by_rule.setdefault(a["rule"]["id"], []).append(a["sensor"]["source"])
    assert sorted(by_rule["wevtutil"]) == sorted([paths[0], paths[2], paths[3]])
    assert by_rule["regkey"] == [paths[1]]
    s = json.loads(r.stderr.strip().splitlines()[-1])
    assert s["input_kinds"] == dict(
        zip(paths, ["evtx", "windows-json", "defender-csv", "defender-json"], strict=True)
    )
    assert s["source_events"]["Microsoft-Windows-Security-Auditing"] == {"4688 ProcessCreate": 1}
    assert s["source_events"]["Microsoft-Windows-Sysmon"] == {"13 RegistryValueSet": 5}
    assert s["rows"] == {"DeviceProcessEvents": 3, "DeviceRegistryEvents": 6}
    assert any("line 3" in d and "ProcessId" in d for d in s["damage"])


def test_unmapped_events_are_counted_not_errors(tmp_path: Path) -> None:
    evtx = tmp_path / "sysmon.evtx"
    evtx.write_bytes(gzip.decompress((DATA / "sysmon-9.01.evtx.gz").read_bytes()))
    r = run("replay", str(evtx), "--json-summary")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stderr.strip().splitlines()[-1])
    assert s["unmapped_events"]["Microsoft-Windows-Sysmon 3 NetworkConnect"] == 16
    assert s["source_events"]["Microsoft-Windows-Sysmon"]["1 ProcessCreate"] == 3
    assert s["damage"] == []
    human = run("replay", str(evtx))
    assert "Microsoft-Windows-Sysmon: 1 ProcessCreate 3" in human.stderr and "no table" in human.stderr


def test_normalize_rules_test_and_baseline_take_the_same_inputs(
    inputs: dict[str, Path], tmp_path: Path
) -> None:
    r = run("normalize", str(inputs["ndjson"]))
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == 5
    r = run("normalize", str(inputs["sentinel"]))
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert r.returncode == 0 and [row["$table"] for row in rows] == [
        "DeviceProcessEvents",
        "DeviceRegistryEvents",
    ]
    assert rows[1]["RegistryKey"] == "HKEY_X" and rows[1]["Timestamp"] == "2024-05-01T11:00:01Z"
    assert "TenantId" not in rows[0] and rows[0]["ProcessId"] == 7
    r = run("rules", "test", str(inputs["rules"] / "wevtutil.kql"), str(inputs["evtx"]))
    assert r.returncode == 0, r.stderr
    assert [json.loads(line)["FileName"] for line in r.stdout.splitlines()] == ["wevtutil.exe"]
    r = run("rules", "test", str(inputs["rules"] / "wevtutil.kql"), str(inputs["csv"]))
    assert r.returncode == 3 and len(r.stdout.splitlines()) == 1 and ":3:" in r.stderr
    out = tmp_path / "allow.toml"
    r = run("baseline", str(inputs["evtx"]), "--no-builtin", "--rules", str(inputs["rules"]), "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert "wevtutil" in out.read_text()


def test_normalize_summary_names_the_kind_and_events_per_id(tmp_path: Path) -> None:
    evtx = tmp_path / "Microsoft-Windows-Sysmon%4Operational.evtx"
    evtx.write_bytes(gzip.decompress((DATA / "sysmon-9.01.evtx.gz").read_bytes()))
    r = run("normalize", str(evtx), "--json-summary")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["input_kind"] == "evtx" and s["events"] == 32
    assert s["source_events"]["Microsoft-Windows-Sysmon"]["3 NetworkConnect"] == 16
    assert s["unmapped_events"]["Microsoft-Windows-Sysmon 2 FileCreateTime"] == 6
    assert s["rows"] == {"DeviceProcessEvents": {"ProcessCreated": 3}}
