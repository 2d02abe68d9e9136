"""The prefilter's indexes and memo give exactly the answers of the plain scans they replace.

* ``suffix_tester``/``prefix_tester`` (set lookups by file name and by needle length) equal
  ``str.endswith``/``str.startswith`` with a tuple of needles;
* the per-column memos of the table prefilter (what a value selected) and of a branch's other
  one-column needle groups return the same matches on a value's first and later sightings, and
  when a memo is emptied because it is full.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from etwsensor.rules import RuleSet
from etwsensor.rules import dispatch as dispatch_module
from etwsensor.rules.scalars import AFFIX_INDEX_MIN, prefix_tester, suffix_tester

# Few characters, backslashes among them, so that suffixes, path segments and lengths collide.
_text = st.text(alphabet="\\ab.é", max_size=8)
_needles = st.lists(_text, min_size=AFFIX_INDEX_MIN, max_size=3 * AFFIX_INDEX_MIN).map(tuple)
_file_names = st.lists(_text.map(lambda s: "\\" + s.replace("\\", "")), min_size=AFFIX_INDEX_MIN, max_size=20)


@settings(max_examples=300, deadline=None)
@given(needles=_needles, names=_file_names, text=_text)
def test_suffix_tester_is_endswith(needles: tuple[str, ...], names: list[str], text: str) -> None:
    for ns in (needles, tuple(names), needles + tuple(names)):
        assert suffix_tester(ns)(text) == text.endswith(ns)
        for tail in ns[:3]:  # texts that do end with a needle, after a path
            assert suffix_tester(ns)("c:\\x" + tail) == ("c:\\x" + tail).endswith(ns)


@settings(max_examples=300, deadline=None)
@given(needles=_needles, text=_text)
def test_prefix_tester_is_startswith(needles: tuple[str, ...], text: str) -> None:
    assert prefix_tester(needles)(text) == text.startswith(needles)
    for head in needles[:3]:
        assert prefix_tester(needles)(head + text) == (head + text).startswith(needles)


def test_file_name_suffixes() -> None:
    test = suffix_tester((*(f"\\{n}.dll" for n in "abcdefghij"), "\\"))
    assert test("C:\\Windows\\b.dll")
    assert test("C:\\Windows\\")
    assert not test("C:\\Windows\\xb.dll")
    assert not test("b.dll")  # no backslash: "\\b.dll" is not a suffix


_DLLS = [f"lib{i}.dll" for i in range(40)]


@pytest.fixture()
def rules(tmp_path: Path) -> RuleSet:
    # Enough substring needles that the table prefilter uses its RE2 set, and an equality index
    # (the negation gives no needle, so the 40 file names are the rule's only group).
    names = ", ".join(f'"\\\\{d}"' for d in _DLLS)
    (tmp_path / "many.kql").write_text(
        "DeviceImageLoadEvents\n"
        f'| where FolderPath has_any ({names}) and InitiatingProcessFolderPath !contains @"\\System32\\"\n'
        "| project FolderPath, InitiatingProcessFolderPath\n"
    )
    (tmp_path / "exact.kql").write_text(
        'DeviceImageLoadEvents\n| where InitiatingProcessFileName in~ ("rundll32.exe", "regsvr32.exe")\n'
        '| where FolderPath endswith @"\\lib7.dll"\n'
    )
    rs, failures = RuleSet.load([tmp_path], builtin=False, use_cache=False)
    assert not failures
    assert rs._dispatch["DeviceImageLoadEvents"].search is not None  # the RE2 set path is exercised
    return rs


def _rows() -> list[dict[str, Any]]:
    rows = []
    for i, dll in enumerate(_DLLS * 2 + ["other.dll"]):
        folder = ["C:\\Users\\bob\\AppData\\Local\\Temp", "C:\\Windows\\System32"][i % 2]
        rows.append(
            {
                "FolderPath": f"C:\\Windows\\System32\\{dll.upper() if i % 3 else dll}",
                "InitiatingProcessFolderPath": f"{folder}\\x.exe",
                "InitiatingProcessFileName": "x.exe" if i % 5 == 0 else "RunDll32.exe",
            }
        )
    return rows


def _matches(rs: RuleSet, row: dict[str, Any]) -> list[tuple[str, str]]:
    return sorted((m.rule.id, m.row["FolderPath"]) for m in rs.evaluate("DeviceImageLoadEvents", row, None))


def _brute_force(rs: RuleSet, row: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for rule in rs.rules:
        assert rule.plan is not None
        for branch in rule.plan.branches:
            got = branch.run(row)
            if got is not None:
                out.append((rule.id, got["FolderPath"]))
    return sorted(out)


def test_memo_gives_the_same_matches_on_repeats(rules: RuleSet) -> None:
    rows = _rows()
    first = [_matches(rules, dict(r)) for r in rows]
    again = [_matches(rules, dict(r)) for r in rows]  # every value now remembered
    assert first == again == [_brute_force(rules, r) for r in rows]
    matched = [rule_id for found in first for rule_id, _path in found]
    assert matched.count("many") > 20 and matched.count("exact") == 2  # not vacuous


def test_memo_emptied_when_full(rules: RuleSet, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dispatch_module, "_MEMO_ENTRIES", 3)
    rows = _rows()
    for r in rows + rows:
        assert _matches(rules, r) == _brute_force(rules, r)
    memo_sizes = [len(index.memo) for d in rules._dispatch.values() for index in d.columns]
    assert memo_sizes and max(memo_sizes) <= 3


def test_non_string_and_long_values_are_not_remembered(rules: RuleSet) -> None:
    long_path = "C:\\" + "a\\" * dispatch_module._MEMO_MAX_LEN + "lib3.dll"
    row = {"FolderPath": long_path, "InitiatingProcessFolderPath": "C:\\Temp\\x.exe"}
    assert _matches(rules, row) == _brute_force(rules, row) == [("many", long_path)]
    assert all(long_path not in index.memo for d in rules._dispatch.values() for index in d.columns)


# Sigma's hash IOCs become ``contains`` of whole digests: one needle length per column.
_MD5S = [f"{i:032x}" for i in range(1, 40)]
_SHA1 = "da39a3ee5e6b4b0d3255bfef95601890afd80709"


@pytest.fixture()
def hash_rules(tmp_path: Path) -> RuleSet:
    md5s = ", ".join(f'"{h}"' for h in _MD5S)
    (tmp_path / "md5.kql").write_text(f"DeviceImageLoadEvents\n| where MD5 has_any ({md5s})\n| project MD5\n")
    (tmp_path / "sha1.kql").write_text(
        f'DeviceImageLoadEvents\n| where SHA1 contains "{_SHA1.upper()}" or SHA1 =~ "abc"\n| project SHA1\n'
    )
    (tmp_path / "mixed.kql").write_text(  # two needle lengths: searched as before
        'DeviceImageLoadEvents\n| where SHA256 contains "abcd" or SHA256 contains "abcdef"\n'
        "| project SHA256\n"
    )
    rs, failures = RuleSet.load([tmp_path], builtin=False, use_cache=False)
    assert not failures
    columns = {c.column: c for c in rs._dispatch["DeviceImageLoadEvents"].columns}
    assert columns["MD5"].width == 32 and columns["SHA1"].width == 40 and columns["SHA256"].width == 0
    return rs


@pytest.mark.parametrize(
    "row, expected",
    [
        ({"MD5": _MD5S[4].upper()}, ["md5"]),  # the whole value: a dict lookup
        ({"MD5": "MD5=" + _MD5S[4] + ",SHA1=x"}, ["md5"]),  # longer: searched
        ({"MD5": _MD5S[4][:-1]}, []),  # shorter: cannot hold a needle
        ({"MD5": "f" * 32}, []),
        ({"SHA1": _SHA1}, ["sha1"]),
        ({"SHA1": "ABC"}, ["sha1"]),  # the equality needle of the same column still holds
        ({"SHA1": _SHA1[1:] + "0"}, []),
        ({"SHA256": "xxabcdxx"}, ["mixed"]),
        ({"MD5": _MD5S[0], "SHA1": "SHA1=" + _SHA1}, ["md5", "sha1"]),
    ],
)
def test_digest_columns_are_decided_by_length(
    hash_rules: RuleSet, row: dict[str, str], expected: list[str]
) -> None:
    got = sorted(m.rule.id for m in hash_rules.evaluate("DeviceImageLoadEvents", row, None))
    plain = RuleSet(hash_rules.rules, hash_rules.clock, prefilter=False)
    assert got == sorted(m.rule.id for m in plain.evaluate("DeviceImageLoadEvents", row, None)) == expected
    gate = hash_rules.row_gates()["DeviceImageLoadEvents"]
    assert gate.might_match(row) or not expected


def test_a_column_of_new_values_stops_being_remembered_for_a_while(
    rules: RuleSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dispatch_module, "_MEMO_ENTRIES", 8)
    monkeypatch.setattr(dispatch_module, "_MEMO_RETRY_ROWS", 40)
    dispatch = rules._dispatch["DeviceImageLoadEvents"]
    (folder,) = [c for c in dispatch.columns if c.column == "FolderPath"]
    unique = [
        {"FolderPath": f"C:\\App{i}\\{_DLLS[i % 40]}", "InitiatingProcessFolderPath": "C:\\Temp\\x.exe"}
        for i in range(12)
    ]
    for r in unique:
        assert _matches(rules, r) == _brute_force(rules, r) != []
    assert not folder.remember and not folder.memo  # 8 values in 8 rows: the memo was not paying
    repeated = _rows()[:4] * 10  # 40 rows: the retry comes, then the values repeat
    for r in repeated:
        assert _matches(rules, r) == _brute_force(rules, r)
    assert folder.remember and 0 < len(folder.memo) <= 4


def test_non_ascii_needles_are_searched_only_in_non_ascii_texts_of_their_columns(tmp_path: Path) -> None:
    words = ", ".join(f'"word{i}"' for i in range(20))
    (tmp_path / "emoji.kql").write_text(
        f"DeviceProcessEvents\n| where ProcessCommandLine has_any ({words})"
        ' or ProcessCommandLine contains "🔥" or ProcessCommandLine contains "ｃｍｄ"\n'
    )
    (tmp_path / "product.kql").write_text(
        'DeviceProcessEvents\n| where ProcessVersionInfoProductName contains "operating sys"'
        ' or ProcessVersionInfoProductName contains "edge"\n'
    )
    rs, failures = RuleSet.load([tmp_path], builtin=False, use_cache=False)
    assert not failures
    dispatch = rs._dispatch["DeviceProcessEvents"]
    searched: list[str] = []
    wide = dispatch.wide_search
    dispatch.wide_search = lambda text: searched.append(text) or wide(text)
    plain = RuleSet(rs.rules, rs.clock, prefilter=False)
    product = "Microsoft® Windows® Operating System"  # not ASCII, in a column without such needles
    both = ["emoji", "product"]
    cases = [
        ({"ProcessVersionInfoProductName": product, "ProcessCommandLine": "x 🔥 y"}, both),
        ({"ProcessVersionInfoProductName": product, "ProcessCommandLine": "run ｃｍｄ now"}, both),
        ({"ProcessVersionInfoProductName": product, "ProcessCommandLine": "word7 only"}, both),
        ({"ProcessVersionInfoProductName": product, "ProcessCommandLine": "nothing"}, ["product"]),
        ({"ProcessVersionInfoProductName": "Edge", "ProcessCommandLine": "🔥"}, both),
    ]
    for row, expected in cases:
        got = sorted(m.rule.id for m in rs.evaluate("DeviceProcessEvents", row, None))
        assert got == sorted(m.rule.id for m in plain.evaluate("DeviceProcessEvents", row, None)) == expected
    # Only the command lines with non-ASCII text went through the non-ASCII set.
    assert searched == ["x 🔥 y", "run ｃｍｄ now", "🔥"]


def test_longer_texts_of_a_digest_column_are_remembered(hash_rules: RuleSet) -> None:
    dispatch = hash_rules._dispatch["DeviceImageLoadEvents"]
    (md5,) = [c for c in dispatch.columns if c.column == "MD5"]
    longer, whole = "MD5=" + _MD5S[2], _MD5S[3]
    for _ in range(2):  # the second time from the memo
        for value in (longer, whole):
            found = hash_rules.evaluate("DeviceImageLoadEvents", {"MD5": value}, None)
            assert [m.rule.id for m in found] == ["md5"]
    assert longer in md5.memo and whole not in md5.memo  # a whole digest is one dict lookup
