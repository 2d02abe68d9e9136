"""What a user sees: full tables when piped, short parser errors, scripts that do no harm."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.cli.terminal import on_a_terminal

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


def test_inspect_and_convert_show_progress_on_a_terminal_only(tmp_path: Path) -> None:
    code, out, err = on_a_terminal("inspect", str(ETL))
    assert code == 0 and "reading:" in err and "events" in err
    assert "reading:" not in out  # the table on stdout stays clean
    piped = run("convert", str(ETL), "-o", str(tmp_path / "a.jsonl.zst"))
    assert piped.returncode == 0 and "converting:" not in piped.stderr
    code, _out, err = on_a_terminal("convert", str(ETL), "-o", str(tmp_path / "b.jsonl.zst"))
    assert code == 0 and "converting:" in err


def test_ctrl_c_prints_the_summary_so_far_and_exits_130(tmp_path: Path) -> None:
    import json
    import signal

    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "all.kql").write_text("DeviceProcessEvents\n| where ProcessId >= 0\n")
    config = tmp_path / "c.toml"
    config.write_text("[suppression]\nwindow_seconds = 0\n")
    demo = ROOT / "examples" / "demo.jsonl.zst"
    proc = subprocess.Popen(
        [sys.executable, "-m", "etwsensor", "replay", *[str(demo)] * 60, "--no-builtin",
         "--rules", str(rules), "--config", str(config), "--json-summary"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    proc.stdout.readline()  # replaying: the first alert is out
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-2000:]
    summary = json.loads(err.strip().splitlines()[-1])
    assert summary["interrupted"] is True and summary["events"] > 0
    assert len(summary["inputs"]) < 60
    assert "Traceback" not in err
