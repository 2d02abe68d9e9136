"""JSON exports of Windows events: Winlogbeat / Elastic Agent ECS documents and flat Sysmon JSON.

* ECS (``winlog.*``, ``event.code``): ``winlog.event_data`` is the EventData; what Winlogbeat's
  ingest pipelines moved out of it into ECS fields (``process.executable``, ``process.hash.sha1``,
  ``registry.path``, ``file.path``, …) is put back under Sysmon's own field names, so the document
  gives the same fields as the EVTX record it came from.
* Flat (OTRF Security-Datasets, NXLog): ``EventID``, ``Channel``, ``SourceName``, ``Hostname`` and the
  EventData fields at the top level.

Both become RawEvents through ``WindowsEventSource.make_event``, the path EVTX records take.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from etwsensor.events import RawEvent
from etwsensor.sources.damage import SourceDamage
from etwsensor.sources.header import HostInfo
from etwsensor.sources.jsondocs import BadItem, first_object, iter_objects
from etwsensor.sources.windows_events import (
    SECURITY,
    SYSMON,
    RecordError,
    WindowsEventSource,
    as_int,
    provider_of,
)

_MAX_DAMAGE = 1000
# Top-level keys of flat documents that are the record's envelope, not EventData.
_FLAT_ENVELOPE = frozenset({
    "EventID", "Channel", "SourceName", "ProviderName", "ProviderGuid", "Hostname", "Computer", "Version",
    "EventTime", "TimeCreated", "@timestamp", "@version", "EventReceivedTime", "RecordNumber",
    "EventRecordID", "ExecutionProcessID", "ExecutionThreadID", "ThreadID", "Message", "Keywords",
    "Severity", "SeverityValue", "EventType_", "Opcode", "OpcodeValue", "Task", "Category", "Domain",
    "AccountName", "UserID", "AccountType", "SourceModuleName", "SourceModuleType", "host", "port", "tags",
    "Level", "log_name", "beat", "type",
})  # fmt: skip


def document_kind(obj: dict[str, Any]) -> str | None:
    """ "ecs" or "flat" for a Windows event document, else None."""
    if isinstance(obj.get("winlog"), dict):
        return "ecs"
    if "EventID" in obj and ("Channel" in obj or "SourceName" in obj or "ProviderName" in obj):
        return "flat"
    return None


def _get(doc: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(key)
    return doc


def _obj(doc: dict[str, Any], key: str) -> dict[str, Any]:
    value = doc.get(key)
    return value if isinstance(value, dict) else {}


def _hashes(node: Any) -> str:
    """ECS ``hash.{md5,sha1,sha256,imphash}`` → Sysmon's ``SHA1=…,MD5=…`` text."""
    if not isinstance(node, dict):
        return ""
    return ",".join(f"{k.upper()}={v}" for k, v in node.items() if isinstance(v, str) and v)


def _registry_details(registry: dict[str, Any]) -> str | None:
    """Winlogbeat writes Sysmon's ``DWORD (0x00000004)`` as strings ["4"] with type SZ_DWORD: undo it."""
    strings = _get(registry, "data", "strings")
    value = strings[0] if isinstance(strings, list) and strings else None
    kind = _get(registry, "data", "type")
    if value is None:
        return None
    if kind in ("SZ_DWORD", "SZ_QWORD"):
        number = as_int(value, -1)
        if number >= 0:
            if kind == "SZ_DWORD":
                return f"DWORD (0x{number:08x})"
            return f"QWORD (0x{number >> 32:08x}-0x{number & 0xFFFFFFFF:08x})"
    if kind == "SZ_BINARY":
        return "Binary Data"
    return str(value)


def _put(fields: dict[str, Any], name: str, value: Any) -> None:
    if name not in fields and value not in (None, ""):
        fields[name] = value


