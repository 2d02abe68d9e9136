"""Registry events → DeviceRegistryEvents.

Names: Kernel-Registry KeyObject → path from CreateKey/OpenKey (absolute RelativeName; BaseName +
RelativeName; cached BaseObject path + RelativeName), evicted on CloseKey. Classic Registry KCB →
name from KCBCreate and rundown (KCBRundownEnd), removed on KCBDelete.

Rows: Kernel-Registry makes them once it has been seen in the stream; until then (and for traces
without it) the classic class does, and classic events always feed the KCB cache.

RegistryValueData rendering (from Kernel-Registry CapturedData, which may be truncated):
Dword / QWord as decimal, String / ExpandString as the text without its terminating NULs,
MultiString as its strings joined by single spaces, Binary (and any type outside Defender's
seven names) as lower-case hex without separators, None as "". Empty when no data was captured.
"""

from __future__ import annotations

from typing import Any

from etwsensor.events import RawEvent
from etwsensor.normalize.cache import BoundedCache
from etwsensor.normalize.paths import registry_key
from etwsensor.normalize.processes import ProcessTracker
from etwsensor.normalize.rows import Handlers, Row, RowSink

REGISTRY_TABLE = "DeviceRegistryEvents"
KERNEL_REGISTRY = "Microsoft-Windows-Kernel-Registry"
REG_CREATED_NEW_KEY = 1

# REG_* type number → (Defender's RegistryValueType, how the data is rendered)
VALUE_TYPES: dict[int, tuple[str, str]] = {
    0: ("None", "none"),
    1: ("String", "text"),
    2: ("ExpandString", "text"),
    3: ("Binary", "hex"),
    4: ("Dword", "le"),
    5: ("Dword", "be"),  # REG_DWORD_BIG_ENDIAN
    7: ("MultiString", "multi"),
    11: ("QWord", "le"),
}


def render_value(reg_type: int, data: bytes | None) -> tuple[str, str]:
    """(RegistryValueType, RegistryValueData) for a REG_* type and its captured bytes."""
    name, how = VALUE_TYPES.get(reg_type, ("Binary", "hex"))
    if not data or how == "none":
        return name, ""
    if how == "text":
        return name, _utf16(data).rstrip("\x00")
    if how == "multi":
        return name, " ".join(s for s in _utf16(data).split("\x00") if s)
    if how == "le":
        return name, str(int.from_bytes(data[:8] if reg_type == 11 else data[:4], "little"))
    if how == "be":
        return name, str(int.from_bytes(data[:4], "big"))
    return name, data.hex()


def _utf16(data: bytes) -> str:
    return data[: len(data) & ~1].decode("utf-16-le", errors="replace")


def _join(base: str, relative: str) -> str:
    if not base:
        return relative
    if not relative:
        return base
    return base.rstrip("\\") + "\\" + relative.lstrip("\\")


def key_unresolved(key: str) -> bool:
    return not key.startswith("HKEY_") and key[:10].upper() != "\\REGISTRY\\"


