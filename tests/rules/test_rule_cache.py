"""The compiled-rule (IR) cache: a warm load gives the rules a cold one does, and an entry that is
damaged, stale or not IR is ignored and compiled again, never run."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from etwsensor.rules import RuleSet
from etwsensor.rules.kqlir import ir
from etwsensor.rules.ruleset import cache_dir, lower_cached

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo.jsonl.zst"


class _Mkdir:
    """A pickle that calls os.mkdir when it is loaded by an unrestricted unpickler."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.mkdir, (str(self.path),)


def _entries() -> list[Path]:
    return sorted(cache_dir().glob("*.pickle"))


def _builtin_queries() -> list[str]:
    rules, failures = RuleSet.load([], builtin=True)
    assert rules.rules and not failures
    return [r.query for r in rules.rules]


def test_warm_ir_equals_the_cold_ir_for_the_builtin_pack() -> None:
    queries = _builtin_queries()  # fills the cache
    assert len(_entries()) == len(set(queries))
    for q in queries:
        assert lower_cached(q) == lower_cached(q, use_cache=False)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "foreign class", "code", "wrong type"])
def test_a_bad_entry_is_ignored_and_compiled_again(damage: str, tmp_path: Path) -> None:
    queries = _builtin_queries()
    marker = tmp_path / "was-run"
    for entry in _entries():
        good = entry.read_bytes()
        bad = {
            "garbage": b"\x80\x05not a pickle at all",
            "truncated": good[: len(good) // 2],
            "foreign class": pickle.dumps(Path("/")),  # a class from outside the IR
            "code": pickle.dumps(_Mkdir(marker)),  # would create the marker if unpickled freely
            "wrong type": pickle.dumps(["a", "list"]),  # an old entry of another shape
        }[damage]
        entry.write_bytes(bad)
    rules, failures = RuleSet.load([], builtin=True)
    assert not failures and [r.query for r in rules.rules] == queries
    assert not marker.exists()
    for q in queries:  # rewritten: the next load reads good entries again
        assert lower_cached(q) == lower_cached(q, use_cache=False)
    for entry in _entries():
        assert isinstance(pickle.loads(entry.read_bytes()), ir.Query)


def _replay(cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ETWSENSOR_CACHE_DIR": str(cache)}
    return subprocess.run(
        [sys.executable, "-m", "etwsensor", "replay", *args], capture_output=True, text=True, env=env
    )


def test_demo_alerts_are_the_same_from_a_cold_and_a_warm_cache(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    runs = []
    for _ in range(2):  # the first run compiles and fills the cache, the second reads it
        r = _replay(cache, str(DEMO))
        assert r.returncode == 0, r.stderr
        runs.append(
            [
                {k: v for k, v in json.loads(line).items() if k != "detected_at"}
                for line in r.stdout.splitlines()
            ]
        )
    cold, warm = runs
    assert len(cold) == 29 and warm == cold


SENTINEL = """id: 0b6a3c1e-1111-4222-8333-444455556666
name: Bad column
severity: high
tactics: [Collection]
query: |
  DeviceProcessEvents
  | where NoSuchColumn == 1
"""


@pytest.mark.parametrize("damage", [None, b"", b"\xc1", b"\x93\x01\x02\x03", b"\x95\xa1x\xa1y\x01\x02\xc3"])
def test_a_yaml_rule_read_from_the_text_cache_is_the_rule_read_from_the_file(
    damage: bytes | None, tmp_path: Path
) -> None:
    rule = tmp_path / "bad.yaml"
    good = SENTINEL.replace("Bad column", "Good").replace("NoSuchColumn == 1", "FileName has 'x'")
    rule.write_text(good.replace("0b6a3c1e", "1b6a3c1e"))
    (tmp_path / "broken.yaml").write_text(SENTINEL)
    cold = RuleSet.load([tmp_path], builtin=False)
    entries = sorted((cache_dir() / "text").glob("*.msgpack"))
    assert len(entries) == 2
    if damage is not None:  # garbage, truncated, wrong shape, wrong types: read from the file again
        for entry in entries:
            entry.write_bytes(damage)
    warm = RuleSet.load([tmp_path], builtin=False)
    for rules, failures in (cold, warm):
        [good] = rules.rules
        assert (good.name, good.severity, good.tactics) == ("Good", "high", ("Collection",))
        [failure] = failures  # the error is placed in the file from the cached query position
        assert (failure.line, failure.col) == (7, 11) and "NoSuchColumn" in failure.message
    assert cold[0].rules[0].query == warm[0].rules[0].query
