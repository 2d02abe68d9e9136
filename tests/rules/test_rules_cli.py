"""`etwsensor rules list/check/explain/test` as a user runs them (subprocess, real stdout/stderr)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.rules.kqlhelpers import DATA

SEED_ID = "6f3c1a52-0b7e-4c1e-9a51-1056001a0001"


def run(*args: str, cache: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ETWSENSOR_CACHE_DIR=str(cache))
    return subprocess.run(
        [sys.executable, "-m", "etwsensor", "rules", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


def test_list_json(tmp_path: Path) -> None:
    r = run("list", "--json", cache=tmp_path)
    assert r.returncode == 0, r.stderr
    rules = json.loads(r.stdout)
    seed = next(x for x in rules if x["id"] == SEED_ID)
    assert seed["severity"] == "high" and seed["techniques"] == ["T1056.001"]
    assert len(seed["tables"]) == 4 and "union" in seed["query"] and seed["source"].startswith("builtin:")


def test_check_verbatim_seed_fails_with_file_line_col(tmp_path: Path) -> None:
    seed = DATA / "T1056.001-seed-verbatim.kql"
    r = run("check", str(seed), cache=tmp_path)
    assert r.returncode == 1
    assert r.stdout.startswith(f"{seed}:24:34: unknown column 'AccountName'")
    j = run("check", "--json", str(seed), str(tmp_path / "missing.kql"), cache=tmp_path)
    assert j.returncode == 2  # a missing path is a usage error (the rest is still checked)
    body = json.loads(j.stdout)
    assert body["compiled"] == 0
    assert [(f["line"], f["col"]) for f in body["failed"]] == [(1, 1), (24, 34)]
    assert "AccountName" in body["failed"][1]["message"]


def test_check_good_folder_exits_zero(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "a.kql").write_text("DeviceFileEvents | where FileName endswith '.ps1'")
    r = run("check", "--json", str(rules), cache=tmp_path)
    assert r.returncode == 0 and json.loads(r.stdout) == {"compiled": 1, "failed": []}


def test_explain_shows_tables_columns_prefilters(tmp_path: Path) -> None:
    r = run("explain", "--json", SEED_ID, cache=tmp_path)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert "AccountName" in info["columns_read"]["DeviceProcessEvents"]
    img = next(b for b in info["branches"] if b["table"] == "DeviceImageLoadEvents")
    assert img["prefilter"] == [[{"column": "FileName", "literal": "user32.dll", "match": "equals"}]]


def test_test_prints_matching_projected_rows(tmp_path: Path) -> None:
    rows = tmp_path / "rows.ndjson"
    lines = [
        {
            "$table": "DeviceImageLoadEvents",
            "Timestamp": "2026-04-16T10:00:00Z",
            "FileName": "user32.dll",
            "InitiatingProcessFileName": "kl.exe",
            "InitiatingProcessAccountName": "bob",
            "ReportId": 1,
        },
        {
            "$table": "DeviceImageLoadEvents",
            "Timestamp": "2026-04-16T10:00:01Z",
            "FileName": "user32.dll",
            "InitiatingProcessFileName": "explorer.exe",
        },
        {
            "$table": "DeviceImageLoadEvents",
            "Timestamp": "2026-04-10T10:00:00Z",
            "FileName": "user32.dll",
            "InitiatingProcessFileName": "old.exe",
        },
    ]
    text = "\n".join(json.dumps(x) for x in lines) + "\nnot json\n" + '{"$table": "Nope"}\n'
    rows.write_text(text)
    r = run("test", SEED_ID, str(rows), cache=tmp_path)
    assert r.returncode == 3, r.stderr  # damaged input: bad lines were skipped, the rest ran
    out = [json.loads(x) for x in r.stdout.splitlines()]
    assert [o["InitiatingProcessFileName"] for o in out] == ["kl.exe"]
    assert out[0]["Timestamp"] == "2026-04-16T10:00:00Z" and out[0]["AccountName"] == "bob"
    assert ":4:" in r.stderr and ":5:" in r.stderr
    # Pinning the clock a week back brings the old row into the 24h window (later rows stay in it).
    pinned = run("test", SEED_ID, str(rows), "--now", "2026-04-10T12:00:00Z", cache=tmp_path)
    assert [json.loads(x)["InitiatingProcessFileName"] for x in pinned.stdout.splitlines()] == [
        "kl.exe",
        "old.exe",
    ]


def test_test_rule_by_path(tmp_path: Path) -> None:
    rule = tmp_path / "r.kql"
    rule.write_text("DeviceProcessEvents | where ProcessId > 4 | project ProcessId, Big = ProcessId * 2")
    rows = tmp_path / "rows.ndjson"
    rows.write_text(
        '{"$table": "DeviceProcessEvents", "ProcessId": "5"}\n{"$table": "DeviceProcessEvents"}\n'
    )
    r = run("test", str(rule), str(rows), cache=tmp_path)
    assert r.returncode == 0, r.stderr
    assert [json.loads(x) for x in r.stdout.splitlines()] == [{"ProcessId": 5, "Big": 10}]
