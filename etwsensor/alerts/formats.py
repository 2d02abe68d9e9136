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
        from etwsensor.alerts.ecs import heartbeat_to_ecs, to_ecs

        return _by_record(to_ecs, heartbeat_to_ecs)
    if name == "ocsf":
        from etwsensor.alerts.ocsf import heartbeat_to_ocsf, to_ocsf

        return _by_record(to_ocsf, heartbeat_to_ocsf)
    raise ValueError(f"unknown alert format {name!r} (expected one of: {', '.join(ALERT_FORMATS)})")


def _by_record(alert: Formatter, heartbeat: Formatter) -> Formatter:
    def convert(doc: dict[str, Any]) -> dict[str, Any]:
        return heartbeat(doc) if doc.get("record") == "heartbeat" else alert(doc)

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
    """Severity, host name, rule id and detection time of an alert document in any of the formats
    (a heartbeat, in any format, is informational with the rule id "heartbeat")."""
    if doc.get("record") == "heartbeat" or _get(doc, "event", "dataset") == "etwsensor.heartbeat" or (
        _get(doc, "metadata", "log_name") == "etwsensor.heartbeat"
    ):
        host = _get(doc, "host", "name") or _get(doc, "unmapped", "etwsensor", "host", "name")
        return Envelope("informational", str(host or ""), "heartbeat", None)
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