class RegistryTracker:
    def __init__(
        self, sink: RowSink, processes: ProcessTracker, max_keys: int = 16384, max_kcbs: int = 65536
    ) -> None:
        self._sink = sink
        self._processes = processes
        self.keys: BoundedCache[int, str] = BoundedCache("registry_key_objects", max_keys)
        self.kcbs: BoundedCache[int, str] = BoundedCache("registry_kcbs", max_kcbs)
        self._manifest_seen = False

    def handlers(self) -> Handlers:
        k = KERNEL_REGISTRY
        return {
            (k, "CreateKey"): self._create_key,
            (k, "OpenKey"): self._open_key,
            (k, "DeleteKey"): self._delete_key,
            (k, "SetValueKey"): self._set_value,
            (k, "DeleteValueKey"): self._delete_value,
            (k, "CloseKey"): self._close_key,
            ("Registry", "KCBCreate"): self._kcb_name,
            ("Registry", "KCBRundownEnd"): self._kcb_name,
            ("Registry", "KCBDelete"): self._kcb_delete,
            ("Registry", "Create"): self._classic_create,
            ("Registry", "Delete"): self._classic_delete,
            ("Registry", "SetValue"): self._classic_set_value,
            ("Registry", "DeleteValue"): self._classic_delete_value,
        }

    # --- rows ----------------------------------------------------------------------------------

    def _emit(self, ev: RawEvent, action: str, row: Row, key: str) -> None:
        proc = self._processes.get(ev.pid)
        if proc is not None:
            row.update(proc.initiating())
        else:
            row["InitiatingProcessId"] = ev.pid
        self._sink.emit(REGISTRY_TABLE, action, ev.ts, row, proc is None or key_unresolved(key))

    # --- Kernel-Registry -----------------------------------------------------------------------

    def _manifest_key(self, f: dict[str, Any]) -> str:
        """The key a KeyObject names: the cache, else the KeyName the event carries."""
        key_object = f.get("KeyObject", 0)
        path = self.keys.get(key_object) if key_object else None
        return path if path is not None else registry_key(f.get("KeyName") or "")

    def _opened(self, f: dict[str, Any]) -> str:
        relative = f.get("RelativeName") or ""
        if relative[:10].upper() == "\\REGISTRY\\":
            path = registry_key(relative)
        else:
            base_object = f.get("BaseObject", 0)
            base = self.keys.get(base_object) if base_object else None
            if base is None:
                base = registry_key(f.get("BaseName") or "")
            path = _join(base, relative)
        key_object = f.get("KeyObject", 0)
        if key_object and f.get("Status", 0) == 0:
            self.keys.put(key_object, path)
        return path

    def _create_key(self, ev: RawEvent) -> None:
        self._manifest_seen = True
        f = ev.fields
        path = self._opened(f)
        if f.get("Status", 0) == 0 and f.get("Disposition") == REG_CREATED_NEW_KEY:
            self._emit(ev, "RegistryKeyCreated", {"RegistryKey": path}, path)

    def _open_key(self, ev: RawEvent) -> None:
        self._manifest_seen = True
        self._opened(ev.fields)

    def _delete_key(self, ev: RawEvent) -> None:
        self._manifest_seen = True
        f = ev.fields
        if f.get("Status", 0) != 0:
            return
        key = self._manifest_key(f)
        self._emit(ev, "RegistryKeyDeleted", {"PreviousRegistryKey": key}, key)

    def _set_value(self, ev: RawEvent) -> None:
        self._manifest_seen = True
        f = ev.fields
        if f.get("Status", 0) != 0:
            return
        key = self._manifest_key(f)
        value_name = f.get("ValueName") or ""
        value_type, data = render_value(f.get("Type", 0), f.get("CapturedData"))
        row: Row = {
            "RegistryKey": key,
            "RegistryValueName": value_name,
            "RegistryValueType": value_type,
            "RegistryValueData": data,
        }
        if f.get("PreviousDataSize") or f.get("PreviousData"):
            row["PreviousRegistryValueName"] = value_name
            row["PreviousRegistryValueData"] = render_value(
                f.get("PreviousDataType", 0), f.get("PreviousData")
            )[1]
        self._emit(ev, "RegistryValueSet", row, key)

    def _delete_value(self, ev: RawEvent) -> None:
        self._manifest_seen = True
        f = ev.fields
        if f.get("Status", 0) != 0:
            return
        key = self._manifest_key(f)
        row: Row = {"PreviousRegistryKey": key, "PreviousRegistryValueName": f.get("ValueName") or ""}
        self._emit(ev, "RegistryValueDeleted", row, key)

    def _close_key(self, ev: RawEvent) -> None:
        self._manifest_seen = True
        self.keys.pop(ev.fields.get("KeyObject", 0))

    # --- classic Registry class ----------------------------------------------------------------

    def _kcb_name(self, ev: RawEvent) -> None:
        f = ev.fields
        handle, name = f.get("KeyHandle", 0), f.get("KeyName") or ""
        if handle and name:
            self.kcbs.put(handle, registry_key(name))

    def _kcb_delete(self, ev: RawEvent) -> None:
        self.kcbs.pop(ev.fields.get("KeyHandle", 0))

    def _classic_path(self, f: dict[str, Any]) -> str:
        """KeyName relative to the KCB in KeyHandle (absolute when the handle is 0 or unknown)."""
        name = f.get("KeyName") or ""
        handle = f.get("KeyHandle", 0)
        base = self.kcbs.get(handle) if handle else None
        if base is None or name[:10].upper() == "\\REGISTRY\\":
            return registry_key(name)
        return _join(base, name)

    def _classic_rows(self, f: dict[str, Any]) -> bool:
        return not self._manifest_seen and f.get("Status", 0) == 0

    def _classic_create(self, ev: RawEvent) -> None:
        # The classic class cannot tell a new key from an existing one: every successful create counts.
        f = ev.fields
        if self._classic_rows(f):
            key = self._classic_path(f)
            self._emit(ev, "RegistryKeyCreated", {"RegistryKey": key}, key)

    def _classic_delete(self, ev: RawEvent) -> None:
        f = ev.fields
        if self._classic_rows(f):
            key = self._classic_path(f)
            self._emit(ev, "RegistryKeyDeleted", {"PreviousRegistryKey": key}, key)

    def _classic_value_key(self, f: dict[str, Any]) -> str:
        handle = f.get("KeyHandle", 0)
        base = self.kcbs.get(handle) if handle else None
        return base or ""

    def _classic_set_value(self, ev: RawEvent) -> None:
        # Classic SetValue carries no data or type (CORRECTIONS §7); KeyName is the value name.
        f = ev.fields
        if self._classic_rows(f):
            key = self._classic_value_key(f)
            row: Row = {"RegistryKey": key, "RegistryValueName": f.get("KeyName") or ""}
            self._emit(ev, "RegistryValueSet", row, key)

    def _classic_delete_value(self, ev: RawEvent) -> None:
        f = ev.fields
        if self._classic_rows(f):
            key = self._classic_value_key(f)
            row: Row = {"PreviousRegistryKey": key, "PreviousRegistryValueName": f.get("KeyName") or ""}
            self._emit(ev, "RegistryValueDeleted", row, key)