def ecs_fields(doc: dict[str, Any], event_id: int) -> dict[str, Any]:
    """EventData with Sysmon's names, from ``winlog.event_data`` and the ECS fields."""
    fields: dict[str, Any] = dict(_get(doc, "winlog", "event_data") or {})
    provider = provider_of(_get(doc, "winlog", "provider_name") or "", _get(doc, "winlog", "channel") or "")
    process = _obj(doc, "process")
    parent = _obj(process, "parent")
    if provider == SECURITY:
        if event_id == 4688:
            _put(fields, "NewProcessName", process.get("executable"))
            _put(fields, "NewProcessId", process.get("pid"))
            _put(fields, "CommandLine", process.get("command_line"))
            _put(fields, "ParentProcessName", parent.get("executable"))
            _put(fields, "ProcessId", parent.get("pid"))
        elif event_id in (4657, 4689):
            _put(fields, "ProcessName", process.get("executable"))
            _put(fields, "ProcessId", process.get("pid"))
        return fields
    if provider != SYSMON:
        return fields
    file = _obj(doc, "file")
    _put(fields, "UtcTime", doc.get("@timestamp"))
    _put(fields, "ProcessGuid", process.get("entity_id"))
    _put(fields, "ProcessId", process.get("pid"))
    _put(fields, "Image", process.get("executable"))
    user = _obj(doc, "user")
    if user.get("name"):
        _put(fields, "User", f"{user['domain']}\\{user['name']}" if user.get("domain") else user["name"])
    if event_id == 1:
        _put(fields, "CommandLine", process.get("command_line"))
        _put(fields, "CurrentDirectory", process.get("working_directory"))
        _put(fields, "Hashes", _hashes(process.get("hash")))
        pe = _obj(process, "pe")
        _put(fields, "OriginalFileName", pe.get("original_file_name"))
        _put(fields, "Company", pe.get("company"))
        _put(fields, "Product", pe.get("product"))
        _put(fields, "Description", pe.get("description"))
        _put(fields, "FileVersion", pe.get("file_version"))
        _put(fields, "ParentProcessGuid", parent.get("entity_id"))
        _put(fields, "ParentProcessId", parent.get("pid"))
        _put(fields, "ParentImage", parent.get("executable"))
        _put(fields, "ParentCommandLine", parent.get("command_line"))
    elif event_id == 7:
        _put(fields, "ImageLoaded", file.get("path"))
        _put(fields, "Hashes", _hashes(file.get("hash")))
        pe = _obj(file, "pe")
        _put(fields, "OriginalFileName", pe.get("original_file_name"))
    elif event_id in (11, 23, 26):
        _put(fields, "TargetFilename", file.get("path"))
        if event_id != 11:  # Winlogbeat files the deleted file's hashes under process.hash
            _put(fields, "Hashes", _hashes(file.get("hash")) or _hashes(process.get("hash")))
    elif event_id in (12, 13, 14):
        registry = _obj(doc, "registry")
        _put(fields, "TargetObject", registry.get("path"))
        if event_id == 13:
            _put(fields, "Details", _registry_details(registry))
    return fields


class WinlogJsonSource(WindowsEventSource):
    kind = "windows-json"

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        first = first_object(path) or {}
        computer = _get(first, "winlog", "computer_name") or first.get("Hostname") or first.get("Computer")
        if isinstance(computer, str) and computer:
            self.header.host = HostInfo(name=computer.lower())

    def _damaged(self, number: int, message: str) -> None:
        if len(self._damage) < _MAX_DAMAGE:
            self._damage.append(SourceDamage(str(self.path), f"item {number}", message))

    def events(self) -> Iterator[RawEvent]:
        for number, obj in iter_objects(self.path):
            if isinstance(obj, BadItem):
                self._damaged(number, f"skipped: {obj.reason}")
                continue
            try:
                event = self._event(obj)
            except (RecordError, TypeError, ValueError, KeyError) as exc:
                self._damaged(number, f"malformed, skipped: {exc}")
                continue
            if event is None:
                self._damaged(number, "skipped: not a Windows event document")
                continue
            yield event

    def _event(self, doc: dict[str, Any]) -> RawEvent | None:
        kind = document_kind(doc)
        if kind == "ecs":
            winlog = doc["winlog"]
            event_id = as_int(winlog.get("event_id", _get(doc, "event", "code")), -1)
            return self.make_event(
                winlog.get("provider_name") or "",
                winlog.get("channel") or "",
                event_id,
                as_int(winlog.get("version")),
                doc.get("@timestamp"),
                ecs_fields(doc, event_id),
                as_int(_get(winlog, "process", "pid")),
                as_int(_get(winlog, "process", "thread", "id")),
                winlog.get("provider_guid") or "",
            )
        if kind == "flat":
            fields = {k: v for k, v in doc.items() if k not in _FLAT_ENVELOPE}
            created = doc.get("@timestamp") or doc.get("TimeCreated") or doc.get("EventTime")
            return self.make_event(
                doc.get("SourceName") or doc.get("ProviderName") or "",
                doc.get("Channel") or "",
                as_int(doc.get("EventID"), -1),
                as_int(doc.get("Version")),
                created,
                fields,
                as_int(doc.get("ExecutionProcessID")),
                as_int(doc.get("ExecutionThreadID") or doc.get("ThreadID")),
                doc.get("ProviderGuid") or "",
            )
        return None
