"""Long commands show progress on a terminal (stderr only) and answer Ctrl-C with the summary so far."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from etwsensor import exitcodes
from etwsensor.cli import app
from tests.cli.terminal import on_a_terminal

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo.jsonl.zst"
ETL = ROOT / "tests" / "data" / "etl" / "perfview_net.4.5.2.x64.etl"
ALL_PROCESSES = "DeviceProcessEvents\n| where ProcessId >= 0\n"


def piped(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "etwsensor", *args], capture_output=True, text=True,
                          check=False, env={**os.environ, **(env or {})})  # fmt: skip


def rule_folder(tmp_path: Path, count: int) -> Path:
    folder = tmp_path / "rules"
    folder.mkdir()
    for i in range(count):
        (folder / f"r{i}.kql").write_text(
            f"DeviceProcessEvents\n| where ProcessId == {i}\n| extend Tag = strcat('t', FileName)\n"
        )
    return folder


def test_baseline_shows_progress_on_a_terminal_only(tmp_path: Path) -> None:
    code, _out, err = on_a_terminal("baseline", str(DEMO), "-o", str(tmp_path / "a.toml"))
    assert code == 0 and "replaying" in err and "wrote" in err
    quiet = piped("baseline", str(DEMO), "-o", str(tmp_path / "b.toml"))
    assert quiet.returncode == 0 and "replaying" not in quiet.stderr and "\x1b[" not in quiet.stderr


def test_rules_test_shows_progress_on_a_terminal_only(tmp_path: Path) -> None:
    rule = tmp_path / "all.kql"
    rule.write_text(ALL_PROCESSES)
    code, out, err = on_a_terminal("rules", "test", str(rule), str(DEMO))
    assert code == 0 and "testing:" in err and "matches" in err
    assert "testing:" not in out and all(json.loads(line) for line in out.splitlines())
    quiet = piped("rules", "test", str(rule), str(DEMO))
    assert quiet.returncode == 0 and "testing:" not in quiet.stderr


def test_normalize_shows_progress_on_a_terminal_only() -> None:
    code, out, err = on_a_terminal("normalize", str(DEMO))
    assert code == 0 and "normalizing:" in err and "normalizing:" not in out
    quiet = piped("normalize", str(DEMO), "--json-summary")
    assert quiet.returncode == 0 and "normalizing:" not in quiet.stderr


def test_export_shows_progress_on_a_terminal(tmp_path: Path) -> None:
    code, _out, err = on_a_terminal("export", str(DEMO), "-o", str(tmp_path / "ds"))
    assert code == 0 and "exporting:" in err and "exported 1 input(s)" in err


def test_a_cold_rule_compile_shows_progress_and_a_warm_one_skips_the_parse(tmp_path: Path) -> None:
    folder = rule_folder(tmp_path, 70)  # past PREWARM_MIN: a cold load parses in worker processes
    cache = {"ETWSENSOR_CACHE_DIR": str(tmp_path / "cache")}
    code, out, err = on_a_terminal("rules", "check", str(folder), env=cache)
    assert code == 0, err
    assert "compiling rules:" in err and "/70 rules" in err
    assert out == ""  # stdout keeps only FILE:LINE:COL failures
    if len(os.sched_getaffinity(0)) >= 2:  # one core: the parse stays in-process, no separate phase
        assert "parsing rules (cold cache)" in err
    code, _out, err = on_a_terminal("rules", "check", str(folder), env=cache)
    assert code == 0 and "compiling rules:" in err and "parsing rules" not in err
    quiet = piped("rules", "check", str(folder), env={"ETWSENSOR_CACHE_DIR": str(tmp_path / "cold2")})
    assert quiet.returncode == 0 and "rules:" not in quiet.stderr and "70 compiled" in quiet.stderr


# --- Ctrl-C ------------------------------------------------------------------------------------------


@pytest.fixture
def ctrl_c_after(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """``ctrl_c_after(n, whole=k)``: every input opened from now on, after the first ``k`` (read whole),
    raises KeyboardInterrupt (what Ctrl-C raises) after its first ``n`` events, mid-command."""
    import etwsensor.sources as sources

    real = sources.open_source

    def arm(n: int, whole: int = 0) -> None:
        opened = 0

        def open_then_interrupt(path: Path, *args: Any, **kwargs: Any) -> Any:
            nonlocal opened
            source = real(path, *args, **kwargs)
            opened += 1
            if opened <= whole:
                return source
            events = source.events

            def interrupted() -> Iterator[Any]:
                stream = events()
                for _ in range(n):  # the source reads exactly n events, then Ctrl-C
                    event = next(stream, None)
                    if event is None:
                        return
                    yield event
                raise KeyboardInterrupt

            source.events = interrupted
            return source

        monkeypatch.setattr(sources, "open_source", open_then_interrupt)

    yield arm


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def test_ctrl_c_in_baseline_reports_the_run_so_far_and_writes_no_allowlist(
    tmp_path: Path, ctrl_c_after: Any
) -> None:
    ctrl_c_after(300)
    out = tmp_path / "allow.toml"
    r = invoke("baseline", str(DEMO), str(DEMO), "-o", str(out))
    assert r.exit_code == exitcodes.INTERRUPTED, r.output
    assert "interrupted (Ctrl-C) after 1 input(s), 300 events" in r.output
    assert f"{out} not written" in r.output and not out.exists()


def test_ctrl_c_in_inspect_prints_the_counts_so_far(ctrl_c_after: Any) -> None:
    ctrl_c_after(500)
    r = invoke("inspect", str(DEMO), "--json")
    assert r.exit_code == exitcodes.INTERRUPTED, r.output
    doc = json.loads(r.stdout)
    assert doc["interrupted"] is True and doc["events"] == 500


def test_ctrl_c_in_convert_leaves_no_file(tmp_path: Path, ctrl_c_after: Any) -> None:
    ctrl_c_after(500)
    out = tmp_path / "out.jsonl.zst"
    r = invoke("convert", str(DEMO), "-o", str(out))
    assert r.exit_code == exitcodes.INTERRUPTED, r.output
    assert "interrupted (Ctrl-C) after 500 events read" in r.output
    assert list(tmp_path.iterdir()) == []  # neither the recording nor its temporary file


def test_ctrl_c_in_rules_test_prints_the_counts_so_far(tmp_path: Path, ctrl_c_after: Any) -> None:
    rule = tmp_path / "all.kql"
    rule.write_text(ALL_PROCESSES)
    whole = invoke("rules", "test", str(rule), str(DEMO))
    assert whole.exit_code == 0
    ctrl_c_after(400)
    r = invoke("rules", "test", str(rule), str(DEMO))
    assert r.exit_code == exitcodes.INTERRUPTED, r.output
    assert "(interrupted, Ctrl-C: the rows so far)" in r.stderr
    assert 0 < len(r.stdout.splitlines()) < len(whole.stdout.splitlines())


def test_ctrl_c_in_export_keeps_whole_parts_of_the_rows_so_far(tmp_path: Path, ctrl_c_after: Any) -> None:
    ctrl_c_after(400)
    out = tmp_path / "dataset"
    r = invoke("export", str(DEMO), str(DEMO), "-o", str(out), "--json-summary")
    assert r.exit_code == exitcodes.INTERRUPTED, r.output
    doc = json.loads(r.stdout)
    assert doc["interrupted"] is True and doc["inputs"] == [str(DEMO)] and doc["events"] == 400
    import duckdb

    parts = str(out / "table=*" / "**" / "*.parquet")
    (n,) = duckdb.connect().execute(f"SELECT count(*) FROM read_parquet('{parts}')").fetchone() or (0,)
    assert n == sum(doc["rows"].values()) > 0  # every part readable, no row lost or written twice


def test_ctrl_c_in_normalize_prints_the_summary_so_far_and_exits_130(tmp_path: Path) -> None:
    """A real SIGINT: normalize writes far more than a pipe holds (2 MB), and the test reads one line only,
    so the command is still running (blocked on its output) when the signal arrives."""
    proc = subprocess.Popen([sys.executable, "-m", "etwsensor", "normalize", str(DEMO)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout is not None
    first = json.loads(proc.stdout.readline())
    assert "$table" in first
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=300)
    assert proc.returncode == exitcodes.INTERRUPTED, err[-2000:]
    assert "interrupted (Ctrl-C): the counts above are the rows so far" in err
    assert "events, decode errors" in err and "Traceback" not in err


def test_ctrl_c_in_hunt_keeps_the_whole_inputs_in_the_db_and_rolls_back_the_rest(
    tmp_path: Path, ctrl_c_after: Any
) -> None:
    db = tmp_path / "h.duckdb"
    second = tmp_path / "second.jsonl.zst"
    second.write_bytes(DEMO.read_bytes())
    query = "DeviceProcessEvents | count"
    whole = invoke("hunt", query, str(DEMO), "--format", "ndjson")
    assert whole.exit_code == 0, whole.output
    ctrl_c_after(300, whole=1)  # the first input is read whole, the second interrupted after 300 events
    r = invoke("hunt", query, str(DEMO), str(second), "--db", str(db), "--format", "ndjson")
    assert r.exit_code == exitcodes.INTERRUPTED, r.output
    assert "interrupted (Ctrl-C) while loading: 1 whole input(s) loaded, rows " in r.stderr
    assert "the interrupted input was rolled back; no query was run" in r.stderr and r.stdout == ""
    ctrl_c_after(10**9)  # no Ctrl-C now
    again = invoke("hunt", query, str(DEMO), str(second), "--db", str(db), "--format", "ndjson")
    assert again.exit_code == 0, again.output
    assert f"{DEMO}: already in {db}, not loaded again" in again.stderr  # kept
    assert f"{second}: already in" not in again.stderr  # rolled back: loaded now, once
    assert json.loads(again.stdout)["Count"] == 2 * json.loads(whole.stdout)["Count"] > 0
