"""Helpers: compile a query against the Defender schema and run rows through it."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from etwsensor.rules.frontend import parse
from etwsensor.rules.plan import Clock
from etwsensor.rules.query import QueryCompiler

DATA = Path(__file__).resolve().parent.parent / "data" / "kql"


def run_query(
    kql: str, rows: list[tuple[str, dict[str, Any]]], now: datetime | None = None
) -> list[dict[str, Any]]:
    """All output rows of ``kql`` over ``rows`` (table, row), in input order."""
    clock = Clock()
    plan = QueryCompiler(parse(kql), clock).compile()
    clock.now = now
    out: list[dict[str, Any]] = []
    for table, row in rows:
        for branch in plan.branches:
            if branch.table == table:
                result = branch.run(row)
                if result is not None:
                    out.append(result)
    return out


def scalar(expr: str, row: dict[str, Any] | None = None, now: datetime | None = None) -> Any:
    """The value of one KQL expression over one DeviceProcessEvents row."""
    out = run_query(f"DeviceProcessEvents | project r = {expr}", [("DeviceProcessEvents", row or {})], now)
    assert len(out) == 1
    return out[0]["r"]
