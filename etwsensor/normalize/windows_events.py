"""Windows event log records (Sysmon, Security 4688/4689/4657) → Defender rows.

The same code serves EVTX files and JSON exports: their readers (etwsensor/sources/evtx.py,
winlog_json.py) give RawEvents with Sysmon's and the Security log's own field names. Processes go
into the process table the ETW path uses (``ProcessTracker``), keyed by Sysmon's ProcessGuid where
there is one and by pid for the Security log, so the Initiating* columns come from the table: a
process seen only through its children or its own later events still gets what is known of it.

Field by field mapping and ActionType rules: docs/normalize.md, "Windows event logs".
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from etwsensor.events import RawEvent
from etwsensor.normalize.accounts import INTEGRITY_LEVELS, TOKEN_ELEVATION_TYPES, WELL_KNOWN_SIDS
from etwsensor.normalize.paths import file_name_of, registry_key
from etwsensor.normalize.processes import Process, ProcessTracker
from etwsensor.normalize.rows import Handlers, Row, RowSink
from etwsensor.sources.windows_events import SECURITY, SYSMON, as_int

PROCESS_TABLE = "DeviceProcessEvents"
IMAGE_TABLE = "DeviceImageLoadEvents"
FILE_TABLE = "DeviceFileEvents"
REGISTRY_TABLE = "DeviceRegistryEvents"

_ACCOUNT_SIDS = {(d, n): sid for sid, (d, n) in WELL_KNOWN_SIDS.items()}
_HASH_COLUMNS = {"SHA1": "SHA1", "SHA256": "SHA256", "MD5": "MD5"}
# Sysmon's version-info fields → Defender's *VersionInfo* column suffixes
_VERSION_INFO = {
    "Company": "VersionInfoCompanyName",
    "Product": "VersionInfoProductName",
    "FileVersion": "VersionInfoProductVersion",
    "OriginalFileName": "VersionInfoOriginalFileName",
    "Description": "VersionInfoFileDescription",
}
# Security log message ids of registry value types (msobjs.dll) and the names ECS renders
_SECURITY_VALUE_TYPES = {
    "%%1872": "None", "%%1873": "String", "%%1874": "ExpandString", "%%1875": "Binary",
    "%%1876": "Dword", "%%1879": "MultiString", "%%1883": "QWord",
    "REG_NONE": "None", "REG_SZ": "String", "REG_EXPAND_SZ": "ExpandString", "REG_BINARY": "Binary",
    "REG_DWORD": "Dword", "REG_MULTI_SZ": "MultiString", "REG_QWORD": "QWord",
}  # fmt: skip
_ELEVATION_IDS = {"%%1936": 1, "%%1937": 2, "%%1938": 3}
_SYSMON_NUMBER = re.compile(r"^(DWORD|QWORD) \(0x([0-9a-fA-F]+)(?:-0x([0-9a-fA-F]+))?\)$")
# A value-name component that starts a path: "C:", or the empty component of a UNC "\\server".
_PATH_START = re.compile(r"\\(?=[A-Za-z]:(?:\\|$)|\\)")
_ROOTS = (
    ("HKEY_LOCAL_MACHINE", "HKEY_LOCAL_MACHINE"),
    ("HKLM", "HKEY_LOCAL_MACHINE"),
    ("HKEY_USERS", "HKEY_CURRENT_USER"),
    ("HKU", "HKEY_CURRENT_USER"),
    ("HKEY_CLASSES_ROOT", "HKEY_LOCAL_MACHINE\\SOFTWARE\\Classes"),
    ("HKCR", "HKEY_LOCAL_MACHINE\\SOFTWARE\\Classes"),
    ("HKEY_CURRENT_USER", "HKEY_CURRENT_USER"),
    ("HKCU", "HKEY_CURRENT_USER"),
)
DEFAULT_VALUE = "(Default)"


def guid_of(value: Any) -> str:
    """``{9F32B55F-…}`` and ``9f32b55f-…`` (EVTX renders GUIDs without braces) → one form."""
    return value.strip().strip("{}").upper() if isinstance(value, str) else ""


def hashes(text: Any) -> Row:
    """Sysmon's ``SHA1=…,MD5=…,SHA256=…,IMPHASH=…`` → {"SHA1": …, …} in lower case."""
    out: Row = {}
    if not isinstance(text, str):
        return out
    for part in text.split(","):
        algo, sep, value = part.partition("=")
        column = _HASH_COLUMNS.get(algo.strip().upper())
        if sep and column:
            out[column] = value.strip().lower()
    return out


