"""An etwsensor alert as an OCSF Detection Finding (class_uid 2004, OCSF 1.5.0).

The finding says what was detected (``finding_info``: the rule as ``analytic``, MITRE ATT&CK as
``attacks``) and the evidence it rests on: one ``evidences`` entry holding the row's process (with its
parent), its file or loaded module, its registry key and value, and the user. The Defender row itself
travels in ``unmapped.etwsensor`` so a consumer loses nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from etwsensor import __version__
from etwsensor.alerts.model import SCHEMA_VERSION

OCSF_VERSION: Final = "1.5.0"
CLASS_UID: Final = 2004  # Detection Finding
ACTIVITY_CREATE: Final = 1

_SEVERITY_ID: Final = {"informational": 1, "low": 2, "medium": 3, "high": 4, "critical": 5}
_CONFIDENCE_ID: Final = {"low": 1, "medium": 2, "high": 3}
_HASH_ALGORITHMS: Final = (("MD5", 1, "MD5"), ("SHA1", 2, "SHA-1"), ("SHA256", 3, "SHA-256"))

# Sentinel's tactic names (what rules carry) → MITRE ATT&CK Enterprise tactic id and display name.
_TACTICS: Final = {
    "Reconnaissance": ("TA0043", "Reconnaissance"),
    "ResourceDevelopment": ("TA0042", "Resource Development"),
    "InitialAccess": ("TA0001", "Initial Access"),
    "Execution": ("TA0002", "Execution"),
    "Persistence": ("TA0003", "Persistence"),
    "PrivilegeEscalation": ("TA0004", "Privilege Escalation"),
    "DefenseEvasion": ("TA0005", "Defense Evasion"),
    "CredentialAccess": ("TA0006", "Credential Access"),
    "Discovery": ("TA0007", "Discovery"),
    "LateralMovement": ("TA0008", "Lateral Movement"),
    "Collection": ("TA0009", "Collection"),
    "CommandAndControl": ("TA0011", "Command and Control"),
    "Exfiltration": ("TA0010", "Exfiltration"),
    "Impact": ("TA0040", "Impact"),
}


def _ms(iso: Any) -> int | None:
    """OCSF timestamps are milliseconds since the epoch."""
    if not isinstance(iso, str) or not iso:
        return None
    try:
        return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        return None


def _clean(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if v not in (None, "", [], {})}


def _file(row: dict[str, Any], prefix: str = "") -> dict[str, Any] | None:
    """An OCSF file object from a row's FileName/FolderPath/hash columns (``prefix`` selects whose)."""
    name = row.get(f"{prefix}FileName")
    if not isinstance(name, str) or not name:
        return None
    hashes = [
        {"algorithm_id": aid, "algorithm": label, "value": row[f"{prefix}{col}"]}
        for col, aid, label in _HASH_ALGORITHMS
        if row.get(f"{prefix}{col}")
    ]
    size = row.get("FileSize") if not prefix else None
    return _clean({"name": name, "path": row.get(f"{prefix}FolderPath"), "type_id": 1, "type": "Regular File",
                   "hashes": hashes, "size": size if isinstance(size, int) else None})  # fmt: skip


def _process(row: dict[str, Any], col: str) -> dict[str, Any] | None:
    """The process behind the column prefix ``col`` ("" = the row's own, "InitiatingProcess" = the actor)."""
    own = col == ""
    pid = row.get("ProcessId" if own else f"{col}Id")
    proc = _clean({
        "pid": pid if isinstance(pid, int) else None,
        "cmd_line": row.get("ProcessCommandLine" if own else f"{col}CommandLine"),
        "name": row.get(f"{col}FileName"),
        "path": row.get(f"{col}FolderPath"),
        "file": _file(row, col),
        "created_time": _ms(row.get("ProcessCreationTime" if own else f"{col}CreationTime")),
        "integrity": row.get("ProcessIntegrityLevel" if own else f"{col}IntegrityLevel"),
    })  # fmt: skip
    return proc or None


def _user(row: dict[str, Any], prefix: str) -> dict[str, Any] | None:
    return _clean({
        "name": row.get(f"{prefix}AccountName"),
        "domain": row.get(f"{prefix}AccountDomain"),
        "uid": row.get(f"{prefix}AccountSid"),
    }) or None  # fmt: skip


def _evidence(table: str, row: dict[str, Any]) -> dict[str, Any]:
    if table == "DeviceProcessEvents":
        process, parent = _process(row, ""), _process(row, "InitiatingProcess")
        user = _user(row, "")
    else:
        process, parent = _process(row, "InitiatingProcess"), _process(row, "InitiatingProcessParent")
        user = _user(row, "InitiatingProcess") or _user(row, "")
    if process is not None and parent is not None:
        process["parent_process"] = parent
    if process is not None and user is not None:
        process["user"] = user
    evidence: dict[str, Any] = {"process": process, "user": user}
    if table in ("DeviceFileEvents", "DeviceImageLoadEvents"):
        evidence["file"] = _file(row)
    key = row.get("RegistryKey")
    if table == "DeviceRegistryEvents" and isinstance(key, str) and key:
        evidence["reg_key"] = {"path": key}
        value = row.get("RegistryValueName")
        if isinstance(value, str):
            data = row.get("RegistryValueData")
            evidence["reg_value"] = _clean({
                "path": f"{key}\\{value}" if value else key,
                "name": value or "(Default)",
                "is_default": value == "" or None,
                "data": {"value": str(data)} if data not in (None, "") else None,
                "type": row.get("RegistryValueType"),
            })  # fmt: skip
    return _clean(evidence)


