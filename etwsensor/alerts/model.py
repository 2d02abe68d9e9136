"""The alert: one JSON object per rule match, documented and versioned (docs/alert-schema.json).

The pipeline builds alerts as plain JSON-ready dicts (``build_alert``) because they go straight to the
sinks; the pydantic model is the published contract, and the tests hold the dicts to it.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from etwsensor import __version__

SCHEMA_VERSION: Final = "1.0"
Severity = Literal["informational", "low", "medium", "high"]
ID_COLUMNS: Final = ("ReportId", "ProcessId", "InitiatingProcessId", "InitiatingProcessParentId")


class AlertHost(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="DeviceName of the row that matched")
    device_id: str = Field(description="DeviceId of the row that matched")


class AlertRule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    name: str
    version: str
    severity: Severity
    confidence: str
    tactics: list[str]
    techniques: list[str]
    references: list[str]
    false_positives: list[str] = Field(default_factory=list, description="known benign causes")
    status: str = Field("", description="the rule's maturity as its file states it (Sigma's status)")
    source: str = Field("", description="the rule's file, or builtin:<file>")


class AlertSensor(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: str = Field(description="etwsensor version")
    source: str = Field(description="the replayed file, or live:<session name>")


class Alert(BaseModel):
    """One rule match."""

    model_config = ConfigDict(extra="forbid", title="etwsensor alert")

    schema_version: Literal["1.0"] = SCHEMA_VERSION
    alert_id: str = Field(
        description="Stable: sha256 of rule id, DeviceId, table, ReportId and Timestamp of the source row "
        "(first 32 hex digits). The same event replayed gives the same id; duplicates after a spool "
        "redelivery are recognised by it."
    )
    time: datetime = Field(description="Timestamp of the source row (the event's time), UTC")
    detected_at: datetime = Field(description="When etwsensor raised the alert (wall clock), UTC")
    host: AlertHost
    rule: AlertRule
    reason: str | None = Field(description="The query's Reason column, when it projects one")
    table: str = Field(description="Defender table of the source row")
    row: dict[str, Any] = Field(description="The columns the query projects, with Defender names")
    ids: dict[str, int | None] = Field(
        default_factory=dict,
        description="The source row's ReportId, ProcessId, InitiatingProcessId and "
        "InitiatingProcessParentId, whatever the query projects: what ECS/OCSF formats and a join back "
        "to the row need",
    )
    sensor: AlertSensor
    suppressed_count: int = Field(
        0,
        ge=0,
        description="Alerts of the same rule, reason and key columns suppressed since the last one sent",
    )
    report_ids: list[int] | None = Field(
        None,
        description="Stateful rules (summarize/join): ReportIds of the rows behind the result (at most 20); "
        "the source row is the one that completed it",
    )


def alert_id(rule_id: str, device_id: str, table: str, report_id: Any, timestamp: Any) -> str:
    ts = json_value(timestamp)
    key = f"{rule_id}\x1f{device_id}\x1f{table}\x1f{report_id}\x1f{ts}"
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


def json_value(v: Any) -> Any:
    """Row values as JSON: datetimes ISO-8601 UTC with Z, everything else as is."""
    if isinstance(v, datetime):
        if v.tzinfo is not UTC:  # rows hold UTC already: converting is for the others (and naive ones)
            v = v.astimezone(UTC)
        return v.isoformat(timespec="microseconds").replace("+00:00", "Z")
    return v


def build_alert(
    rule: Any,
    table: str,
    source_row: dict[str, Any],
    projected: dict[str, Any],
    sensor_source: str,
    suppressed_count: int = 0,
    report_ids: tuple[int, ...] = (),
) -> dict[str, Any]:
    """The alert of one match, as the JSON-ready dict the sinks send."""
    device_id = source_row.get("DeviceId") or ""
    ts = source_row.get("Timestamp")
    reason = projected.get("Reason")
    alert: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "alert_id": alert_id(rule.id, device_id, table, source_row.get("ReportId"), ts),
        "time": json_value(ts),
        "detected_at": json_value(datetime.now(UTC)),
        "host": {"name": source_row.get("DeviceName") or "", "device_id": device_id},
        "rule": {
            "id": rule.id,
            "name": rule.name,
            "version": rule.version,
            "severity": rule.severity,
            "confidence": rule.confidence,
            "tactics": list(rule.tactics),
            "techniques": list(rule.techniques),
            "references": list(rule.references),
            "false_positives": list(rule.false_positives),
            "status": rule.status,
            "source": rule.source,
        },
        "reason": reason if isinstance(reason, str) else None,
        "table": table,
        "row": {k: json_value(v) for k, v in projected.items()},
        "ids": {c: source_row.get(c) for c in ID_COLUMNS if c in source_row},
        "sensor": {"version": __version__, "source": sensor_source},
        "suppressed_count": suppressed_count,
    }
    if report_ids:
        alert["report_ids"] = list(report_ids)
    return alert
