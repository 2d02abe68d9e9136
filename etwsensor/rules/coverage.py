"""Which loaded rules can fire on a given input: ``etwsensor rules coverage``.

An input (ETW, Sysmon EVTX, Defender row files) never fills some Defender columns and produces only
some ActionTypes (``etwsensor/data/column_sources.yaml``). For each rule:

* ``cannot fire``: every branch has a ``where`` condition that is false whenever those columns are
  empty (strings ``""``, others null) and ActionType is one the input produces — e.g.
  ``ProcessVersionInfoOriginalFileName =~ "psexec.exe"`` on ETW rows; or the rule reads a table the
  input does not produce (a rule that failed to load for that reason);
* ``degraded``: it reads such a column but a condition on it can still hold (a negation, one side
  of an ``or``): it fires, but not on everything it was written for;
* ``ok``: it reads only columns the input fills.

The analysis is conservative: only the ``where`` clauses read straight off a table (before any
``extend``/``project``) are judged, and anything it does not understand counts as satisfiable, so
"cannot fire" is always true and some rules that cannot fire are reported as degraded.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import re2
import yaml

from etwsensor.rules.errors import RuleFailure
from etwsensor.rules.kqlir import ir
from etwsensor.rules.ruleset import Rule, lower_cached
from etwsensor.tables import TABLE_NAMES, schema

OK, DEGRADED, CANNOT = "ok", "degraded", "cannot fire"
_UNKNOWN_TABLE = re.compile(r"unknown table '([^']+)'")


@dataclass(frozen=True, slots=True)
class InputProfile:
    """What one input fills: per table, the columns never filled and the ActionTypes produced."""

    name: str
    description: str
    never_filled: dict[str, frozenset[str]]
    action_types: dict[str, frozenset[str] | None]  # lower-cased; None: any

    def produces(self, table: str) -> bool:
        return table in self.never_filled


@cache
def profiles() -> dict[str, InputProfile]:
    text = resources.files("etwsensor").joinpath("data/column_sources.yaml").read_text("utf-8")
    raw = yaml.safe_load(text)
    out: dict[str, InputProfile] = {}
    for name, entry in raw.items():
        never: dict[str, frozenset[str]] = {}
        actions: dict[str, frozenset[str] | None] = {}
        for table, spec in (entry.get("tables") or {}).items():
            never[table] = frozenset(spec.get("never_filled") or ())
            listed = spec.get("action_types")
            actions[table] = None if listed in (None, "all") else frozenset(str(a).lower() for a in listed)
        out[name] = InputProfile(name, str(entry.get("description") or ""), never, actions)
    return out


@dataclass(slots=True)
class RuleCoverage:
    """The verdict on one rule (or one rule file that did not load)."""

    id: str
    name: str
    source: str
    category: str
    verdict: str
    tables: list[str]
    missing_columns: list[str] = field(default_factory=list)  # read by the rule, never filled
    killing_columns: list[str] = field(default_factory=list)  # whose emptiness makes it unable to fire
    action_types: list[str] = field(default_factory=list)  # ActionTypes it tests for
    missing_action_types: list[str] = field(default_factory=list)
    missing_tables: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "source": self.source,
            "category": self.category,
            "verdict": self.verdict,
            "tables": self.tables,
            "missing_columns": self.missing_columns,
            "killing_columns": self.killing_columns,
            "action_types": self.action_types,
            "missing_action_types": self.missing_action_types,
            "missing_tables": self.missing_tables,
        }


# --- the where-clause judge --------------------------------------------------------------------

_POSITIVE_STRING_OPS = {
    "==",
    "=~",
    "contains",
    "contains_cs",
    "startswith",
    "startswith_cs",
    "endswith",
    "endswith_cs",
    "has",
    "has_cs",
    "hasprefix",
    "hasprefix_cs",
    "hassuffix",
    "hassuffix_cs",
    "matches regex",
}
_ORDERING = {"<", "<=", ">", ">=", "=="}


def _literal_text(node: ir.Expr) -> str | None:
    if isinstance(node, ir.Literal) and isinstance(node.value, str):
        return node.value
    return None


def _empty_satisfies(op: str, needle: str) -> bool:
    """Whether ``"" <op> needle`` is true (Kusto semantics)."""
    if op == "matches regex":
        try:
            return re2.search(needle, "") is not None
        except Exception:
            return True
    if op.startswith("has"):
        return not any(ch.isalnum() for ch in needle)
    return needle == ""


def _action_satisfies(op: str, needle: str, produced: frozenset[str]) -> bool:
    n = needle.lower()
    if op in ("==", "=~"):
        return n in produced
    if op.startswith("contains") or op.startswith("has"):
        return any(n in a for a in produced)
    if op.startswith("startswith"):
        return any(a.startswith(n) for a in produced)
    if op.startswith("endswith"):
        return any(a.endswith(n) for a in produced)
    return True


class _Judge:
    """``possible(expr)`` is False only when ``expr`` is false on every row of the input."""

    def __init__(self, table: str, profile: InputProfile) -> None:
        self.never = profile.never_filled.get(table, frozenset())
        self.actions = profile.action_types.get(table)
        self.table = schema(table)
        self.killers: set[str] = set()
        self.action_tests: set[str] = set()
        self.action_killed: set[str] = set()

    def _column(self, node: ir.Expr) -> str | None:
        return node.name if isinstance(node, ir.ColumnRef) else None

    def possible(self, node: ir.Expr) -> bool:
        if isinstance(node, ir.BinaryOp):
            if node.op == "and":
                return self.possible(node.left) and self.possible(node.right)
            if node.op == "or":
                # evaluate both sides: the columns that kill each side are all reported
                left, right = self.possible(node.left), self.possible(node.right)
                return left or right
            column = self._column(node.left)
            if column is None:
                return True
            needle = _literal_text(node.right)
            if column == "ActionType" and needle is not None and node.op in _POSITIVE_STRING_OPS:
                self.action_tests.add(needle)
                if self.actions is not None and not _action_satisfies(node.op, needle, self.actions):
                    self.action_killed.add(needle)
                    return False
                return True
            if column not in self.never:
                return True
            kind = self.table.type_of(column)
            if kind == "string":
                positive = needle is not None and node.op in _POSITIVE_STRING_OPS
                if positive and needle is not None and not _empty_satisfies(node.op, needle):
                    self.killers.add(column)
                    return False
                return True
            if node.op in _ORDERING:  # null compared: null, and where drops the row
                self.killers.add(column)
                return False
            return True
        if isinstance(node, ir.InList) and not node.negated and node.subquery is None:
            column = self._column(node.value)
            items = [_literal_text(i) for i in node.items]
            if column is None or any(i is None for i in items):
                return True
            texts = [i or "" for i in items]
            if column == "ActionType":
                self.action_tests.update(texts)
                if self.actions is not None and not any(t.lower() in self.actions for t in texts):
                    self.action_killed.update(texts)
                    return False
                return True
            if column in self.never and "" not in texts and self.table.type_of(column) == "string":
                self.killers.add(column)
                return False
            return True
        if isinstance(node, ir.HasList) and node.subquery is None:
            column = self._column(node.value)
            if column in self.never and node.items:
                needles = [_literal_text(i) for i in node.items]
                if all(t is not None and any(ch.isalnum() for ch in t) for t in needles):
                    self.killers.add(column)
                    return False
            return True
        if isinstance(node, ir.FunctionCall) and node.name in ("isnotempty", "isnotnull") and node.args:
            column = self._column(node.args[0])
            if column in self.never and (node.name == "isnotempty" or self.table.type_of(column) != "string"):
                self.killers.add(column)
                return False
        return True


def _legs(query: ir.Query) -> list[tuple[str | None, list[ir.Expr]]]:
    """(table, where predicates read straight off it) for each leg; table None: not judged."""
    if not isinstance(query.source, ir.TableRef) or query.lets:
        return [(None, [])]
    legs: list[tuple[str | None, list[ir.Expr]]] = [(query.source.name, [])]
    for op in query.operators:
        if isinstance(op, ir.Where):
            for _table, preds in legs:
                preds.append(op.predicate)
        elif isinstance(op, ir.Union):
            for branch in op.branches:
                legs.extend(_legs(branch) if isinstance(branch, ir.Query) else [(None, [])])
        else:
            break
    return legs


def judge_rule(rule: Rule, profile: InputProfile) -> RuleCoverage:
    assert rule.plan is not None
    read = {(t, c) for t in rule.tables for c in rule.plan.columns_read.get(t, ())}
    missing = sorted({c for t, c in read if c in profile.never_filled.get(t, ())})
    cov = RuleCoverage(
        rule.id,
        rule.name,
        rule.source,
        rule.category or "+".join(rule.tables),
        OK,
        list(rule.tables),
        missing_columns=missing,
    )
    try:
        legs = _legs(lower_cached(rule.query))
    except Exception:  # compiled before, so this only fails on a broken cache: judge nothing
        legs = [(None, [])]
    live = False
    killers: set[str] = set()
    tests: set[str] = set()
    killed: set[str] = set()
    for table, preds in legs:
        if table is None or table not in TABLE_NAMES:
            live = True
            continue
        if not profile.produces(table):
            cov.missing_tables.append(table)
            continue
        judge = _Judge(table, profile)
        alive = all([judge.possible(p) for p in preds])  # judge every clause: all killers are named
        tests |= judge.action_tests
        if alive:
            live = True
        else:
            killers |= judge.killers
            killed |= judge.action_killed
    cov.action_types = sorted(tests)
    if not live:
        cov.verdict = CANNOT
        cov.killing_columns = sorted(killers)
        cov.missing_action_types = sorted(killed)
    elif missing:
        cov.verdict = DEGRADED
    return cov


def judge_failure(failure: RuleFailure, profile: InputProfile) -> RuleCoverage | None:
    """A rule file that did not load because it reads a table the input does not produce."""
    m = _UNKNOWN_TABLE.search(failure.message)
    if m is None:
        return None
    table = m.group(1)
    return RuleCoverage(
        failure.file, failure.file, failure.file, table, CANNOT, [table], missing_tables=[table]
    )


@dataclass(slots=True)
class CoverageReport:
    source: str
    rules: list[RuleCoverage]
    not_loaded: list[RuleFailure]

    def summary(self) -> dict[str, Any]:
        verdicts = Counter(r.verdict for r in self.rules)
        per_category: dict[str, Counter[str]] = {}
        for r in self.rules:
            per_category.setdefault(r.category, Counter())[r.verdict] += 1
        killing = Counter(c for r in self.rules for c in r.killing_columns)
        degrading = Counter(c for r in self.rules if r.verdict == DEGRADED for c in r.missing_columns)
        tables = Counter(t for r in self.rules for t in r.missing_tables)
        actions = Counter(a for r in self.rules for a in r.missing_action_types)
        columns = sorted(set(killing) | set(degrading), key=lambda c: (-killing[c], -degrading[c], c))
        return {
            "source": self.source,
            "rules": len(self.rules),
            "ok": verdicts[OK],
            "degraded": verdicts[DEGRADED],
            "cannot_fire": verdicts[CANNOT],
            "not_loaded": len(self.not_loaded),
            "per_category": {
                c: {"ok": v[OK], "degraded": v[DEGRADED], "cannot_fire": v[CANNOT]}
                for c, v in sorted(per_category.items())
            },
            # Filling the first columns here would raise coverage most.
            "per_missing_column": [
                {"column": c, "cannot_fire": killing[c], "degraded": degrading[c]} for c in columns
            ],
            "per_missing_table": [{"table": t, "cannot_fire": n} for t, n in tables.most_common()],
            "per_missing_action_type": [
                {"action_type": a, "cannot_fire": n} for a, n in actions.most_common()
            ],
        }


def coverage(rules: list[Rule], failures: list[RuleFailure], profile: InputProfile) -> CoverageReport:
    judged = [judge_rule(r, profile) for r in rules]
    not_loaded: list[RuleFailure] = []
    for f in failures:
        cov = judge_failure(f, profile)
        if cov is None:
            not_loaded.append(f)
        else:
            judged.append(cov)
    return CoverageReport(profile.name, judged, not_loaded)
