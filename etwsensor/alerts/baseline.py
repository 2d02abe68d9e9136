"""`etwsensor baseline`: the allowlist entries that would silence every alert of a clean recording.

The entries are a proposal for a human to review, one per (rule, initiating process) seen, most
specific column first, with how often it fired in the comment.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

# Most specific first: silencing the process that did it, not the whole rule.
PREFERRED_COLUMNS = (
    "InitiatingProcessFolderPath",
    "InitiatingProcessFileName",
    "FolderPath",
    "RegistryKey",
    "FileName",
)


class EntryCollector:
    """A sink that turns alerts into allowlist entries instead of sending them."""

    name = "baseline"

    def __init__(self) -> None:
        self._seen: Counter[tuple[str, str, str, str]] = Counter()

    def send(self, alert: dict[str, Any]) -> None:
        row = alert["row"]
        for column in PREFERRED_COLUMNS:
            value = row.get(column)
            if isinstance(value, str) and value:
                self._seen[(alert["rule"]["id"], alert["rule"]["name"], column, value)] += 1
                return

    def entries(self) -> list[tuple[str, str, str, str, int]]:
        return [(*k, n) for k, n in sorted(self._seen.items())]


def collect_entries() -> EntryCollector:
    return EntryCollector()


def _toml_str(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)  # a JSON string is a valid TOML basic string


def allowlist_toml(entries: list[tuple[str, str, str, str, int]], inputs: list[str]) -> str:
    lines = [
        "# Allowlist proposed by `etwsensor baseline` from: " + ", ".join(inputs),
        "# Review every entry before use: each silences a rule for one process or path.",
        "# Use it as the [[allowlist]] section of the etwsensor configuration file.",
        "",
    ]
    for rule_id, rule_name, column, value, count in entries:
        lines += [
            "[[allowlist]]",
            f"rule = {_toml_str(rule_id)}",
            f"column = {_toml_str(column)}",
            'operator = "equals"',
            f"value = {_toml_str(value)}",
            f"comment = {_toml_str(f'{rule_name}: {count} alert(s) in the baseline')}",
            "",
        ]
    return "\n".join(lines)
