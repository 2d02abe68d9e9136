"""scripts/live_acceptance.py, the burst half of the Windows workflow: run here with `true` as the process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "live_acceptance.py"


def script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, check=False)


def test_burst_then_report_counts_rows_command_lines_loss_cpu_and_rss(tmp_path: Path) -> None:
    burst_file = tmp_path / "burst.json"
    r = script("burst", "--count", "20", "--seconds", "0.2", "--out", str(burst_file))
    assert r.returncode == 0, r.stderr
    b = json.loads(burst_file.read_text("utf-8"))
    assert b["count"] == 20 and b["failed"] == 0 and b["marker"].startswith("etwsensor-burst-")
    rows = [
        {
            "$table": "DeviceProcessEvents",
            "ActionType": "ProcessCreated",
            "InitiatingProcessId": b["pid"],
            "ProcessCommandLine": f"cmd.exe /c rem {b['marker']} {i}",
        }
        for i in range(20)
    ]
    rows[3]["ProcessCommandLine"] = ""  # one start seen without its command line
    rows.append({"ActionType": "ProcessCreated", "InitiatingProcessId": 1, "ProcessCommandLine": "other"})
    (tmp_path / "rows.ndjson").write_text("".join(json.dumps(x) + "\n" for x in rows), "utf-8")
    sessions = {"k": {"lost": 0}, "p": {"lost": 0}}
    summary = {"live": {"health": {"sessions": sessions}, "queue": {"dropped": 0}}}
    (tmp_path / "trace.log").write_text("tracing: ...\n" + json.dumps(summary) + "\n", "utf-8")
    t0 = b["start"]
    mb = 1 << 20
    samples = [(t0 - 14, 1.0, 50 * mb), (t0 - 2, 1.6, 52 * mb), (t0, 1.6, 52 * mb), (t0 + 2, 3.6, 90 * mb)]
    (tmp_path / "samples.csv").write_text("".join(f"{t},{c},{m}\n" for t, c, m in samples), "utf-8")
    args = [
        "report",
        "--summary",
        str(tmp_path / "trace.log"),
        "--rows",
        str(tmp_path / "rows.ndjson"),
        "--burst",
        str(burst_file),
        "--samples",
        str(tmp_path / "samples.csv"),
    ]
    r = script(*args, "--check")
    assert r.returncode == 1  # 19 of 20 with a command line: 95 %, under the 99 % target
    assert "| ProcessCreated rows seen | 20 (100.0%)" in r.stdout
    assert "| 19 (95.0%) | ≥ 99 % |" in r.stdout and "**FAIL**" in r.stdout
    assert "| 5.0 / 100.0 |" in r.stdout and "52 MB / 90 MB" in r.stdout
    rows[3]["ProcessCommandLine"] = f"x {b['marker']}"
    (tmp_path / "rows.ndjson").write_text("".join(json.dumps(x) + "\n" for x in rows), "utf-8")
    r = script(*args, "--check")
    assert r.returncode == 0 and "**PASS**" in r.stdout
    summary["live"]["queue"]["dropped"] = 3  # type: ignore[index]
    (tmp_path / "trace.log").write_text(json.dumps(summary) + "\n", "utf-8")
    r = script(*args, "--check")
    assert r.returncode == 1 and "| 3 | 0 |" in r.stdout
