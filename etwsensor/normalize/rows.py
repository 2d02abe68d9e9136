"""Where the trackers put their rows: stamps the common columns, numbers rows, counts them."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from datetime import datetime
from typing import Any, Protocol

from etwsensor.events import RawEvent

Row = dict[str, Any]
# (provider or classic class, event name) → the method that consumes it
Handlers = dict[tuple[str, str], Callable[[RawEvent], None]]


class RowGate(Protocol):
    """What the rules say about one table before a row is built (``etwsensor.rules.RowGate``)."""

    columns: frozenset[str]

    def might_match(self, own: dict[str, Any], base: dict[str, Any] | None = None) -> bool: ...


def usable_gate(gates: Mapping[str, RowGate] | None, table: str, cheap: Collection[str]) -> RowGate | None:
    """The gate of ``table`` when it asks only for columns a tracker has before building a row."""
    gate = (gates or {}).get(table)
    return gate if gate is not None and gate.columns <= set(cheap) else None


def path_unresolved(path: str) -> bool:
    """True when a path is empty, a bare name, or still an NT path (``\\Device\\…``)."""
    return "\\" not in path or (path[0] == "\\" and not path.startswith("\\\\"))


class RowSink:
    """Collects ``(table, row)`` pairs for one ``Normalizer.process`` call.

    ReportId increases per row for the life of the normalizer (Defender: unique together with
    DeviceName and Timestamp).
    """

    __slots__ = ("counts", "device_id", "device_name", "out", "report_id", "skipped", "unresolved")

    def __init__(self, device_id: str, device_name: str) -> None:
        self.device_id = device_id
        self.device_name = device_name
        self.out: list[tuple[str, Row]] = []
        self.report_id = 0
        self.counts: dict[str, dict[str, int]] = {}
        self.unresolved: dict[str, int] = {}
        self.skipped: dict[str, int] = {}  # rows counted but not built: no rule could match them

    def emit(self, table: str, action: str, ts: datetime, row: Row, unresolved: bool) -> None:
        self.report_id += 1
        row["Timestamp"] = ts
        row["DeviceId"] = self.device_id
        row["DeviceName"] = self.device_name
        row["ActionType"] = action
        row["ReportId"] = self.report_id
        self.out.append((table, row))
        self._count(table, action, unresolved)

    def skip(self, table: str, action: str, unresolved: bool) -> None:
        """A row no rule can match (its table's gate said so): counted and numbered as if emitted,
        so summaries and ReportIds do not depend on which rules are loaded, but never built."""
        self.report_id += 1
        skipped = self.skipped
        skipped[table] = skipped.get(table, 0) + 1
        per_table = self.counts.get(table)
        if per_table is None:
            per_table = self.counts[table] = {}
        per_table[action] = per_table.get(action, 0) + 1
        if unresolved:
            self.unresolved[table] = self.unresolved.get(table, 0) + 1

    def _count(self, table: str, action: str, unresolved: bool) -> None:
        per_table = self.counts.get(table)
        if per_table is None:
            per_table = self.counts[table] = {}
        per_table[action] = per_table.get(action, 0) + 1
        if unresolved:
            self.unresolved[table] = self.unresolved.get(table, 0) + 1
