"""Hot reload: a rule folder changed mid-stream, with the real watcher thread and real files.

The stream is a replay of the demo recording input after input; between inputs the test edits the rule
folder and waits for the watcher to have compiled the new set, so which rows run under which set is
exact. The CLI test checks the wiring a user relies on: `replay --reload` and SIGHUP.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from etwsensor.pipeline import Detector, replay, suppressor_from
from etwsensor.rules import RuleSet
from etwsensor.rules.reload import ReloadOutcome, RuleReloader, files_signature

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo.jsonl.zst"

MSEDGE = "// id: test-msedge\nDeviceProcessEvents\n| where FileName =~ \"msedge.exe\"\n"
NOTEPAD = "// id: test-notepad\nDeviceProcessEvents\n| where FileName =~ \"notepad.exe\"\n"
ALL_FILES = "// id: test-files\nDeviceFileEvents\n| where FileName != \"\"\n"
BROKEN = "// id: test-broken\nDeviceProcessEvents\n| where FileName =~ \n"


class ListSink:
    name = "list"

    def __init__(self) -> None:
        self.docs: list[dict[str, Any]] = []

    def send(self, doc: dict[str, Any]) -> None:
        self.docs.append(doc)


def wait_for(condition: Callable[[], bool], seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def count(sink: ListSink, rule_id: str) -> int:
    return sum(1 for d in sink.docs if d.get("rule", {}).get("id") == rule_id)


def test_a_rule_folder_changed_mid_stream_swaps_rules_between_rows(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "msedge.kql").write_text(MSEDGE)

    def compile_rules() -> ReloadOutcome:
        return ReloadOutcome(*RuleSet.load([rules], builtin=False))

    ruleset, failures = RuleSet.load([rules], builtin=False)
    assert failures == []
    reloader = RuleReloader([rules], compile_rules, interval=0.05)
    reloader.start()
    sink = ListSink()
    seen: list[tuple[int, int]] = []  # (msedge, notepad) alerts after each input

    def inputs() -> Iterator[Path]:
        yield DEMO
        seen.append((count(sink, "test-msedge"), count(sink, "test-notepad")))
        (rules / "notepad.kql").write_text(NOTEPAD)  # a new file: picked up by the watcher
        wait_for(lambda: reloader.ready)
        yield DEMO
        seen.append((count(sink, "test-msedge"), count(sink, "test-notepad")))
        (rules / "broken.kql").write_text(BROKEN)  # refused: the two good rules keep running
        wait_for(lambda: reloader.ready)
        yield DEMO
        seen.append((count(sink, "test-msedge"), count(sink, "test-notepad")))

    try:
        detector = Detector(ruleset, "test", suppressor=suppressor_from(0, [], {}))  # every match counts
        summary = replay(inputs(), detector, [sink], reloader=reloader)
    finally:
        reloader.stop()
    edge, note = seen[0]
    assert edge > 0 and note == 0
    assert seen[1] == (2 * edge, 8)  # the whole second input ran under the new set
    assert seen[2] == (3 * edge, 16)  # and the third too: the broken set was refused
    records = [d for d in sink.docs if d.get("record") == "reload"]
    assert [r["status"] for r in records] == ["applied", "refused"]
    assert records[0]["rules"]["count"] == 2
    failure = records[1]["failures"][0]
    assert failure["file"].endswith("broken.kql") and failure["line"] >= 3
    assert "syntax error" in failure["message"]
    assert records[1]["rules"]["count"] == 2  # what keeps running
    assert summary.events == 3 * 2445
    assert reloader.reloads == 1 and reloader.refused == 1


def test_the_process_table_survives_a_reload(tmp_path: Path) -> None:
    """Rows after the swap still get their InitiatingProcess columns from processes seen before it."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "msedge.kql").write_text(MSEDGE)
    ruleset, _ = RuleSet.load([rules], builtin=False)
    reloader = RuleReloader([rules], lambda: ReloadOutcome(*RuleSet.load([rules], builtin=False)), 0.05)
    sink = ListSink()
    detector = Detector(ruleset, "test", suppressor=suppressor_from(0, [], {}))
    original = detector.on_row
    rows_seen = 0

    def on_row(table: str, row: dict[str, Any], now: Any) -> list[dict[str, Any]]:
        nonlocal rows_seen
        rows_seen += 1
        if rows_seen == 20:  # mid-input: change the rules and wait until the new set is ready
            (rules / "all_files.kql").write_text(ALL_FILES)
            reloader.request()
            wait_for(lambda: reloader.ready)
        return original(table, row, now)

    detector.on_row = on_row  # type: ignore[method-assign]
    reloader.start()
    try:
        replay([DEMO], detector, [sink], reloader=reloader)
    finally:
        reloader.stop()
    files = [d for d in sink.docs if d.get("rule", {}).get("id") == "test-files"]
    assert len(files) > 100, "the new rule ran on the rest of the input (file rows were gated before)"
    # processes started before the swap still name the initiating process of later file rows
    assert all(d["ids"].get("InitiatingProcessId") for d in files)
    assert sum(1 for d in sink.docs if d.get("record") == "reload") == 1


def test_the_watcher_sees_added_changed_and_removed_files(tmp_path: Path) -> None:
    (tmp_path / "a.kql").write_text("x")
    before = files_signature([tmp_path])
    (tmp_path / "b.kql").write_text("y")
    added = files_signature([tmp_path])
    (tmp_path / "a.kql").write_text("xx")
    changed = files_signature([tmp_path])
    (tmp_path / "b.kql").unlink()
    assert len({before, added, changed, files_signature([tmp_path])}) == 4
    assert files_signature([tmp_path / "missing"]) == ()


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="SIGHUP is POSIX")
def test_replay_reload_reloads_on_sighup(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "msedge.kql").write_text(MSEDGE)
    out = tmp_path / "out.ndjson"
    proc = subprocess.Popen(
        [sys.executable, "-m", "etwsensor", "replay", *[str(DEMO)] * 400, "--reload", "--no-builtin",
         "--rules", str(rules), "--sink", f"file:{out}", "--json-summary"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for(lambda: out.exists() and "test-msedge" in out.read_text())
        (rules / "notepad.kql").write_text(NOTEPAD)
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: '"record":"reload"' in out.read_text() or proc.poll() is not None)
    finally:
        _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    docs = [json.loads(line) for line in out.read_text().splitlines()]
    reloads = [d for d in docs if d.get("record") == "reload"]
    assert reloads and reloads[0]["status"] == "applied" and reloads[0]["rules"]["count"] == 2
    after = docs.index(reloads[0])
    assert any(d.get("rule", {}).get("id") == "test-notepad" for d in docs[after:])
    assert not any(d.get("rule", {}).get("id") == "test-notepad" for d in docs[:after])
