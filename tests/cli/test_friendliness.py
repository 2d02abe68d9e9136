"""What a user sees: full tables when piped, short parser errors, scripts that do no harm."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ETL = ROOT / "tests" / "data" / "etl" / "perfview_net.4.5.2.x64.etl"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "etwsensor", *args], capture_output=True, text=True,
                          check=False)  # fmt: skip


def test_inspect_piped_keeps_every_cell_whole() -> None:
    r = run("inspect", str(ETL))
    assert r.returncode == 0, r.stderr
    assert "…" not in r.stdout
    assert "Microsoft-Windows-Kernel-Process" in r.stdout


def test_a_syntax_error_names_a_few_expected_tokens_not_a_hundred(tmp_path: Path) -> None:
    rule = tmp_path / "r.kql"
    rule.write_text("DeviceProcessEvents\n| where ProcessId == \n")
    r = run("rules", "check", str(rule))
    assert r.returncode == 1
    (line,) = r.stdout.splitlines()
    assert "syntax error" in line and "possibilities" in line and len(line) < 300


def test_kql_coverage_leaves_the_doc_alone_without_the_corpora(tmp_path: Path) -> None:
    out = tmp_path / "kql-coverage.md"
    out.write_text("the tracked table\n")
    r = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "kql_coverage.py"), "--root", str(tmp_path / "none"),
         "--out", str(out)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert r.returncode == 2 and "corpora not found" in r.stderr
    assert out.read_text() == "the tracked table\n"


def test_a_bad_regex_is_one_clean_line(tmp_path: Path) -> None:
    rule = tmp_path / "r.kql"
    rule.write_text('DeviceProcessEvents\n| where ProcessCommandLine matches regex "a(b"\n')
    r = run("rules", "check", str(rule))
    assert r.returncode == 1
    assert r.stdout.strip().endswith("bad regular expression 'a(b': missing ): a(b")
    assert "re2.cc" not in r.stderr and "absl" not in r.stderr and "b'missing" not in r.stdout
