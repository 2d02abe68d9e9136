"""The worked cases of reference/kql_semantics.md §6 (and the rules around them), one by one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.rules.kqlhelpers import run_query, scalar

CMD = r'@"C:\Windows\System32\cmd.exe"'
AZ = '"https://management.azure.com/subscriptions/0000/resourcegroups/test.rg000001?api-version=2021-04-01"'


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ('"aBc" == "aBc"', True),  # 1
        ('"abc" == "ABC"', False),
        ('"abc" =~ "ABC"', True),  # 2
        ('"aBc" !~ "xyz"', True),
        ('"abc" != "ABC"', True),
        ('"FabriKam" contains "BRik"', True),  # 3
        ('"FabriKam" contains_cs "Kam"', True),
        ('"Fabrikam" !contains_cs "Kam"', True),
        ('"Fabrikam" startswith "fab"', True),  # 4
        ('"Fabrikam" startswith_cs "fab"', False),
        ('"Fabrikam" !startswith "kam"', True),
        ('"Fabrikam" endswith "Kam"', True),  # 5
        ('"Fabrikam" endswith_cs "kam"', True),
        ('"Fabrikam" !endswith "brik"', True),
        ('"North America" has "america"', True),  # 6
        ('"North America" has "amer"', False),
        ('"North America" has_cs "America"', True),
        ('"North America" has_cs "america"', False),
        ('"KustoExplorerQueryRun" has "Explorer"', False),  # 7
        ('"KustoExplorerQueryRun" contains "Explorer"', True),
        ('"Kusto: ad67d136-c1db-4f9f-88ef-d94f3b6b0b5a;KustoExplorerQueryRun" has "c1db"', True),  # 8
        ('"Kusto: ad67d136-c1db-4f9f-88ef-d94f3b6b0b5a;KustoExplorerQueryRun" has "4f9"', False),
        ('"North and South America" has_all("south","north")', True),  # 9
        ('"North America" has_any("south","north")', True),
        ('"BA" has "b"', False),  # 10
        (f'{AZ} has "resourcegroups/test.rg000001"', True),  # 12
        (f'{AZ} has "/resourcegroups/test.rg000001?"', True),
        ('"North America" has "North America"', True),
        (f'{CMD} has "cmd"', True),  # 13
        (f'{CMD} has "System"', False),
        (f'{CMD} has "system32"', True),
        (f'{CMD} has "exe"', True),
        (f'{CMD} has "cmd.exe"', True),  # 14
        (f'{CMD} has "md.exe"', False),
        (f'{CMD} has @"\\System32\\"', True),
        ('"abc" in ("123","345","abc")', True),  # 15
        ('"Abc" in ("abc")', False),
        ('"Abc" in~ ("123","345","abc")', True),
        ('"bCa" !in~ ("123","345","ABC")', True),
        ("2 in (dynamic([1,[2,3]]))", True),  # 16
        ('"Fabrikam" matches regex "b.*k"', True),  # 17
        ('"Fabrikam" matches regex "^b"', False),
        ('"Fabrikam" matches regex "(?i)FAB"', True),
        ('isempty("")', True),  # 20
        ('isempty("x")', False),
        ('isempty(parse_json(""))', True),
        ('isempty(parse_json("[]"))', False),
        ('isnull("")', False),  # 21
        ('isnull(parse_json(""))', True),
        ('isnull(parse_json("{}"))', False),
        ("int(null) == int(null)", None),  # 22
        ("int(null) == 5", False),
        ("int(null) != 5", True),
        ("int(null) > 3", None),
        ("false and bool(null)", False),  # 24
        ("true or bool(null)", True),
        ("not(bool(null))", None),
        ("int(null) + 10", None),
        ("bin(4.5, 1)", 4.0),  # 25
        ("bin(time(16d), 7d)", timedelta(days=14)),
        ("bin(datetime(1970-05-11 13:45:07), 1d)", datetime(1970, 5, 11, tzinfo=UTC)),
        ("bin(5, -1)", None),
        ("1d / 1s", 86400.0),  # 26
        ('strlen("Hello"\', \'@"world!")', 13),  # 27
        ('strcat("hello"," ","world")', "hello world"),
    ],
)
def test_documented_vectors(expr: str, expected: object) -> None:
    assert scalar(expr) == expected


def test_where_keeps_null_not_equal_rows() -> None:
    # §2 / vector 23: `null != 5` is true, so the null row survives `where x != 5`.
    rows = [("DeviceProcessEvents", {"ProcessId": 5}), ("DeviceProcessEvents", {"ProcessId": None})]
    out = run_query("DeviceProcessEvents | where ProcessId != 5 | project ProcessId", rows)
    assert out == [{"ProcessId": None}]


def test_between_is_inclusive_and_takes_a_timespan_high_bound() -> None:
    rows = [("DeviceProcessEvents", {"ProcessId": i}) for i in range(1, 11)]
    inside = run_query("DeviceProcessEvents | where ProcessId between (5 .. 9) | project ProcessId", rows)
    outside = run_query("DeviceProcessEvents | where ProcessId !between (5 .. 9) | project ProcessId", rows)
    assert [r["ProcessId"] for r in inside] == [5, 6, 7, 8, 9]
    assert [r["ProcessId"] for r in outside] == [1, 2, 3, 4, 10]
    t = datetime(2007, 7, 29, tzinfo=UTC)
    assert scalar("Timestamp between (datetime(2007-07-27) .. 3d)", {"Timestamp": t}) is True


def test_missing_string_column_is_empty_not_null() -> None:
    assert scalar("isnull(FileName)") is False
    assert scalar("isempty(FileName)") is True
    assert scalar("isnull(ProcessId)") is True


def test_now_and_ago_read_the_stream_clock() -> None:
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert scalar("now()", now=now) == now
    assert scalar("ago(1h)", now=now) == now - timedelta(hours=1)
    assert scalar("now(-2d) == ago(2d)", now=now) is True
    old = {"Timestamp": now - timedelta(days=2)}
    assert scalar("Timestamp > ago(24h)", old, now=now) is False
    assert scalar("Timestamp > ago(24h)", {"Timestamp": now}, now=now) is True


def test_string_functions() -> None:
    row = {"FolderPath": r"C:\Users\bob\AppData\evil.exe", "ProcessCommandLine": "  x  "}
    assert scalar("tolower(FolderPath)", row) == r"c:\users\bob\appdata\evil.exe"
    assert scalar('toupper("abc")') == "ABC"
    assert scalar(r'split(FolderPath, @"\")', row) == ["C:", "Users", "bob", "AppData", "evil.exe"]
    assert scalar(r'tostring(split(FolderPath, @"\")[2])', row) == "bob"
    assert scalar(r'array_length(split(FolderPath, @"\"))', row) == 5
    assert scalar(r'extract(@"\\([^\\]+)\.exe$", 1, FolderPath)', row) == "evil"
    assert scalar('extract("zzz(.)", 1, "abc")') == ""
    assert scalar('replace_string("a-b-c", "-", "+")') == "a+b+c"
    assert scalar('trim(" ", ProcessCommandLine)', row) == "x"
    assert scalar('substring("abcdef", 2, 2)') == "cd"
    assert scalar('substring("abcdef", -2)') == "ef"
    assert scalar('strcat("a", 1, "b")') == "a1b"
    assert scalar('coalesce("", "x")') == "x"
    assert scalar("coalesce(int(null), 3)") == 3


def test_conditional_and_conversion_functions() -> None:
    assert scalar('iff(1 > 2, "a", "b")') == "b"
    assert scalar('iif(bool(null), "a", "b")') == "b"
    assert scalar('case(1 == 2, "x", 2 == 2, "y", "z")') == "y"
    assert scalar('toint("12")') == 12
    assert scalar('toint("12x")') is None
    assert scalar("tolong(1.9)") == 1
    assert scalar('todouble("1.5")') == 1.5
    assert scalar('tobool("true")') is True
    assert scalar("tostring(5)") == "5"
    assert scalar('todatetime("2024-01-01 10:00")') == datetime(2024, 1, 1, 10, tzinfo=UTC)
    assert scalar('totimespan("01:30:00")') == timedelta(minutes=90)
    assert scalar("set_has_element(dynamic([1, 2]), 2)") is True


def test_dynamic_member_access_on_additional_fields() -> None:
    row = {"AdditionalFields": '{"Command": "x", "Nested": {"List": [10, 20]}}'}
    assert scalar("tostring(parse_json(AdditionalFields).Command)", row) == "x"
    assert scalar("toint(parse_json(AdditionalFields).Nested.List[1])", row) == 20
    assert scalar('tostring(parse_json(AdditionalFields)["Command"])', row) == "x"
    assert scalar("isnull(parse_json(AdditionalFields).Missing)", row) is True


def test_in_with_dynamic_let_and_case_insensitive() -> None:
    rows = [("DeviceProcessEvents", {"FileName": n}) for n in ("CMD.exe", "calc.exe", "")]
    out = run_query(
        'let L = dynamic(["cmd.exe", "powershell.exe"]);\n'
        "DeviceProcessEvents | where FileName in~ (L) | project FileName",
        rows,
    )
    assert out == [{"FileName": "CMD.exe"}]
    out = run_query(
        'let L = dynamic(["cmd.exe"]); DeviceProcessEvents | where FileName !in (L) | project FileName', rows
    )
    assert [r["FileName"] for r in out] == ["CMD.exe", "calc.exe", ""]


def test_has_ignores_underscore_like_the_oracle() -> None:
    # The docs do not say whether "_" is alphanumeric; duckdb-kql treats it as a separator.
    assert scalar('"foo_bar baz" has "foo"') is True
    assert scalar('"foo_bar baz" has "foo_bar"') is True
