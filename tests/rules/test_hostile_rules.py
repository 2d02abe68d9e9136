"""Hostile and huge rules: every failure is one rule's, found by `rules check` as by `replay`; IOC lists
RE2 cannot hold in one set still work (Aho-Corasick path), with the same answers."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from etwsensor import exitcodes
from etwsensor.rules import scalars
from etwsensor.rules.multimatch import any_substring, any_term, needle_search

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo.jsonl.zst"


def etwsensor(*args: str, cache: Path) -> subprocess.CompletedProcess[str]:
    import os

    env = {**os.environ, "ETWSENSOR_CACHE_DIR": str(cache)}
    return subprocess.run([sys.executable, "-m", "etwsensor", *args], capture_output=True, text=True,
                          check=False, env=env)  # fmt: skip


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("where " + "(" * 50_000 + "ProcessId == 1" + ")" * 50_000, "nested more than"),
        ("where ProcessId == " + "+".join(["1"] * 1000), "nested too deeply"),
    ],
)
def test_deep_rules_fail_alone_in_check_and_replay(tmp_path: Path, body: str, message: str) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "deep.kql").write_text(f"DeviceProcessEvents\n| {body}\n")
    (rules / "ok.kql").write_text('DeviceProcessEvents\n| where ProcessCommandLine has "GetAsyncKeyState"\n')
    check = etwsensor("rules", "check", str(rules), cache=tmp_path / "cache")
    assert check.returncode == exitcodes.RULE_ERRORS
    assert "deep.kql:" in check.stdout and message in check.stdout and "Traceback" not in check.stderr
    run = etwsensor("replay", str(DEMO), "--no-builtin", "--rules", str(rules), cache=tmp_path / "cache")
    assert run.returncode == exitcodes.RULE_ERRORS and "Traceback" not in run.stderr
    assert {json.loads(line)["rule"]["id"] for line in run.stdout.splitlines()} == {"ok"}


def test_ioc_lists_too_big_for_one_re2_set_work_in_replay(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    domains = ", ".join(f'"d{i}.example"' for i in range(6000))  # past the RE2 path's bound
    (rules / "iocs.kql").write_text(
        f'DeviceProcessEvents\n| where ProcessCommandLine has_any ({domains}, "getasynckeystate")\n'
    )
    literal = "ab" * (150 * 1024)  # a 300 KiB literal in the prefilter set next to the built-in rules'
    (rules / "big.kql").write_text(
        f'DeviceProcessEvents\n| where ProcessCommandLine contains "{literal}"'
        ' or ProcessCommandLine contains "GetAsyncKeyState"\n'
    )
    check = etwsensor("rules", "check", str(rules), cache=tmp_path / "cache")
    assert check.returncode == 0, check.stdout + check.stderr
    run = etwsensor("replay", str(DEMO), "--rules", str(rules), "--json-summary", cache=tmp_path / "cache")
    assert run.returncode == 0, run.stderr[-2000:]
    fired = {json.loads(line)["rule"]["id"] for line in run.stdout.splitlines()}
    assert {"iocs", "big"} <= fired


def _naive_has_any(text: str, needles: list[str]) -> bool:
    return any(scalars.has_term_cs(text, n) for n in needles)


def test_the_automaton_paths_answer_as_the_simple_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    import etwsensor.rules.multimatch as multimatch

    big = [f"d{i}.example.com" for i in range(150_000)] + ["evil", "a-b", ".exe", "x"]
    for text in ["visit d149999.example.com now", "xd1.example.comx", "an evil.exe", "evilish", "a-b-c", "y"]:
        assert any_term(big, scalars.is_term_char)(text) == _naive_has_any(text, big), text
        assert set(needle_search(big)(text)) == {i for i, n in enumerate(big) if n in text}, text

    monkeypatch.setattr(multimatch, "_RE2_MAX_NEEDLES", 0)  # every list takes the automaton path
    rng = random.Random(11)
    alphabet = "ab d1.-xeEvil5m"
    needles = sorted({"".join(rng.choice(alphabet) for _ in range(rng.randint(1, 5))) for _ in range(300)})
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40))) for _ in range(300)]
    term = any_term(needles, scalars.is_term_char)
    sub = any_substring(needles, scalars.regex_tester)
    search = needle_search(needles)
    for text in texts:
        assert term(text) == _naive_has_any(text, needles), text
        assert sub(text) == any(n in text for n in needles), text
        assert set(search(text)) == {i for i, n in enumerate(needles) if n in text}, text
