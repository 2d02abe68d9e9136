"""Differential: every built-in rule gives the same rows streaming (one row at a time, the rule engine) as
``hunt`` gives running the rule's query over the same rows in DuckDB (duckdb-kql).

The rows are the demo trace's, each row built (no row gates), with the clock pinned to the newest row time
on both sides, so ago()/now() read the same instant.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from etwsensor.hunt.output import records
from etwsensor.hunt.query import run
from etwsensor.hunt.store import RowLoader, connect, newest_time
from etwsensor.pipeline import ReplaySummary, input_rows
from etwsensor.rules import RuleSet
from etwsensor.rules.scalars import format_datetime

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo.jsonl.zst"


def _canonical(row: dict[str, Any]) -> str:
    """One comparable text per output row: datetimes as instants, numbers as numbers, JSON text parsed."""

    def norm(v: Any) -> Any:
        if isinstance(v, datetime):
            return format_datetime(v)
        if isinstance(v, timedelta):
            return v.total_seconds()
        if isinstance(v, bool) or v is None:
            return v
        if isinstance(v, int | float):
            return float(v)
        if isinstance(v, list | tuple):  # make_set/make_list: Kusto leaves the order undefined
            return sorted((norm(x) for x in v), key=lambda x: json.dumps(x, sort_keys=True, default=str))
        if isinstance(v, dict):
            return {k: norm(x) for k, x in v.items()}
        return v

    return json.dumps({k: norm(v) for k, v in row.items()}, sort_keys=True, default=str)


@pytest.fixture(scope="module")
def demo() -> tuple[list[tuple[str, dict[str, Any]]], Any, datetime]:
    rows = list(input_rows(DEMO, None, ReplaySummary()))
    con = connect()
    loader = RowLoader(con)
    for table, row in rows:
        loader.add(table, row)
    loader.flush()
    now = newest_time(con)
    assert now is not None
    return rows, con, now


def test_every_builtin_rule_streams_what_hunt_finds(
    demo: tuple[list[tuple[str, dict[str, Any]]], Any, datetime],
) -> None:
    rows, con, now = demo
    ruleset, failures = RuleSet.load([], builtin=True)
    assert not failures and ruleset.rules
    streamed: dict[str, Counter[str]] = {r.id: Counter() for r in ruleset.rules}
    for table, row in rows:
        for m in ruleset.evaluate(table, row, now):
            streamed[m.rule.id][_canonical(m.row)] += 1
    for m in ruleset.flush():  # stateful rules: the windows still open at the end
        streamed[m.rule.id][_canonical(m.row)] += 1
    assert not ruleset.errors
    matched_rules = 0
    for rule in ruleset.rules:
        result = run(con, rule.query, now)
        names = result.columns
        hunted = Counter(_canonical(dict(zip(names, r, strict=True))) for r in records(result))
        assert streamed[rule.id] == hunted, rule.name
        matched_rules += bool(hunted)
    assert matched_rules >= 3  # the demo's keylogger episode trips several rules: not vacuous