def split_user(user: Any) -> tuple[str, str, str]:
    """``DOMAIN\\name`` → (AccountDomain, AccountName, AccountSid): the well-known accounts written as
    Defender and the ETW path write them (``nt authority`` / ``system``, with their SIDs)."""
    if not isinstance(user, str) or not user or user == "-":
        return "", "", ""
    domain, sep, name = user.rpartition("\\")
    if not sep:
        domain, name = "", user
    sid = _ACCOUNT_SIDS.get((domain.lower(), name.lower()), "")
    if sid:
        return domain.lower(), name.lower(), sid
    return domain, name, ""


def registry_key_of(path: str) -> str:
    """Sysmon's ``HKLM\\…``, ``HKU\\…``, ``HKCR\\…`` and ``\\REGISTRY\\…`` keys → Defender's form (the
    one the ETW path writes: HKEY_LOCAL_MACHINE, HKEY_CURRENT_USER\\<SID>, HKCR as
    HKEY_LOCAL_MACHINE\\SOFTWARE\\Classes)."""
    if path[:1] == "\\":
        return registry_key(path)
    head, sep, rest = path.partition("\\")
    upper = head.upper()
    for short, full in _ROOTS:
        if upper == short:
            return full + sep + rest
    return path


def split_value(target: str) -> tuple[str, str]:
    """Sysmon's TargetObject (key + ``\\`` + value name) → (key, value name).

    Value names may hold backslashes; the ones that do in practice are paths (SharedDLLs,
    AppCompatFlags\\Layers, …), so a component that starts a path (``C:``, ``\\\\server``) starts the
    value name. ``(Default)`` is the key's unnamed value: "" as Defender writes it.
    """
    m = _PATH_START.search(target)
    if m is not None and m.start() > 0:
        key, name = target[: m.start()], target[m.start() + 1 :]
    else:
        key, _, name = target.rpartition("\\")
    return key, "" if name == DEFAULT_VALUE else name


def value_of_details(details: Any) -> tuple[str, str]:
    """Sysmon's Details → (RegistryValueType, RegistryValueData): ``DWORD (0x00000001)`` → Dword "1",
    ``QWORD (0x00000001-0x00000000)`` → QWord (high-low) in decimal, ``Binary Data`` → Binary with no
    data (Sysmon does not log it), anything else a String as written (``(Empty)`` → "")."""
    if not isinstance(details, str):
        return ("String", "" if details is None else str(details))
    m = _SYSMON_NUMBER.match(details)
    if m is not None:
        if m.group(1) == "DWORD":
            return "Dword", str(int(m.group(2), 16))
        low = m.group(3)
        value = (int(m.group(2), 16) << 32) | int(low, 16) if low else int(m.group(2), 16)
        return "QWord", str(value)
    if details == "Binary Data":
        return "Binary", ""
    if details == "(Empty)":
        return "String", ""
    return "String", details


def _elevation(value: Any) -> str:
    if not isinstance(value, str):
        return ""
    number = _ELEVATION_IDS.get(value.strip())
    if number is not None:
        return TOKEN_ELEVATION_TYPES[number]
    for name in TOKEN_ELEVATION_TYPES.values():  # ECS: "TokenElevationTypeFull (2)"
        if value.startswith(name):
            return name
    return ""


def _image_info(f: dict[str, Any]) -> Row:
    info = hashes(f.get("Hashes"))
    for field, suffix in _VERSION_INFO.items():
        value = f.get(field)
        if isinstance(value, str) and value and value != "-":
            info[suffix] = value
    return info


def _text(f: dict[str, Any], name: str) -> str:
    value = f.get(name)
    return value if isinstance(value, str) and value != "-" else ""


