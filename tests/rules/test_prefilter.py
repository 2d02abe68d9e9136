"""The per-table prefilter is a necessary condition: it must never drop a match.

Rows are built from the rules' own literals (so that many of them match), in random case, and
the matches of ``RuleSet.evaluate`` (prefiltered) must equal running every branch on every row.
Also checks the literal the prefilter extracts from a regex.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from etwsensor.rules import RuleSet
from etwsensor.rules.prefilter import regex_literal
from tests.rules.kqlhelpers import DATA


@pytest.fixture(scope="module")
def loaded() -> tuple[RuleSet, dict[str, list[str]], list[str]]:
    rs, _failures = RuleSet.load([DATA / "sigma"], builtin=True, use_cache=False)
    literals: list[str] = []
    for rule in rs.rules:
        for m in re.finditer(r'"((?:[^"\\]|\\.)*)"', rule.query):
            try:
                literals.append(json.loads(f'"{m.group(1)}"'))
            except ValueError:
                continue
    columns: dict[str, list[str]] = {}
    for table, cols in rs.tables_read.items():
        columns[table] = sorted(cols - {"Timestamp"})
    return rs, columns, sorted(set(literals))


def _brute_force(rs: RuleSet, table: str, row: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for rule in rs.rules:
        assert rule.plan is not None
        for branch in rule.plan.branches:
            if branch.table == table:
                try:
                    got = branch.run(row)
                except Exception:
                    continue
                if got is not None:
                    out.append((rule.id, got))
    return out


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_prefilter_never_drops_a_match(
    loaded: tuple[RuleSet, dict[str, list[str]], list[str]], data: st.DataObject
) -> None:
    rs, columns, literals = loaded
    table = data.draw(st.sampled_from(sorted(columns)))
    piece = st.one_of(st.sampled_from(literals), st.sampled_from(["", " ", "\\", "x", ".exe", "C:\\Users\\"]))
    value = (
        st.lists(piece, max_size=3).map("".join).flatmap(lambda s: st.sampled_from([s, s.lower(), s.upper()]))
    )
    row = data.draw(st.dictionaries(st.sampled_from(columns[table]), value, max_size=6))
    got = sorted((m.rule.id, json.dumps(m.row, default=str)) for m in rs.evaluate(table, row, None))
    want = sorted((rid, json.dumps(r, default=str)) for rid, r in _brute_force(rs, table, row))
    assert got == want


@pytest.mark.parametrize(
    ("pattern", "literal"),
    [
        (r"ping\s+-n.{6,64}echo EEEE\s?>\s?", "echo EEEE"),
        (r"cmd.{0,5}(?:/c|/r).+powershell", "powershell"),
        ("a|bcd", None),
        (r"\.[a-zA-Z0-9]{1,4} \.", None),
        (r"(?i)\\temp\\abc", r"\temp\abc"),
        ("abcd?ef", "abc"),
        ("abc{0,1}def", "def"),
        (r"\d+\.exe$", ".exe"),
        ("(?x) a b c d", None),
    ],
)
def test_regex_literal(pattern: str, literal: str | None) -> None:
    assert regex_literal(pattern) == literal


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_gate_that_says_no_means_no_match(
    loaded: tuple[RuleSet, dict[str, list[str]], list[str]], data: st.DataObject
) -> None:
    """RowGate (asked before a row is built, on its own and its initiating-process columns) must
    never say "no" to a row that some rule matches."""
    rs, columns, literals = loaded
    gates = rs.row_gates()
    table = data.draw(st.sampled_from(sorted(columns)))
    piece = st.one_of(st.sampled_from(literals), st.sampled_from(["", " ", "\\", "x", ".exe", "C:\\Users\\"]))
    value = (
        st.lists(piece, max_size=3).map("".join).flatmap(lambda s: st.sampled_from([s, s.lower(), s.upper()]))
    )
    row = data.draw(st.dictionaries(st.sampled_from(columns[table]), value, max_size=6))
    gate = gates.get(table)
    if gate is None:
        return  # a table with a needle-less branch: every row is evaluated
    own = {k: v for k, v in row.items() if not k.startswith("InitiatingProcess")}
    base = {k: v for k, v in row.items() if k.startswith("InitiatingProcess")}
    if not gate.might_match(own, base):
        assert _brute_force(rs, table, row) == []


def _one_rule(tmp_path: Path, query: str) -> tuple[RuleSet, list[frozenset[tuple[str, str, bool]]]]:
    """The rule set of one query (rule id ``r``) and its branch's needle groups, best first."""
    (tmp_path / "r.kql").write_text(query)
    rs, failures = RuleSet.load([tmp_path], builtin=False, use_cache=False)
    assert failures == []
    plan = rs.rules[0].plan
    assert plan is not None
    return rs, plan.branches[0].needle_groups


def test_text_every_host_has_is_not_the_first_filter(tmp_path: Path) -> None:
    """A long needle that most rows contain (a temp folder) loses the first place to a rarer one;
    the rule still matches what it matched."""
    rs, groups = _one_rule(
        tmp_path,
        "DeviceProcessEvents | where ProcessCommandLine contains @'\\AppData\\Local\\Temp\\'"
        " and ProcessCommandLine contains 'control_rundll' and FolderPath endswith @'\\rundll32.exe'",
    )
    first, *others = groups
    assert first == frozenset({("ProcessCommandLine", "control_rundll", False)})
    assert frozenset({("ProcessCommandLine", "\\appdata\\local\\temp\\", False)}) in others
    row = {
        "ProcessCommandLine": r"rundll32.exe shell32.dll,Control_RunDLL C:\Users\a\AppData\Local\Temp\x.cpl",
        "FolderPath": r"C:\Windows\System32\rundll32.exe",
    }
    assert [m.rule.id for m in rs.evaluate("DeviceProcessEvents", row, None)] == ["r"]
    row["ProcessCommandLine"] = r"rundll32.exe C:\Users\a\AppData\Local\Temp\x.dll,Main"
    assert rs.evaluate("DeviceProcessEvents", row, None) == []


def test_a_few_valued_column_comes_after_common_text(tmp_path: Path) -> None:
    """ActionType passes most rows of its table whatever the value: a group with a common needle
    still filters before it (and the row gate asks the cheaper initiating-process columns)."""
    _rs, groups = _one_rule(
        tmp_path,
        'DeviceFileEvents | where ActionType == "FileCreated" and InitiatingProcessFolderPath has_any'
        ' ("Users", "Temp", "Downloads", "ProgramData", "Public", "Desktop", "Documents", "Music")',
    )
    assert [sorted({c for c, _n, _e in g}) for g in groups] == [
        ["InitiatingProcessFolderPath"],
        ["ActionType"],
    ]
