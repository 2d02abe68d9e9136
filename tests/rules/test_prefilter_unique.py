"""The prefilter on rows whose values never repeat, and on the demo: it may only skip branches that
cannot match, so ``RuleSet.evaluate`` must give exactly the matches of the plain evaluator
(``RuleSet(..., prefilter=False)``: every branch on every row).

Rows come from the benchmark generator (scripts/unique_rows.py) for drawn seeds, some of them with
texts that the regex-only Sigma rules (tests/data/kql/sigma-regex) and the other rules' literals match
spliced into their command lines and paths.
"""

from __future__ import annotations

import importlib.util
import json
import random
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from etwsensor.pipeline import ReplaySummary, input_rows
from etwsensor.rules import RuleSet, multimatch
from tests.rules.kqlhelpers import DATA

ROOT = Path(__file__).resolve().parents[2]
RULES = [DATA / "sigma", DATA / "sigma-regex"]
# Texts each regex-only rule matches (and look-alikes that it does not).
REGEX_HITS = [
    r'"C:\Users\Public\abc.dat. "',  # Raspberry Robin: \name.ext. followed by a quote or space
    " " + "a1" * 32 + " " + "b2" * 8,  # SNAKE: 64 and 16 hex digits between spaces
    "i`nv`oke-expression x",  # token obfuscation: backticks inside a word
    '"{0}{1}" -f "a","b"',  # token obfuscation: format-operator reordering
    "${e`n`v:path}",  # token obfuscation: env:path with backticks
    "${env:path}",  # excluded by the rule's not(contains)
    r"C:\Users\Public\abc.dat.exe",
]

SPLICED = [
    "ProcessCommandLine",
    "FolderPath",
    "InitiatingProcessCommandLine",
    "RegistryKey",
    "RegistryValueData",
    "InitiatingProcessFolderPath",
]


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location("unique_rows", ROOT / "scripts" / "unique_rows.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


unique_rows = _generator().unique_rows


def _load(prefilter: bool) -> RuleSet:
    rs, failures = RuleSet.load(RULES, builtin=True, use_cache=False)
    assert len(rs.rules) >= 40, failures
    return rs if prefilter else RuleSet(rs.rules, rs.clock, prefilter=False)


@pytest.fixture(scope="module")
def pair() -> tuple[RuleSet, RuleSet, list[str]]:
    fast, plain = _load(True), _load(False)
    literals: set[str] = set()
    for rule in fast.rules:
        for m in re.finditer(r'"((?:[^"\\]|\\.)*)"', rule.query):
            try:
                literals.add(json.loads(f'"{m.group(1)}"'))
            except ValueError:
                continue
    return fast, plain, sorted(literals)


def _matches(rs: RuleSet, table: str, row: dict[str, Any], now: datetime | None) -> list[tuple[str, str]]:
    return sorted(
        (m.rule.id, json.dumps(m.row, default=str, sort_keys=True)) for m in rs.evaluate(table, row, now)
    )


def test_regex_only_rules_are_gated_and_still_match(pair: tuple[RuleSet, RuleSet, list[str]]) -> None:
    fast, plain, _ = pair
    dispatch = fast._dispatch["DeviceProcessEvents"]
    gated = {dispatch.always[i][0].id for i in dispatch.regex_gated}
    assert len(gated) == 3  # the three rules of tests/data/kql/sigma-regex
    hits = 0
    for text in REGEX_HITS:
        row = {"ActionType": "ProcessCreated", "ProcessCommandLine": text, "FolderPath": r"C:\x\y.exe"}
        got = _matches(fast, "DeviceProcessEvents", row, None)
        assert got == _matches(plain, "DeviceProcessEvents", row, None)
        hits += sum(rule_id in gated for rule_id, _ in got)
    assert hits == 5  # every sample but the two look-alikes


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(1, 10**6), data=st.data())
def test_same_matches_as_plain_evaluator_on_unique_rows(
    pair: tuple[RuleSet, RuleSet, list[str]], seed: int, data: st.DataObject
) -> None:
    fast, plain, literals = pair
    rows = unique_rows(30, seed=seed)
    splice = st.sampled_from(REGEX_HITS + literals)
    for table, row in rows:
        if data.draw(st.booleans()):
            column = data.draw(st.sampled_from(SPLICED))
            row[column] = f"{row.get(column, '')}{data.draw(splice)}"
        assert _matches(fast, table, row, None) == _matches(plain, table, row, None)


def test_same_matches_as_plain_evaluator_on_the_demo() -> None:
    fast, plain = _load(True), _load(False)
    rows = list(input_rows(ROOT / "examples" / "demo.jsonl.zst", None, ReplaySummary()))
    assert len(rows) == 1034
    seen = 0
    for table, row in rows:
        now = row.get("Timestamp")
        got = _matches(fast, table, row, now)
        assert got == _matches(plain, table, row, now)
        seen += len(got)
    flushed = sorted(m.rule.id for m in fast.flush())
    assert flushed == sorted(m.rule.id for m in plain.flush())
    assert seen + len(flushed) > 0


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(1, 10**6))
def test_needle_search_finds_the_same_needles_before_and_after_it_turns_into_an_re2_set(seed: int) -> None:
    rnd = random.Random(seed)
    alphabet = "abcdefgh\\. -"
    needles = sorted({"".join(rnd.choice(alphabet) for _ in range(rnd.randint(2, 7))) for _ in range(1500)})
    needles += ["é", "👩", "ab👩", "xé"]  # searched only in texts that are not ASCII
    assert len(needles) - 4 >= multimatch._WARM_NEEDLES  # the ASCII ones: automaton, then RE2 set
    texts = ["".join(rnd.choice(alphabet + "é👩") for _ in range(rnd.randint(0, 80))) for _ in range(40)]
    search = multimatch.needle_search(needles)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(multimatch, "_RE2_AFTER", 20)  # the switch happens half-way through the texts
        for text in texts:
            assert set(search(text)) == {i for i, n in enumerate(needles) if n in text}
