"""An etwsensor alert as an Elastic Common Schema (ECS) alert document.

ECS has one place for each thing a Defender row says: the process a row is about (``process.*``, with its
parent in ``process.parent.*``), the file (``file.*``), the loaded module (``dll.*``), the registry value
(``registry.*``), the host and the user. Which Defender process is "the" process depends on the table:
in DeviceProcessEvents it is the created process and InitiatingProcess* is its parent; in the other
tables the InitiatingProcess* columns describe the actor, which ECS calls ``process``. Everything we
cannot place goes under ``etwsensor.*`` (a custom field set, as ECS asks custom fields to be named), so
nothing of the original alert is lost.
"""

from __future__ import annotations

from typing import Any, Final

from etwsensor.alerts.model import SCHEMA_VERSION

ECS_VERSION: Final = "9.4.0"

# Elastic's convention for event.severity / risk_score from a four-level severity.
_SEVERITY_SCORE: Final = {"informational": 21, "low": 21, "medium": 47, "high": 73, "critical": 99}

_CATEGORY: Final = {
    "DeviceProcessEvents": "process",
    "DeviceImageLoadEvents": "library",
    "DeviceRegistryEvents": "registry",
    "DeviceFileEvents": "file",
    "DeviceEvents": "api",
}

# ActionType → event.type (ECS allowed values); anything else is "info".
_EVENT_TYPE: Final = {
    "ProcessCreated": "start",
    "ImageLoaded": "start",
    "FileCreated": "creation",
    "FileModified": "change",
    "FileRenamed": "change",
    "FileDeleted": "deletion",
    "RegistryKeyCreated": "creation",
    "RegistryValueSet": "change",
    "RegistryKeyRenamed": "change",
    "RegistryKeyDeleted": "deletion",
    "RegistryValueDeleted": "deletion",
}

_HIVES: Final = {
    "HKEY_LOCAL_MACHINE": "HKLM",
    "HKEY_CURRENT_USER": "HKCU",
    "HKEY_USERS": "HKU",
    "HKEY_CLASSES_ROOT": "HKCR",
    "HKEY_CURRENT_CONFIG": "HKCC",
}


def _put(doc: dict[str, Any], dotted: str, value: Any) -> None:
    """Set a nested field from its dotted ECS name, leaving out empty values (ECS omits unknowns)."""
    if value is None or value == "" or value == []:
        return
    *parents, leaf = dotted.split(".")
    node = doc
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value


# ECS process field ← (the row's own process column, the suffix after an InitiatingProcess-style prefix).
_PROCESS_FIELDS: Final = (
    ("pid", "ProcessId", "Id"),
    ("command_line", "ProcessCommandLine", "CommandLine"),
    ("name", "FileName", "FileName"),
    ("executable", "FolderPath", "FolderPath"),
    ("hash.sha256", "SHA256", "SHA256"),
    ("hash.sha1", "SHA1", "SHA1"),
    ("hash.md5", "MD5", "MD5"),
    ("start", "ProcessCreationTime", "CreationTime"),
    ("pe.original_file_name", "ProcessVersionInfoOriginalFileName", "VersionInfoOriginalFileName"),
    ("pe.company", "ProcessVersionInfoCompanyName", "VersionInfoCompanyName"),
    ("pe.product", "ProcessVersionInfoProductName", "VersionInfoProductName"),
    ("pe.description", "ProcessVersionInfoFileDescription", "VersionInfoFileDescription"),
)


def _process(doc: dict[str, Any], prefix: str, row: dict[str, Any], col: str) -> None:
    """One Defender process: ``col`` "" is the row's own, "InitiatingProcess" the actor, and so on."""
    for field, own_column, suffix in _PROCESS_FIELDS:
        _put(doc, f"{prefix}.{field}", row.get(own_column if col == "" else col + suffix))


def _file(doc: dict[str, Any], prefix: str, row: dict[str, Any]) -> None:
    name, folder = row.get("FileName"), row.get("FolderPath")
    _put(doc, f"{prefix}.name", name)
    _put(doc, f"{prefix}.path", folder)
    if isinstance(folder, str) and isinstance(name, str) and name and folder.lower().endswith(name.lower()):
        _put(doc, f"{prefix}.directory", folder[: -len(name)].rstrip("\\"))
    if isinstance(name, str) and "." in name and prefix == "file":
        _put(doc, "file.extension", name.rsplit(".", 1)[1])
    _put(doc, f"{prefix}.hash.sha256", row.get("SHA256"))
    _put(doc, f"{prefix}.hash.sha1", row.get("SHA1"))
    _put(doc, f"{prefix}.hash.md5", row.get("MD5"))
    _put(doc, f"{prefix}.size", row.get("FileSize"))


def _registry(doc: dict[str, Any], row: dict[str, Any]) -> None:
    key = row.get("RegistryKey")
    if not isinstance(key, str) or not key:
        return
    hive_name, _, rest = key.partition("\\")
    hive = _HIVES.get(hive_name.upper())
    value = row.get("RegistryValueName")
    _put(doc, "registry.hive", hive)
    _put(doc, "registry.key", rest if hive else key)
    _put(doc, "registry.value", value)
    _put(doc, "registry.path", f"{key}\\{value}" if isinstance(value, str) and value else key)
    data = row.get("RegistryValueData")
    if data not in (None, ""):
        _put(doc, "registry.data.strings", [str(data)])
    _put(doc, "registry.data.type", row.get("RegistryValueType"))


