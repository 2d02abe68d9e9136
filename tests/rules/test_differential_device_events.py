"""DeviceEvents and its dynamic AdditionalFields column against duckdb-kql (the oracle).

Rows as the normalizer makes them (AdditionalFields a JSON object) and as row files may carry them
(the same object as JSON text) must give the rows and values duckdb-kql gives for the same KQL:
generated predicates and extends over ``AdditionalFields.X``, ``parse_json``, ``toint``/``tolong``,
``tostring``, ``set_has_element``, ``array_length`` and ``has``, and the three built-in DeviceEvents
rules. Not generated: JSON nulls inside AdditionalFields (Kusto's ``isnull`` is true of them,
duckdb-kql's is not) and whole-value projections of dynamic values (the oracle returns JSON text).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from etwsensor.rules import RuleSet
from etwsensor.rules.frontend import parse
from etwsensor.rules.plan import Clock
from etwsensor.rules.query import QueryCompiler
from etwsensor.tables import schema

duckdb = pytest.importorskip("duckdb")
duckdb_kql = pytest.importorskip("duckdb_kql")

TABLE = "DeviceEvents"
NOW = datetime(2026, 1, 1, tzinfo=UTC)
_SQL = {
    "string": "VARCHAR",
    "long": "BIGINT",
    "int": "INTEGER",
    "bool": "BOOLEAN",
    "datetime": "TIMESTAMPTZ",
    "dynamic": "VARCHAR",
}
ACTIONS = ["GetAsyncKeyStateApiCall", "SetWindowsHookExApiCall", "RegisterRawInputDevicesApiCall"]
FOLDERS = [
    r"C:\Windows\System32\osk.exe",
    r"C:\Program Files\Contoso\tool.exe",
    r"C:\Program Files (x86)\Steam\game.exe",
    r"C:\Users\alice\AppData\Local\Temp\rk.exe",
    "",
]
LIBS = ["", r"C:\Program Files\Contoso IME\imehook.dll", r"C:\Users\alice\AppData\Roaming\hk.dll"]
FLAGS = ["RIDEV_INPUTSINK", "RIDEV_NOLEGACY", "RIDEV_DEVNOTIFY", "RIDEV_REMOVE"]
HOOKS = ["WH_KEYBOARD_LL", "WH_KEYBOARD", "WH_MOUSE_LL", "WH_CBT"]

number = st.one_of(st.integers(0, 12_000), st.integers(0, 12_000).map(str))  # row files may carry text
extra = st.fixed_dictionaries(
    {},
    optional={
        "BackgroundCallCount": number,
        "MsSinceLastKeyEvent": number,
        "EventCount": st.integers(0, 50),
        "HookType": st.sampled_from(HOOKS),
        "pstrLib": st.sampled_from(LIBS),
        "ReturnValue": st.sampled_from([0, 1, 0x2004E]),
        "UsagePage": st.sampled_from([1, 12]),
        "Usage": st.sampled_from([2, 6]),
        "cVisWindows": st.integers(0, 2),
        "FlagNames": st.lists(st.sampled_from(FLAGS), unique=True, max_size=3),
    },
)
rows_strategy = st.lists(
    st.fixed_dictionaries(
        {
            "ActionType": st.sampled_from(ACTIONS),
            "InitiatingProcessFolderPath": st.sampled_from(FOLDERS),
            "AdditionalFields": st.one_of(st.none(), extra),
        }
    ),
    min_size=1,
    max_size=8,
)


BUILTIN = {"0010": "polling", "0011": "hook", "0012": "raw input"}


@pytest.fixture(scope="module")
def builtin() -> tuple[RuleSet, dict[str, str]]:
    """The built-in pack and each DeviceEvents rule translated once by the oracle (translation is slow)."""
    rules, failures = RuleSet.load([], builtin=True)
    assert failures == []
    sql = {r.id: str(duckdb_kql.to_sql(r.query, query_now=NOW)) for r in rules.rules if r.id[-4:] in BUILTIN}
    assert len(sql) == 3
    return rules, sql


@pytest.fixture(scope="module")
def oracle() -> Any:
    con = duckdb_kql.connect()
    cols = ", ".join(f'"{c.name}" {_SQL[c.type]}' for c in schema(TABLE).columns)
    con.sql(f'CREATE TABLE "{TABLE}" ({cols})')
    return con


def _load(con: Any, rows: list[dict[str, Any]]) -> None:
    con.execute(f'DELETE FROM "{TABLE}"')
    for i, r in enumerate(rows):
        extra_text = None if r["AdditionalFields"] is None else json.dumps(r["AdditionalFields"])
        con.execute(
            f'INSERT INTO "{TABLE}" ("ReportId", "InitiatingProcessId", "ActionType",'
            ' "InitiatingProcessFolderPath", "AdditionalFields") VALUES (?, ?, ?, ?, ?)',
            [i, i, r["ActionType"], r["InitiatingProcessFolderPath"], extra_text],
        )


def _forms(rows: list[dict[str, Any]], as_text: bool) -> list[dict[str, Any]]:
    """Our rows: AdditionalFields as the normalizer makes it (an object) or as JSON text."""
    out = []
    for i, r in enumerate(rows):
        row = dict(r, ReportId=i, InitiatingProcessId=i)
        if as_text and r["AdditionalFields"] is not None:
            row["AdditionalFields"] = json.dumps(r["AdditionalFields"])
        out.append(row)
    return out


def _ours(kql: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    clock = Clock()
    plan = QueryCompiler(parse(kql), clock).compile()
    clock.now = NOW
    return [got for r in rows if (got := plan.branches[0].run(dict(r))) is not None]


def _oracle(con: Any, kql: str) -> list[dict[str, Any]]:
    result = duckdb_kql.kql(con, kql, query_now=NOW)
    names = [d[0] for d in result.description]
    return [dict(zip(names, row, strict=True)) for row in result.fetchall()]


NUMERIC = [
    "BackgroundCallCount",
    "MsSinceLastKeyEvent",
    "EventCount",
    "ReturnValue",
    "UsagePage",
    "Usage",
    "cVisWindows",
]
TEXT = ["HookType", "pstrLib"]


@st.composite
def predicate(draw: st.DrawFn) -> str:
    kind = draw(st.integers(0, 6))
    if kind == 0:
        fn = draw(st.sampled_from(["toint", "tolong"]))
        op = draw(st.sampled_from(["==", "!=", "<", ">=", ">"]))
        return f"{fn}(AdditionalFields.{draw(st.sampled_from(NUMERIC))}) {op} {draw(st.integers(0, 12_000))}"
    if kind == 1:
        key = draw(st.sampled_from(NUMERIC))
        return f"toint(parse_json(AdditionalFields).{key}) >= {draw(st.integers(0, 12_000))}"
    if kind == 2:
        op = draw(st.sampled_from(["==", "=~", "!=", "has", "contains", "startswith"]))
        needle = draw(st.sampled_from([*HOOKS, "wh_keyboard", "Users", r"C:\Program Files", ""]))
        return f'tostring(AdditionalFields.{draw(st.sampled_from(TEXT))}) {op} @"{needle}"'
    if kind == 3:
        return f'set_has_element(AdditionalFields.FlagNames, "{draw(st.sampled_from(FLAGS))}")'
    if kind == 4:
        return f"array_length(AdditionalFields.FlagNames) >= {draw(st.integers(0, 3))}"
    if kind == 5:
        return f'AdditionalFields has "{draw(st.sampled_from([*HOOKS, *FLAGS, "alice"]))}"'
    return f"isnotempty(tostring(AdditionalFields.{draw(st.sampled_from(TEXT))}))"


SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@SETTINGS
@given(rows=rows_strategy, pred=predicate(), as_text=st.booleans())
def test_where_on_additional_fields_matches_the_oracle(
    oracle: Any, rows: list[dict[str, Any]], pred: str, as_text: bool
) -> None:
    kql = f"{TABLE} | where {pred} | project ReportId"
    _load(oracle, rows)
    expected = sorted(r["ReportId"] for r in _oracle(oracle, kql))
    assert sorted(r["ReportId"] for r in _ours(kql, _forms(rows, as_text))) == expected, kql


EXTENDS = [
    "toint(AdditionalFields.BackgroundCallCount)",
    "tolong(parse_json(AdditionalFields).MsSinceLastKeyEvent)",
    "tostring(AdditionalFields.HookType)",
    "tostring(AdditionalFields.BackgroundCallCount)",
    'strcat(tostring(AdditionalFields.HookType), ":", tostring(AdditionalFields.pstrLib))',
    "array_length(AdditionalFields.FlagNames)",
    'iff(toint(AdditionalFields.cVisWindows) == 0, "hidden", "visible")',
]


@SETTINGS
@given(rows=rows_strategy, expr=st.sampled_from(EXTENDS), as_text=st.booleans())
def test_extend_values_on_additional_fields_match_the_oracle(
    oracle: Any, rows: list[dict[str, Any]], expr: str, as_text: bool
) -> None:
    kql = f"{TABLE} | extend v = {expr} | project ReportId, v"
    _load(oracle, rows)
    expected = {r["ReportId"]: r["v"] for r in _oracle(oracle, kql)}
    assert {r["ReportId"]: r["v"] for r in _ours(kql, _forms(rows, as_text))} == expected, kql


@settings(SETTINGS, max_examples=15)
@given(rows=rows_strategy, as_text=st.booleans())
def test_builtin_device_events_rules_match_the_oracle(
    oracle: Any, rows: list[dict[str, Any]], as_text: bool
) -> None:
    rules, _ = RuleSet.load([], builtin=True)
    _load(oracle, rows)
    for rule in rules.rules:
        if rule.id[-4:] not in BUILTIN:
            continue
        expected = sorted(r["InitiatingProcessId"] for r in _oracle(oracle, rule.query))
        got = sorted(
            m.row["InitiatingProcessId"]
            for r in _forms(rows, as_text)
            for m in rules.evaluate(TABLE, r, NOW)
            if m.rule.id == rule.id
        )
        assert got == expected, BUILTIN[rule.id[-4:]]