class WindowsEventTracker:
    """Sysmon 1/5/7/11/12/13/14/23/26 and Security 4688/4689/4657 → rows; other events are counted
    by their source (the summary) and make no rows."""

    def __init__(self, sink: RowSink, processes: ProcessTracker) -> None:
        self._sink = sink
        self._processes = processes
        self.skipped: dict[str, int] = {}  # mapped events that still made no row, by reason

    def handlers(self) -> Handlers:
        s, sec = SYSMON, SECURITY
        return {
            (s, "ProcessCreate"): self._process_create,
            (s, "ProcessTerminate"): self._process_terminate,
            (s, "ImageLoad"): self._image_load,
            (s, "FileCreate"): self._file_create,
            (s, "FileDelete"): self._file_delete,
            (s, "FileDeleteDetected"): self._file_delete,
            (s, "RegistryAddOrDelete"): self._registry,
            (s, "RegistryValueSet"): self._registry,
            (s, "RegistryRename"): self._registry,
            (sec, "ProcessCreate"): self._security_process_create,
            (sec, "ProcessExit"): self._security_process_exit,
            (sec, "RegistryValueModified"): self._security_registry,
        }

    def _skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    # --- the process table ---------------------------------------------------------------------

    def _stub(self, guid: str, pid: int, image: str, ts: datetime, user: Any = None) -> Process:
        """A process known only from what another event says of it: in the table, no row."""
        proc = Process(pid=pid, parent_pid=-1, first_seen=ts, rundown=True, guid=guid)
        proc.folder_path = image
        proc.file_name = file_name_of(image) if image else ""
        proc.account_domain, proc.account_name, proc.sid = split_user(user)
        self._processes.adopt(proc)
        return proc

    def _actor(self, ev: RawEvent) -> Process | None:
        """The process that did what a Sysmon event reports, from the table or made from the event."""
        f = ev.fields
        guid = guid_of(f.get("ProcessGuid"))
        proc = self._processes.by_guid(guid) if guid else None
        if proc is not None:
            return proc
        pid = as_int(f.get("ProcessId"), -1)
        image = _text(f, "Image")
        if not guid and pid < 0:
            return None
        return self._stub(guid, pid, image, ev.ts, f.get("User"))

    def _emit(self, ev: RawEvent, table: str, action: str, row: Row, proc: Process | None) -> None:
        if proc is not None:
            own = row
            row = dict(proc.initiating())
            row.update(own)
        else:
            row["InitiatingProcessId"] = as_int(ev.fields.get("ProcessId"), -1)
        self._sink.emit(table, action, ev.ts, row, proc is None or not proc.folder_path)

    # --- Sysmon --------------------------------------------------------------------------------

    def _process_create(self, ev: RawEvent) -> None:
        f = ev.fields
        processes = self._processes
        parent_guid = guid_of(f.get("ParentProcessGuid"))
        parent = processes.by_guid(parent_guid) if parent_guid else None
        parent_pid = as_int(f.get("ParentProcessId"), -1)
        if parent is None and (parent_guid or _text(f, "ParentImage")):
            parent = self._stub(parent_guid, parent_pid, _text(f, "ParentImage"), ev.ts, f.get("ParentUser"))
        if parent is not None and not parent.command_line:
            parent.command_line = _text(f, "ParentCommandLine")
            parent.changed()
        proc = _created(ev, as_int(f.get("ProcessId"), -1), parent_pid, _text(f, "Image"),
                        integrity=_text(f, "IntegrityLevel"), guid=guid_of(f.get("ProcessGuid")))  # fmt: skip
        proc.account_domain, proc.account_name, proc.sid = split_user(f.get("User"))
        session = f.get("TerminalSessionId")
        proc.session_id = as_int(session) if session not in (None, "") else None
        logon = f.get("LogonId")
        proc.logon_id = as_int(logon) if logon not in (None, "") else None
        proc.image_info = _image_info(f) or None
        processes.adopt(proc, parent)
        processes.created(proc)

    def _process_terminate(self, ev: RawEvent) -> None:
        guid = guid_of(ev.fields.get("ProcessGuid"))
        proc = self._processes.by_guid(guid) if guid else None
        if proc is not None:
            self._processes.ended(proc)

    def _image_load(self, ev: RawEvent) -> None:
        f = ev.fields
        path = _text(f, "ImageLoaded")
        row: Row = {"FileName": file_name_of(path), "FolderPath": path}
        row.update(hashes(f.get("Hashes")))
        self._emit(ev, IMAGE_TABLE, "ImageLoaded", row, self._actor(ev))

    def _file_create(self, ev: RawEvent) -> None:
        path = _text(ev.fields, "TargetFilename")
        self._emit(ev, FILE_TABLE, "FileCreated", {"FileName": file_name_of(path), "FolderPath": path},
                   self._actor(ev))  # fmt: skip

    def _file_delete(self, ev: RawEvent) -> None:
        f = ev.fields
        path = _text(f, "TargetFilename")
        row: Row = {"FileName": file_name_of(path), "FolderPath": path}
        row.update(hashes(f.get("Hashes")))
        self._emit(ev, FILE_TABLE, "FileDeleted", row, self._actor(ev))

    def _registry(self, ev: RawEvent) -> None:
        f = ev.fields
        target = _text(f, "TargetObject")
        kind = _text(f, "EventType")
        if ev.id == 13 and kind not in ("SetValue", "DeleteValue"):
            kind = "SetValue"
        elif ev.id == 14:
            kind = "RenameKey"
        row: Row
        if kind == "CreateKey":
            action, row = "RegistryKeyCreated", {"RegistryKey": registry_key_of(target)}
        elif kind == "DeleteKey":
            action, row = "RegistryKeyDeleted", {"PreviousRegistryKey": registry_key_of(target)}
        elif kind == "DeleteValue":
            key, name = split_value(target)
            action = "RegistryValueDeleted"
            row = {"PreviousRegistryKey": registry_key_of(key), "PreviousRegistryValueName": name}
        elif kind == "SetValue":
            key, name = split_value(target)
            value_type, data = value_of_details(f.get("Details"))
            action = "RegistryValueSet"
            row = {
                "RegistryKey": registry_key_of(key),
                "RegistryValueName": name,
                "RegistryValueType": value_type,
                "RegistryValueData": data,
            }
        elif kind == "RenameKey":
            new = _text(f, "NewName")
            if new and "\\" not in new:  # a bare new name: a sibling of the old key
                new = target.rpartition("\\")[0] + "\\" + new
            action = "RegistryKeyRenamed"
            row = {"PreviousRegistryKey": registry_key_of(target), "RegistryKey": registry_key_of(new)}
        else:
            self._skip(f"Sysmon {ev.id}: no EventType (CreateKey/DeleteKey/DeleteValue)")
            return
        self._emit(ev, REGISTRY_TABLE, action, row, self._actor(ev))

    # --- Security log --------------------------------------------------------------------------

    def _security_process_create(self, ev: RawEvent) -> None:
        f = ev.fields
        processes = self._processes
        parent_pid = as_int(f.get("ProcessId"), -1)
        parent = processes.get(parent_pid)
        if parent is not None and parent.ended:
            parent = None
        if parent is None and _text(f, "ParentProcessName"):
            parent = self._stub("", parent_pid, _text(f, "ParentProcessName"), ev.ts)
        proc = _created(ev, as_int(f.get("NewProcessId"), -1), parent_pid, _text(f, "NewProcessName"),
                        integrity=INTEGRITY_LEVELS.get(_text(f, "MandatoryLabel").upper(), ""),
                        elevation=_elevation(f.get("TokenElevationType")))  # fmt: skip
        # The new process runs as the target account when there is one (S-1-0-0: none), else the creator's.
        prefix = "Target" if _text(f, "TargetUserSid") not in ("", "S-1-0-0") else "Subject"
        proc.sid = _text(f, prefix + "UserSid")
        known = WELL_KNOWN_SIDS.get(proc.sid)
        if known is not None:
            proc.account_domain, proc.account_name = known
        else:
            proc.account_domain = _text(f, prefix + "DomainName")
            proc.account_name = _text(f, prefix + "UserName")
        logon = f.get(prefix + "LogonId")
        proc.logon_id = as_int(logon) if logon not in (None, "") else None
        processes.adopt(proc, parent)
        processes.created(proc)

    def _security_process_exit(self, ev: RawEvent) -> None:
        proc = self._processes.get(as_int(ev.fields.get("ProcessId"), -1))
        if proc is not None:
            self._processes.ended(proc)

    def _security_registry(self, ev: RawEvent) -> None:
        f = ev.fields
        key = registry_key_of(_text(f, "ObjectName"))
        name = _text(f, "ObjectValueName")
        operation = _text(f, "OperationType")
        pid = as_int(f.get("ProcessId"), -1)
        proc = self._processes.get(pid)
        if proc is None or proc.ended:
            proc = self._stub("", pid, _text(f, "ProcessName"), ev.ts)
        row: Row
        if operation in ("%%1906",) or "deleted" in operation.lower():
            row = {"PreviousRegistryKey": key, "PreviousRegistryValueName": name,
                   "PreviousRegistryValueData": _text(f, "OldValue")}  # fmt: skip
            self._emit(ev, REGISTRY_TABLE, "RegistryValueDeleted", row, proc)
            return
        row = {
            "RegistryKey": key,
            "RegistryValueName": name,
            "RegistryValueType": _SECURITY_VALUE_TYPES.get(_text(f, "NewValueType"), ""),
            "RegistryValueData": _text(f, "NewValue"),
        }
        if operation == "%%1905" or "modified" in operation.lower():
            row["PreviousRegistryValueName"] = name
            row["PreviousRegistryValueData"] = _text(f, "OldValue")
        self._emit(ev, REGISTRY_TABLE, "RegistryValueSet", row, proc)


def _created(
    ev: RawEvent, pid: int, parent_pid: int, image: str, integrity: str, elevation: str = "", guid: str = ""
) -> Process:
    """The process a Sysmon 1 or Security 4688 event creates."""
    return Process(
        pid=pid,
        parent_pid=parent_pid,
        first_seen=ev.ts,
        rundown=False,
        create_time=ev.ts,
        file_name=file_name_of(image),
        folder_path=image,
        command_line=_text(ev.fields, "CommandLine"),
        integrity=integrity,
        elevation=elevation,
        guid=guid,
    )