def _threat(doc: dict[str, Any], rule: dict[str, Any]) -> None:
    techniques = [t for t in rule.get("techniques", []) if isinstance(t, str)]
    if not techniques and not rule.get("tactics"):
        return
    threat: dict[str, Any] = {"framework": "MITRE ATT&CK"}
    parents = sorted({t.split(".", 1)[0] for t in techniques})
    subs = [t for t in techniques if "." in t]
    if parents:
        threat["technique"] = {
            "id": parents,
            "reference": [f"https://attack.mitre.org/techniques/{t}/" for t in parents],
        }
    if subs:
        threat.setdefault("technique", {})["subtechnique"] = {
            "id": subs,
            "reference": [f"https://attack.mitre.org/techniques/{t.replace('.', '/')}/" for t in subs],
        }
    if rule.get("tactics"):
        threat["tactic"] = {"name": list(rule["tactics"])}
    doc["threat"] = threat


def to_ecs(alert: dict[str, Any]) -> dict[str, Any]:
    """The ECS document of one alert (``event.kind: alert``)."""
    rule: dict[str, Any] = alert.get("rule") or {}
    host: dict[str, Any] = alert.get("host") or {}
    projected: dict[str, Any] = alert.get("row") or {}
    row = {**{k: v for k, v in (alert.get("ids") or {}).items() if v is not None}, **projected}
    table = str(alert.get("table") or "")
    action = row.get("ActionType")
    severity = str(rule.get("severity") or "")
    doc: dict[str, Any] = {"@timestamp": alert.get("time"), "ecs": {"version": ECS_VERSION}}
    event: dict[str, Any] = {
        "kind": "alert",
        "id": alert.get("alert_id"),
        "created": alert.get("detected_at"),
        "module": "etwsensor",
        "dataset": "etwsensor.alert",
        "provider": table or None,
        "category": [_CATEGORY[table]] if table in _CATEGORY else None,
        "type": [_EVENT_TYPE.get(str(action), "info")] if table in _CATEGORY else ["info"],
        "action": action,
        "reason": alert.get("reason"),
        "severity": _SEVERITY_SCORE.get(severity),
        "risk_score": float(_SEVERITY_SCORE[severity]) if severity in _SEVERITY_SCORE else None,
    }
    doc["event"] = {k: v for k, v in event.items() if v not in (None, "")}
    _put(doc, "message", alert.get("reason") or rule.get("name"))
    _put(doc, "rule.id", rule.get("id"))
    _put(doc, "rule.uuid", rule.get("id"))
    _put(doc, "rule.name", rule.get("name"))
    _put(doc, "rule.version", rule.get("version"))
    _put(doc, "rule.reference", next(iter(rule.get("references") or []), None))  # all in etwsensor.rule
    _put(doc, "rule.ruleset", "etwsensor")
    _threat(doc, rule)
    _put(doc, "host.name", host.get("name") or row.get("DeviceName"))
    _put(doc, "host.id", host.get("device_id") or row.get("DeviceId"))
    _put(doc, "host.os.type", "windows")
    if table == "DeviceProcessEvents":
        _process(doc, "process", row, "")
        _process(doc, "process.parent", row, "InitiatingProcess")
        _put(doc, "user.name", row.get("AccountName"))
        _put(doc, "user.domain", row.get("AccountDomain"))
        _put(doc, "user.id", row.get("AccountSid"))
    else:
        _process(doc, "process", row, "InitiatingProcess")
        _process(doc, "process.parent", row, "InitiatingProcessParent")
        _put(doc, "user.name", row.get("InitiatingProcessAccountName") or row.get("AccountName"))
        _put(doc, "user.domain", row.get("InitiatingProcessAccountDomain") or row.get("AccountDomain"))
        _put(doc, "user.id", row.get("InitiatingProcessAccountSid") or row.get("AccountSid"))
    if table == "DeviceFileEvents":
        _file(doc, "file", row)
    elif table == "DeviceImageLoadEvents":
        _file(doc, "dll", row)
    elif table == "DeviceRegistryEvents":
        _registry(doc, row)
    doc["etwsensor"] = {
        "schema_version": alert.get("schema_version", SCHEMA_VERSION),
        "table": table,
        "rule": {
            "confidence": rule.get("confidence"),
            "severity": severity,
            "references": list(rule.get("references") or []),
        },
        "row": projected,
        "sensor": alert.get("sensor"),
        "suppressed_count": alert.get("suppressed_count", 0),
    }
    return doc


def record_to_ecs(record: dict[str, Any]) -> dict[str, Any]:
    """A health record (heartbeat, reload) as an ECS document: a heartbeat is a metric, a reload a state
    change; the record itself goes under ``etwsensor.record``."""
    kind = str(record.get("record"))
    state = record.get("state")
    heartbeat = kind == "heartbeat"
    event_type = {"start": "start", "stop": "end"}.get(str(state), "info" if heartbeat else "change")
    doc: dict[str, Any] = {
        "@timestamp": record.get("time"),
        "ecs": {"version": ECS_VERSION},
        "event": {
            "kind": "metric" if heartbeat else "state",
            "module": "etwsensor",
            "dataset": f"etwsensor.{kind}",
            "category": ["host"] if heartbeat else ["configuration"],
            "type": [event_type],
        },
    }
    if heartbeat:
        doc["event"]["sequence"] = record.get("sequence")
    else:
        doc["event"]["outcome"] = "success" if record.get("status") == "applied" else "failure"
    _put(doc, "host.name", (record.get("host") or {}).get("name"))
    _put(doc, "process.pid", (record.get("sensor") or {}).get("pid"))
    _put(doc, "message", f"etwsensor {kind} ({state or record.get('status')})")
    doc["etwsensor"] = {"record": record}
    return doc
