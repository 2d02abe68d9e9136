"""Loading, checking and evaluating rules: the seed, the built-in pack, errors with positions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from etwsensor.rules import RuleSet
from etwsensor.rules.frontend import FrontEndError
from etwsensor.rules.plan import Clock
from etwsensor.rules.ruleset import cache_dir, compile_rule
from tests.rules.kqlhelpers import DATA, run_query

NOW = datetime(2026, 4, 16, 12, 0, tzinfo=UTC)
DI_KEY = r"HKEY_CURRENT_USER\S-1-5-21-1-2-3-1001\Software\Microsoft\DirectInput\MostRecentApplication"
SEED_ID = "6f3c1a52-0b7e-4c1e-9a51-1056001a0001"


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_verbatim_seed_fails_naming_account_name() -> None:
    rs, failures = RuleSet.load([DATA / "T1056.001-seed-verbatim.kql"], builtin=False)
    assert rs.rules == []
    [f] = failures
    assert "AccountName" in f.message and "DeviceImageLoadEvents" in f.message
    # 1-based position of the first offending AccountName (the DLLHookLoads projection).
    line = (DATA / "T1056.001-seed-verbatim.kql").read_text().splitlines()[f.line - 1]
    assert line[f.col - 1 :].startswith("AccountName,")
    assert line.startswith("| project Timestamp, DeviceName, AccountName")


def test_builtin_pack_compiles_with_metadata() -> None:
    rs, failures = RuleSet.load([], builtin=True)
    assert failures == []
    assert len(rs.rules) >= 6
    for r in rs.rules:
        assert r.id and r.name and r.description and r.severity in ("low", "medium", "high")
        assert "T1056.001" in r.techniques and r.tactics and r.false_positives and r.references
    seed = rs.get(SEED_ID)
    assert seed is not None and seed.name == "Keylogging (seed)"
    assert (seed.severity, seed.confidence) == ("high", "medium")
    assert "AccountName=InitiatingProcessAccountName" in seed.description
    assert set(seed.tables) == {
        "DeviceProcessEvents",
        "DeviceImageLoadEvents",
        "DeviceRegistryEvents",
        "DeviceFileEvents",
    }


def test_seed_rule_matches_each_branch_with_union_columns() -> None:
    rs, _ = RuleSet.load([], builtin=True)
    seed = rs.get(SEED_ID)
    assert seed is not None and seed.plan is not None
    rule_set = RuleSet([seed], seed.plan.clock)
    img = {
        "Timestamp": NOW,
        "FileName": "USER32.dll",
        "InitiatingProcessFileName": "evil.exe",
        "InitiatingProcessAccountName": "bob",
        "DeviceName": "pc1",
    }
    [m] = rule_set.evaluate("DeviceImageLoadEvents", img, NOW)
    assert m.row["AccountName"] == "bob" and m.row["Reason"].startswith("Suspicious user32.dll")
    # Outer union: every output row has every column of every leg, strings default to "".
    assert list(m.row) == list(seed.plan.columns)
    assert m.row["ProcessCommandLine"] == "" and m.row["RegistryKey"] == ""
    allowed = dict(img, InitiatingProcessFileName="explorer.exe")
    assert rule_set.evaluate("DeviceImageLoadEvents", allowed, NOW) == []
    stale = dict(img, Timestamp=NOW - timedelta(days=2))
    assert rule_set.evaluate("DeviceImageLoadEvents", stale, NOW) == []
    proc = {"Timestamp": NOW, "ProcessCommandLine": "x.exe GetAsyncKeyState", "AccountName": "amy"}
    [m] = rule_set.evaluate("DeviceProcessEvents", proc, NOW)
    assert m.row["AccountName"] == "amy"
    reg = {
        "Timestamp": NOW,
        "RegistryKey": r"HKEY_LOCAL_MACHINE\SYSTEM\CurrentControlSet\Services\kb",
        "RegistryValueName": "ImagePath",
        "RegistryValueData": r"C:\drivers\kbdfilter.sys",
    }
    assert len(rule_set.evaluate("DeviceRegistryEvents", reg, NOW)) == 1
    # The seed only knows CurrentControlSet; the tuned service rule takes ControlSet001 too.
    reg001 = dict(
        reg, RegistryKey=r"HKEY_LOCAL_MACHINE\SYSTEM\ControlSet001\Services\kb", ActionType="RegistryValueSet"
    )
    assert rule_set.evaluate("DeviceRegistryEvents", reg001, NOW) == []
    hits = {m.rule.id for m in rs.evaluate("DeviceRegistryEvents", reg001, NOW)}
    assert "6f3c1a52-0b7e-4c1e-9a51-1056001a0005" in hits


@pytest.mark.parametrize(
    ("table", "row", "rule_suffix", "expected"),
    [
        (
            "DeviceImageLoadEvents",
            {"FileName": "user32.dll", "InitiatingProcessFolderPath": r"C:\Users\bob\Downloads\kl.exe"},
            "0002",
            True,
        ),
        (
            "DeviceImageLoadEvents",
            {
                "FileName": "user32.dll",
                "InitiatingProcessFolderPath": r"\Device\HarddiskVolume3\Users\bob\kl.exe",
            },
            "0002",
            True,
        ),
        (
            "DeviceImageLoadEvents",
            {"FileName": "user32.dll", "InitiatingProcessFolderPath": r"C:\Program Files\App\app.exe"},
            "0002",
            False,
        ),
        (
            "DeviceProcessEvents",
            {"FileName": "powershell.exe", "ProcessCommandLine": "powershell -c Get-Keystrokes -LogPath x"},
            "0003",
            True,
        ),
        (
            "DeviceProcessEvents",
            {
                "FileName": "renamed.exe",
                "ProcessVersionInfoOriginalFileName": "PowerShell.EXE",
                "ProcessCommandLine": "x [Windows.Input.Keyboard]::IsKeyDown('A')",
            },
            "0003",
            True,
        ),
        (
            "DeviceProcessEvents",
            {"FileName": "notepad.exe", "ProcessCommandLine": "GetAsyncKeyState"},
            "0003",
            False,
        ),
        (
            "DeviceFileEvents",
            {
                "ActionType": "FileCreated",
                "FileName": "keylogger.txt",
                "InitiatingProcessFileName": "powershell.exe",
            },
            "0004",
            True,
        ),
        (
            "DeviceFileEvents",
            {
                "ActionType": "FileCreated",
                "FileName": "backlog.txt",
                "InitiatingProcessFileName": "powershell.exe",
            },
            "0004",
            False,
        ),
        (
            "DeviceRegistryEvents",
            {
                "ActionType": "RegistryValueSet",
                "RegistryKey": DI_KEY,
                "RegistryValueName": "Name",
                "RegistryValueData": "kl.exe",
                "InitiatingProcessFolderPath": r"C:\Users\Public\kl.exe",
            },
            "0006",
            True,
        ),
        (
            "DeviceRegistryEvents",
            {
                "ActionType": "RegistryValueSet",
                "RegistryKey": DI_KEY,
                "RegistryValueName": "Name",
                "RegistryValueData": "game.exe",
                "InitiatingProcessFolderPath": r"C:\Program Files\Game\game.exe",
            },
            "0006",
            False,
        ),
    ],
)
def test_tuned_rules(table: str, row: dict[str, object], rule_suffix: str, expected: bool) -> None:
    rs, _ = RuleSet.load([], builtin=True)
    hits = {m.rule.id[-4:] for m in rs.evaluate(table, row, NOW)}
    assert (rule_suffix in hits) is expected


def test_directinput_rule_projects_the_registry_value() -> None:
    rs, _ = RuleSet.load([], builtin=True)
    row = {
        "ActionType": "RegistryValueSet",
        "RegistryValueName": "Id",
        "RegistryValueData": "42",
        "RegistryKey": r"HKEY_USERS\S-1-5-21-1\Software\Microsoft\DirectInput\MostRecentApplication",
        "InitiatingProcessFolderPath": r"C:\Users\bob\AppData\Local\Temp\k.exe",
        "InitiatingProcessFileName": "k.exe",
    }
    [m] = [m for m in rs.evaluate("DeviceRegistryEvents", row, NOW) if m.rule.id.endswith("0006")]
    assert m.row["RegistryValueName"] == "Id" and m.row["RegistryValueData"] == "42"
    assert m.row["InitiatingProcessFileName"] == "k.exe" and m.row["RegistryKey"] == row["RegistryKey"]


@pytest.mark.parametrize(
    ("kql", "needle", "position"),
    [
        ("DeviceProcessEvents\n| where Foo == 1", "Foo", (2, 9)),
        ("DeviceProcesEvents | take 1", "DeviceProcesEvents", (1, 1)),
        ("DeviceFileEvents\n| where FileName == 'a'\n| summarize count() by DeviceName", "summarize", (3, 3)),
        ("DeviceFileEvents | where nosuchfn(FileName)", "nosuchfn", (1, 26)),
        ("DeviceFileEvents | where FileName ==", "syntax error", None),
        ("DeviceFileEvents | join (DeviceProcessEvents) on DeviceId", "join", (1, 20)),
        ("DeviceFileEvents | where FileName matches regex '(a'", "regular expression", None),
        ("DeviceFileEvents | project-reorder FileName", "project-reorder", (1, 20)),
    ],
)
def test_errors_name_the_culprit_with_a_position(
    kql: str, needle: str, position: tuple[int, int] | None
) -> None:
    with pytest.raises(FrontEndError) as info:
        compile_rule(kql, Clock(), use_cache=False)
    assert needle in info.value.message
    if position is not None:
        assert (info.value.line, info.value.col) == position


def test_yaml_positions_are_file_positions(tmp_path: Path) -> None:
    p = _write(
        tmp_path,
        "r.yaml",
        "id: x1\nname: X\nseverity: low\nquery: |\n  DeviceFileEvents\n  | where Nope == 1\n",
    )
    _, failures = RuleSet.load([p], builtin=False)
    [f] = failures
    assert (f.file, f.line, f.col) == (str(p), 6, 11) and "Nope" in f.message


def test_bad_rules_are_skipped_and_others_load(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "good.kql",
        "// id: good-1\n// name: Good\n// severity: high\nDeviceProcessEvents | where FileName =~ 'a.exe'\n",
    )
    _write(tmp_path, "bad.kql", "DeviceProcessEvents | where\n")
    _write(tmp_path, "plain.kql", "DeviceFileEvents | where FileName == 'x'\n")
    _write(tmp_path, "zdup.yaml", "id: good-1\nname: dup\nquery: DeviceFileEvents\n")
    rs, failures = RuleSet.load([tmp_path], builtin=False)
    assert sorted(r.id for r in rs.rules) == ["good-1", "plain"]
    good = rs.get("good-1")
    assert good is not None and good.name == "Good" and good.severity == "high"
    plain = rs.get("plain")
    assert plain is not None and plain.name == "plain.kql"
    assert sorted(Path(f.file).name for f in failures) == ["bad.kql", "zdup.yaml"]


def test_tables_read_drive_provider_selection(tmp_path: Path) -> None:
    _write(
        tmp_path, "a.kql", "DeviceFileEvents | where FolderPath endswith '.ps1' | project Timestamp, FileName"
    )
    rs, _ = RuleSet.load([tmp_path], builtin=False)
    assert rs.tables_read == {"DeviceFileEvents": frozenset({"FolderPath", "Timestamp", "FileName"})}


def test_union_withsource_project_away_rename_and_noops() -> None:
    rows = [
        ("DeviceFileEvents", {"FileName": "a", "ActionType": "FileCreated"}),
        ("DeviceProcessEvents", {"FileName": "b", "ProcessId": 7}),
    ]
    out = run_query(
        "let F = DeviceFileEvents | project FileName, ActionType;\n"
        "union withsource=Src F, (DeviceProcessEvents | project FileName, ProcessId)\n"
        "| project-rename Name = FileName | sort by Name | take 10",
        rows,
    )
    assert out == [
        {"Src": "union_arg0", "Name": "a", "ActionType": "FileCreated", "ProcessId": None},
        {"Src": "union_arg1", "Name": "b", "ActionType": "", "ProcessId": 7},
    ]
    out = run_query(
        "DeviceFileEvents | union DeviceProcessEvents | where FileName == 'b' | project-away *Id*,"
        " Timestamp | project FileName",
        rows,
    )
    assert out == [{"FileName": "b"}]


def test_extend_moves_an_existing_column_to_the_end() -> None:
    rows = [("DeviceFileEvents", {"FileName": "a"})]
    out = run_query(
        "DeviceFileEvents | project FileName, ActionType | extend FileName = strcat(FileName, '!')", rows
    )
    assert list(out[0].items()) == [("ActionType", ""), ("FileName", "a!")]


def test_warm_cache_gives_the_same_rules(tmp_path: Path) -> None:
    _write(tmp_path, "a.kql", "DeviceFileEvents | where FileName has 'x'")
    cold, _ = RuleSet.load([tmp_path], builtin=False)
    assert any(cache_dir().iterdir())
    warm, _ = RuleSet.load([tmp_path], builtin=False)
    row = {"FileName": "a x b"}
    assert (
        len(cold.evaluate("DeviceFileEvents", row, None))
        == len(warm.evaluate("DeviceFileEvents", row, None))
        == 1
    )


def test_evaluation_errors_are_counted_not_raised(tmp_path: Path) -> None:
    _write(tmp_path, "a.kql", "DeviceProcessEvents | where ProcessId > 5")
    rs, _ = RuleSet.load([tmp_path], builtin=False)
    assert rs.evaluate("DeviceProcessEvents", {"ProcessId": "not a number"}, None) == []
    assert rs.evaluate("DeviceProcessEvents", {"ProcessId": 6}, None) != []
