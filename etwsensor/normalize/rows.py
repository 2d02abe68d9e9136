"""Where the trackers put their rows: stamps the common columns, numbers rows, counts them."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from etwsensor.events import RawEvent

Row = dict[str, Any]
# (provider or classic class, event name) → the method that consumes it
Handlers = dict[tuple[str, str], Callable[[RawEvent], None]]


def path_unresolved(path: str) -> bool:
    """True when a path is empty, a bare name, or still an NT path (``\\Device\\…``)."""
    return "\\" not in path or (path[0] == "\\" and not path.startswith("\\\\"))


class RowSink:
    """Collects ``(table, row)`` pairs for one ``Normalizer.process`` call.

    ReportId increases per row for the life of the normalizer (Defender: unique together with
    DeviceName and Timestamp).
    """

    __slots__ = ("counts", "device_id", "device_name", "out", "report_id", "unresolved")

    def __init__(self, device_id: str, device_name: str) -> None:
        self.device_id = device_id
        self.device_name = device_name
        self.out: list[tuple[str, Row]] = []
        self.report_id = 0
        self.counts: dict[str, dict[str, int]] = {}
        self.unresolved: dict[str, int] = {}

    def emit(self, table: str, action: str, ts: datetime, row: Row, unresolved: bool) -> None:
        self.report_id += 1
        row["Timestamp"] = ts
        row["DeviceId"] = self.device_id
        row["DeviceName"] = self.device_name
        row["ActionType"] = action
        row["ReportId"] = self.report_id
        self.out.append((table, row))
        per_table = self.counts.get(table)
        if per_table is None:
            per_table = self.counts[table] = {}
        per_table[action] = per_table.get(action, 0) + 1
        if unresolved:
            self.unresolved[table] = self.unresolved.get(table, 0) + 1
