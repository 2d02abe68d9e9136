"""The exit-code table (etwsensor.exitcodes) as a user meets it: --help, strict rule loading, closed
pipes, full outputs and torn lines, through the real ``etwsensor`` command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from etwsensor import exitcodes

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo.jsonl.zst"
OK_RULE = 'DeviceProcessEvents\n| where ProcessCommandLine has "GetAsyncKeyState"\n'
EVERY_PROCESS = 'DeviceProcessEvents\n| where ProcessId >= 0\n'


def run(*args: str, stdout: object = subprocess.PIPE) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "etwsensor", *args], stdout=stdout, stderr=subprocess.PIPE, text=True,
        check=False,
    )  # type: ignore[call-overload]


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_shows_the_exit_code_table(flag: str) -> None:
    r = run(flag)
    assert r.returncode == 0
    for code, text in exitcodes.TABLE:
        assert f"{code:>3}  {text}" in r.stdout


def test_readme_has_the_same_table() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for code, text in exitcodes.TABLE:
        assert f"| {code} | {text} |" in readme


def test_a_rules_path_that_does_not_exist_is_a_usage_error(tmp_path: Path) -> None:
    r = run("replay", str(DEMO), "--rules", str(tmp_path / "nonexistent"))
    assert r.returncode == exitcodes.USAGE
    assert "nonexistent: no such file or folder" in r.stderr
    assert r.stdout == ""  # refused before any work


def test_rules_check_of_a_missing_path_is_a_usage_error(tmp_path: Path) -> None:
    assert run("rules", "check", str(tmp_path / "nope.kql")).returncode == exitcodes.USAGE


def test_a_rule_with_a_syntax_error_exits_1_after_the_run_unless_skipped(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "syntax.kql").write_text("DeviceProcessEvents | where (((\n")
    (rules / "ok.kql").write_text(OK_RULE)
    strict = run("replay", str(DEMO), "--no-builtin", "--rules", str(rules))
    assert strict.returncode == exitcodes.RULE_ERRORS
    assert "syntax.kql:1:" in strict.stderr
    assert strict.stdout.strip(), "the rules that loaded still ran"
    lenient = run("replay", str(DEMO), "--no-builtin", "--rules", str(rules), "--skip-bad-rules")
    assert lenient.returncode == exitcodes.OK
    ids = [json.loads(line)["alert_id"] for line in strict.stdout.splitlines()]
    assert [json.loads(line)["alert_id"] for line in lenient.stdout.splitlines()] == ids


def test_an_allowlist_entry_on_a_column_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[[allowlist]]\nrule = "*"\ncolumn = "InitiatingProcesFolderPath"\nvalue = "x"\n')
    r = run("replay", str(DEMO), "--config", str(config))
    assert r.returncode == exitcodes.USAGE
    assert "InitiatingProcesFolderPath" in r.stderr and r.stdout == ""


def _rules_dir(tmp_path: Path, text: str = EVERY_PROCESS) -> Path:
    rules = tmp_path / "rules"
    rules.mkdir(exist_ok=True)
    (rules / "all.kql").write_text(text)
    return rules


def test_a_closed_pipe_is_not_an_error(tmp_path: Path) -> None:
    rules = _rules_dir(tmp_path)
    config = tmp_path / "c.toml"
    config.write_text("[suppression]\nwindow_seconds = 0\n")  # more alerts than a pipe buffer holds
    proc = subprocess.Popen(
        [sys.executable, "-m", "etwsensor", "replay", str(DEMO), "--no-builtin", "--rules", str(rules),
         "--config", str(config), "--json-summary"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()  # `| head -1`
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(120) == exitcodes.OK, err
    assert json.loads(first)["schema_version"] == "1.0"
    assert "Traceback" not in err and "BrokenPipe" not in err
    summary = json.loads(err.strip().splitlines()[-1])
    assert summary["sinks"]["stdout"]["dropped"] == 0
    assert summary["sinks"]["stdout"]["closed_by_reader"] >= 1


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full on this OS")
def test_stdout_on_a_full_device_exits_4(tmp_path: Path) -> None:
    rules = _rules_dir(tmp_path)
    with open("/dev/full", "w") as full:
        r = run("replay", str(DEMO), "--no-builtin", "--rules", str(rules), "--json-summary", stdout=full)
    assert r.returncode == exitcodes.UNDELIVERED, r.stderr
    assert "Traceback" not in r.stderr
    summary = json.loads(r.stderr.strip().splitlines()[-1])
    assert summary["sinks"]["stdout"]["dropped"] == summary["alerts"] > 0


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs mounted for the test (Linux, root); skipped with the reason where it cannot be."""
    mount = tmp_path / "small"
    mount.mkdir()
    if sys.platform != "linux":
        pytest.skip("a tmpfs mount needs Linux")
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(mount)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {r.stderr.strip() or r.returncode}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_file_sink_on_a_full_disk_exits_4_and_leaves_no_torn_line(small_fs: Path, tmp_path: Path) -> None:
    rules = _rules_dir(tmp_path)
    config = tmp_path / "c.toml"
    config.write_text("[suppression]\nwindow_seconds = 0\n")  # 71 alerts, about 2 KiB each: > 64 KiB
    out = small_fs / "alerts.ndjson"
    r = run("replay", str(DEMO), "--no-builtin", "--rules", str(rules), "--sink", f"file:{out}",
            "--config", str(config), "--json-summary")  # fmt: skip
    assert r.returncode == exitcodes.UNDELIVERED, r.stderr
    assert "Traceback" not in r.stderr
    state = json.loads(r.stderr.strip().splitlines()[-1])["sinks"][f"file:{out}"]
    data = out.read_bytes()
    lines = data.splitlines(keepends=True)
    assert all(line.endswith(b"\n") for line in lines)
    parsed = [json.loads(line) for line in lines]  # no line merged with a torn one
    assert len(parsed) == state["delivered"] > 0
    assert state["dropped"] > 0 and state["torn"] >= 1
    assert state["delivered"] + state["dropped"] == json.loads(r.stderr.strip().splitlines()[-1])["alerts"]
    assert os.statvfs(small_fs).f_bavail * os.statvfs(small_fs).f_frsize < 4096  # it was really full