def _attacks(rule: dict[str, Any]) -> list[dict[str, Any]]:
    tactics = [_TACTICS.get(t, (None, t)) for t in rule.get("tactics") or []]
    out: list[dict[str, Any]] = []
    for technique in rule.get("techniques") or []:
        parent, _, _sub = str(technique).partition(".")
        attack: dict[str, Any] = {"technique": {"uid": parent}, "version": "v15"}
        if _sub:
            attack["sub_technique"] = {"uid": technique}
        if tactics:
            uid, name = tactics[0]
            attack["tactic"] = _clean({"uid": uid, "name": name})
            attack["tactics"] = [_clean({"uid": u, "name": n}) for u, n in tactics]
        out.append(attack)
    return out


def to_ocsf(alert: dict[str, Any]) -> dict[str, Any]:
    """The OCSF Detection Finding of one alert."""
    rule: dict[str, Any] = alert.get("rule") or {}
    host: dict[str, Any] = alert.get("host") or {}
    projected: dict[str, Any] = alert.get("row") or {}
    row = {**{k: v for k, v in (alert.get("ids") or {}).items() if v is not None}, **projected}
    table = str(alert.get("table") or "")
    severity = str(rule.get("severity") or "")
    confidence = str(rule.get("confidence") or "")
    severity_id = _SEVERITY_ID.get(severity, 0)
    confidence_id = _CONFIDENCE_ID.get(confidence, 0)
    detected = _ms(alert.get("detected_at"))
    finding: dict[str, Any] = {
        "activity_id": ACTIVITY_CREATE,
        "activity_name": "Create",
        "category_uid": 2,
        "category_name": "Findings",
        "class_uid": CLASS_UID,
        "class_name": "Detection Finding",
        "type_uid": CLASS_UID * 100 + ACTIVITY_CREATE,
        "type_name": "Detection Finding: Create",
        "time": _ms(alert.get("time")) or detected or 0,
        "severity_id": severity_id,
        "severity": severity.capitalize() if severity_id else "Unknown",
        "confidence_id": confidence_id,
        "confidence": confidence.capitalize() if confidence_id else None,
        "status_id": 1,
        "status": "New",
        "is_alert": True,
        "message": alert.get("reason") or rule.get("name"),
        "count": 1 + int(alert.get("suppressed_count") or 0),
        "metadata": _clean({
            "version": OCSF_VERSION,
            "uid": alert.get("alert_id"),
            "log_name": table,
            "processed_time": detected,
            "product": {"name": "etwsensor", "vendor_name": "etwsensor",
                        "version": (alert.get("sensor") or {}).get("version") or __version__},
        }),
        "finding_info": _clean({
            "uid": alert.get("alert_id"),
            "title": rule.get("name"),
            "desc": alert.get("reason"),
            "created_time": detected,
            "data_sources": [table] if table else None,
            "analytic": _clean({"uid": rule.get("id"), "name": rule.get("name"), "type_id": 1, "type": "Rule",
                                "version": rule.get("version")}),
            "attacks": _attacks(rule),
        }),
        "device": _clean({
            "hostname": host.get("name") or row.get("DeviceName"),
            "uid": host.get("device_id") or row.get("DeviceId"),
            "type_id": 0,
            "type": "Unknown",
        }),
        "evidences": [_evidence(table, row)],
        "unmapped": {"etwsensor": {
            "schema_version": alert.get("schema_version", SCHEMA_VERSION),
            "table": table,
            "row": projected,
            "sensor": alert.get("sensor"),
            "references": list(rule.get("references") or []),
        }},
    }  # fmt: skip
    return {k: v for k, v in finding.items() if v is not None}


def record_to_ocsf(record: dict[str, Any]) -> dict[str, Any]:
    """A health record (heartbeat, reload) as an OCSF Base Event (class_uid 0, activity Other); the
    record itself in ``unmapped.etwsensor``."""
    kind = str(record.get("record"))
    refused = record.get("status") == "refused"
    return {
        "activity_id": 99,
        "activity_name": kind.capitalize(),
        "category_uid": 0,
        "category_name": "Uncategorized",
        "class_uid": 0,
        "class_name": "Base Event",
        "type_uid": 99,
        "type_name": "Base Event: Other",
        "time": _ms(record.get("time")) or 0,
        "severity_id": 3 if refused else 1,
        "severity": "Medium" if refused else "Informational",
        "message": f"etwsensor {kind} ({record.get('state') or record.get('status')})",
        "metadata": {
            "version": OCSF_VERSION,
            "log_name": f"etwsensor.{kind}",
            "product": {"name": "etwsensor", "vendor_name": "etwsensor",
                        "version": (record.get("sensor") or {}).get("version") or __version__},
        },
        "unmapped": {"etwsensor": record},
    }  # fmt: skip
