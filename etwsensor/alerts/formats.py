"""Alert formats a sink can speak: etwsensor's own schema, ECS and OCSF.

A format is a function from the alert dict (docs/alert-schema.json) to the document a sink sends.
``envelope`` reads back, from a document of any of the three formats, the few facts transports put in
their own headers (syslog's severity, host and MSGID), so a transport never needs to know the format.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, get_args

AlertFormat = Literal["etwsensor", "ecs", "ocsf"]
ALERT_FORMATS: Final[tuple[str, ...]] = get_args(AlertFormat)
Formatter = Callable[[dict[str, Any]], dict[str, Any]]

_OCSF_SEVERITY: Final = {1: "informational", 2: "low", 3: "medium", 4: "high", 5: "critical"}
_ECS_SEVERITY: Final = ((99, "critical"), (73, "high"), (47, "medium"), (21, "low"))


def formatter(name: str) -> Formatter | None:
    """The function that turns an alert (or a heartbeat record) into a ``name`` document; None for
    etwsensor's own format. Raises ValueError naming the known formats."""
    if name == "etwsensor":
        return None
    if name == "ecs":
        from etwsensor.alerts.ecs import record_to_ecs, to_ecs

        return _by_record(to_ecs, record_to_ecs)
    if name == "ocsf":
        from etwsensor.alerts.ocsf import record_to_ocsf, to_ocsf

        return _by_record(to_ocsf, record_to_ocsf)
    raise ValueError(f"unknown alert format {name!r} (expected one of: {', '.join(ALERT_FORMATS)})")


def _by_record(alert: Formatter, record: Formatter) -> Formatter:
    def convert(doc: dict[str, Any]) -> dict[str, Any]:
        return record(doc) if "record" in doc else alert(doc)

    return convert


@dataclass(frozen=True, slots=True)
class Envelope:
    severity: str
    host: str
    rule_id: str
    detected_at: str | None


def _get(doc: Mapping[str, Any], *path: str) -> Any:
    node: Any = doc
    for key in path:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node


def envelope(doc: Mapping[str, Any]) -> Envelope:
    """Severity, host name, rule id and detection time of an alert document in any of the formats.
    A health record (heartbeat, reload), in any format, has its kind as rule id: informational, or
    medium for a refused reload."""
    record = _health_record(doc)
    if record is not None:
        severity = "medium" if record.get("status") == "refused" else "informational"
        return Envelope(severity, str(_get(record, "host", "name") or ""), str(record.get("record")), None)
    if "class_uid" in doc:  # OCSF
        return Envelope(
            _OCSF_SEVERITY.get(doc.get("severity_id") or 0, ""),
            str(_get(doc, "device", "hostname") or ""),
            str(_get(doc, "finding_info", "analytic", "uid") or ""),
            None,
        )
    if "ecs" in doc:  # ECS
        score = _get(doc, "event", "severity")
        ranked = (name for floor, name in _ECS_SEVERITY if isinstance(score, int) and score >= floor)
        severity = next(ranked, "")
        return Envelope(
            severity,
            str(_get(doc, "host", "name") or ""),
            str(_get(doc, "rule", "id") or ""),
            _get(doc, "event", "created"),
        )
    return Envelope(
        str(_get(doc, "rule", "severity") or ""),
        str(_get(doc, "host", "name") or ""),
        str(_get(doc, "rule", "id") or ""),
        doc.get("detected_at"),
    )


def _health_record(doc: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The etwsensor health record inside a document of any format, or None for an alert."""
    if "record" in doc:
        return doc
    for path in (("etwsensor", "record"), ("unmapped", "etwsensor")):
        inner = _get(doc, *path)
        if isinstance(inner, Mapping) and "record" in inner:
            return inner
    return None
