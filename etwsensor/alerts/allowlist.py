"""Allowlists: per-rule entries (column, operator, value) that silence known-good matches before alerting.

Entries are checked against the source row (every column of the event), then the projected row.
Comparisons are case-insensitive like KQL's =~ / contains / startswith / endswith; `matches` is RE2.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, Literal

import re2
from pydantic import BaseModel, ConfigDict, Field, model_validator

_QUIET = re2.Options()
_QUIET.log_errors = False  # reported once, as the entry's error, not by absl on stderr

Operator = Literal["equals", "contains", "startswith", "endswith", "matches"]


class AllowEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rule: str = Field(description='rule id, or "*" for every rule')
    column: str
    operator: Operator = "equals"
    value: str
    comment: str = ""

    @model_validator(mode="after")
    def _valid_regex(self) -> AllowEntry:
        if self.operator == "matches":
            try:
                re2.compile(self.value, _QUIET)
            except re2.error as exc:
                reason = exc.args[0].decode("utf-8", "replace") if isinstance(exc.args[0], bytes) else exc
                raise ValueError(f"invalid RE2 pattern {self.value!r}: {reason}") from exc
        return self

    def test(self) -> Callable[[str], bool]:
        v = self.value.lower()
        if self.operator == "equals":
            return lambda s: s.lower() == v
        if self.operator == "contains":
            return lambda s: v in s.lower()
        if self.operator == "startswith":
            return lambda s: s.lower().startswith(v)
        if self.operator == "endswith":
            return lambda s: s.lower().endswith(v)
        pattern = re2.compile(self.value, _QUIET)
        return lambda s: pattern.search(s) is not None


def unknown_columns(entries: Iterable[AllowEntry], extra_columns: Iterable[str] = ()) -> list[str]:
    """One message per entry whose column is in no Defender table and in no rule's output
    (``extra_columns``): such an entry can never match, which is almost always a typo."""
    from etwsensor.tables import schemas

    known = {c for s in schemas().values() for c in s.column_names} | set(extra_columns)
    return [
        f"allowlist entry {n} (rule {e.rule!r}): no column {e.column!r} in any table or rule output"
        for n, e in enumerate(entries, start=1)
        if e.column not in known
    ]


class Allowlist:
    def __init__(self, entries: Iterable[AllowEntry] = ()) -> None:
        self.entries = list(entries)
        self._by_rule: dict[str, list[tuple[AllowEntry, Callable[[str], bool]]]] = {}
        for e in self.entries:
            self._by_rule.setdefault(e.rule, []).append((e, e.test()))
        self.silenced = Counter[str]()  # rule id -> matches silenced

    def allows(self, rule_id: str, source_row: dict[str, Any], projected: dict[str, Any]) -> bool:
        """True when an entry for this rule (or "*") matches: the alert is not raised."""
        for entry, test in (*self._by_rule.get(rule_id, ()), *self._by_rule.get("*", ())):
            value = source_row.get(entry.column, projected.get(entry.column))
            if value is not None and test(str(value)):
                self.silenced[rule_id] += 1
                return True
        return False
