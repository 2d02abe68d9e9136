"""NT object-manager paths → the DOS / UNC paths and registry keys Defender writes.

Rules (issue 3 §6), applied to every path column:

* ``\\Device\\HarddiskVolumeN\\…`` → ``C:\\…`` through the device map (recording header,
  SystemConfigEx VolumeMapping records in .etl files, or ``--device-map``).
* ``\\SystemRoot\\…`` and device-less ``\\Windows\\…`` → the system root (default ``C:\\Windows``).
* ``\\??\\C:\\…`` and ``\\\\?\\C:\\…`` → ``C:\\…``; ``\\??\\UNC\\srv\\share`` → ``\\\\srv\\share``.
* ``\\Device\\Mup\\…`` (optionally ``DfsClient\\`` or ``;LanmanRedirector\\``, then optionally a
  ``;X:<hex>`` session segment) → ``\\\\server\\share\\…``.
* Anything else starting with ``\\Device\\`` stays as recorded and is counted as an unknown device.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

_DEVICE = "\\device\\"
_MUP_PREFIXES = ("\\device\\mup\\", "\\device\\lanmanredirector\\", "\\device\\webdavredirector\\")
# The optional provider and session segments of a redirected (UNC) path, as the redirectors log them.
_MUP_PROVIDER = re.compile(
    r"(?i)^(?:dfsclient\\|;lanmanredirector\\|;webdavredirector\\)?(?:;[A-Za-z]:[0-9a-fA-F]+\\)?"
)
_DRIVE = re.compile(r"^[A-Za-z]:$")
_SYSTEM_DIR = "\\windows\\system32\\"


class DeviceMapError(ValueError):
    """A ``--device-map`` value that cannot be read; the message says what is wrong."""


def _pair(left: str, right: str) -> tuple[str, str]:
    """One mapping in either orientation → (NT device, drive). Trailing backslashes dropped."""
    a, b = left.strip().rstrip("\\"), right.strip().rstrip("\\")
    if _DRIVE.match(a) and b.startswith("\\"):
        return b, a.upper()
    if _DRIVE.match(b) and a.startswith("\\"):
        return a, b.upper()
    raise DeviceMapError(
        f"device map entry {left!r}={right!r}: expected a drive letter (C:) and an NT device (\\Device\\…)"
    )


def parse_device_map(spec: str) -> dict[str, str]:
    """``C:=\\Device\\HarddiskVolume3;D:=…`` or the path of a JSON object → {NT device: drive}.

    The JSON object may be keyed either way ({"C:": "\\\\Device\\\\…"} or the reverse).
    """
    text = spec.strip()
    if not text:
        raise DeviceMapError("device map is empty")
    candidate = Path(text)
    if text.endswith(".json") or (len(text) < 4096 and "=" not in text and candidate.is_file()):
        try:
            raw = json.loads(candidate.read_text("utf-8"))
        except (OSError, ValueError) as exc:
            raise DeviceMapError(f"device map file {text}: {exc}") from exc
        if not isinstance(raw, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in raw.items()
        ):
            raise DeviceMapError(f"device map file {text}: expected a JSON object of strings")
        return dict(_pair(k, v) for k, v in raw.items())
    result: dict[str, str] = {}
    for item in text.split(";"):
        if not item.strip():
            continue
        left, sep, right = item.partition("=")
        if not sep:
            raise DeviceMapError(
                f"device map entry {item!r}: expected DRIVE=DEVICE, e.g. C:=\\Device\\HarddiskVolume3"
            )
        device, drive = _pair(left, right)
        result[device] = drive
    return result


class PathResolver:
    """Converts NT paths to Defender's DOS/UNC form; learns mappings while the stream runs."""

    __slots__ = ("_converted", "_devices", "_pinned", "_system_root", "inferred", "unknown_devices")

    _CONVERTED_MAX = 16384  # distinct converted paths remembered (image loads repeat the same DLLs)

    def __init__(
        self,
        device_map: Mapping[str, str] | None = None,
        system_root: str = "C:\\Windows",
        pinned: Mapping[str, str] | None = None,
    ) -> None:
        # lower-case NT device (no trailing backslash) → drive ("C:") or UNC root
        self._devices: dict[str, str] = {}
        self._pinned: set[str] = set()
        self._system_root = system_root.rstrip("\\") or "C:\\Windows"
        self.unknown_devices = 0
        # device → drive guessed because the trace maps no volume (see ``_infer``); shown in summaries
        self.inferred: dict[str, str] = {}
        # NT path → its DOS form, for paths a mapping converted; forgotten whenever a mapping changes
        self._converted: dict[str, str] = {}
        for device, drive in (device_map or {}).items():
            self.add_mapping(device, drive)
        # Mappings the user gave (--device-map) win over anything the trace says later.
        for device, drive in (pinned or {}).items():
            key = device.rstrip("\\").lower()
            self._devices[key] = drive.rstrip("\\")
            self._pinned.add(key)

    @property
    def system_root(self) -> str:
        return self._system_root

    def add_mapping(self, nt_path: str, dos_path: str) -> None:
        """One VolumeMapping-style record (``\\Device\\HarddiskVolume2\\`` → ``C:\\``)."""
        key = nt_path.rstrip("\\").lower()
        dos = dos_path.rstrip("\\")
        if not key or key in self._pinned:
            return
        self._converted.clear()
        if key == "\\systemroot":
            if dos:
                self._system_root = dos
            return
        if key == "\\??" or not dos:
            return  # built in: \??\C:\ is already a DOS path
        self._devices[key] = dos
        if self.inferred:  # the trace's own mapping: the guess is confirmed, or withdrawn if it differs
            for device, drive in list(self.inferred.items()):
                if device == key or drive == dos:
                    del self.inferred[device]
                    if device != key:
                        self._devices.pop(device, None)

    def set_system_root(self, path: str) -> None:
        if path.strip("\\"):
            self._system_root = path.rstrip("\\")
            self._converted.clear()

    def mappings(self) -> dict[str, str]:
        return dict(self._devices)

    def to_dos(self, path: str, count: bool = True) -> str:
        """The Defender form of ``path``; unknown devices are returned unchanged and counted
        (``count=False`` for bookkeeping conversions that are retried later)."""
        if not path or path[0] != "\\":
            return path  # already C:\…, a bare name, or empty
        dos = self._converted.get(path)
        if dos is not None:
            return dos
        dos = self._convert(path, count)
        if dos is not path:
            if len(self._converted) >= self._CONVERTED_MAX:
                self._converted.clear()
            self._converted[path] = dos
        return dos

    def _convert(self, path: str, count: bool) -> str:
        if path.startswith("\\\\"):
            if path.startswith("\\\\?\\") or path.startswith("\\\\.\\"):
                return self._dos_device(path[4:])
            return path  # already UNC
        lower = path[:32].lower()
        if lower.startswith(_DEVICE):
            cut = path.find("\\", 8)
            device = (path if cut < 0 else path[:cut]).lower()
            drive = self._devices.get(device)
            if drive is not None:
                return drive if cut < 0 else drive + path[cut:]
            for prefix in _MUP_PREFIXES:
                if lower.startswith(prefix):
                    rest = _MUP_PROVIDER.sub("", path[len(prefix) :], count=1)
                    return "\\\\" + rest
            if cut > 0 and self._infer(device, path[cut:]):
                return self._devices[device] + path[cut:]
            if count:
                self.unknown_devices += 1
            return path
        if lower.startswith("\\??\\"):
            return self._dos_device(path[4:])
        if lower.startswith("\\systemroot"):
            rest = path[11:]
            if not rest or rest[0] == "\\":
                return self._system_root + rest
        if lower.startswith("\\windows"):
            rest = path[8:]
            if not rest or rest[0] == "\\":
                drive = self._system_root.split("\\", 1)[0]
                return drive + path
        return path

    def _infer(self, device: str, rest: str) -> bool:
        """A trace without volume mapping (logman, or a wpr trace cut before its merge): the volume that
        holds the system directory (the kernel's, ntdll's and every service's images) gets the system
        root's drive (SystemPaths record or header, else C:). Only when nothing maps any volume and the
        user pinned none: a real mapping replaces the guess, ``--device-map`` prevents it."""
        if self._devices or self._pinned or not rest.lower().startswith(_SYSTEM_DIR):
            return False
        drive = self._system_root.split("\\", 1)[0]
        if len(drive) != 2 or drive[1] != ":":
            return False
        self._devices[device] = drive
        self.inferred[device] = drive
        self._converted.clear()
        return True

    def _dos_device(self, rest: str) -> str:
        """What follows ``\\??\\``: ``C:\\…``, ``UNC\\srv\\share``, or a device name."""
        if rest[:4].lower() == "unc\\":
            return "\\\\" + rest[4:]
        return rest


def file_name_of(path: str) -> str:
    """The last component of a DOS, UNC or NT path."""
    return path[path.rfind("\\") + 1 :]


_HKLM = "\\registry\\machine"
_HKU = "\\registry\\user"


def registry_key(path: str) -> str:
    """``\\REGISTRY\\MACHINE\\…`` → ``HKEY_LOCAL_MACHINE\\…``; ``\\REGISTRY\\USER\\X\\…`` →
    ``HKEY_CURRENT_USER\\X\\…`` for every X (Defender's form, CORRECTIONS §8); control sets kept."""
    lower = path[:18].lower()
    if lower.startswith(_HKLM) and (len(path) == 17 or path[17] == "\\"):
        return "HKEY_LOCAL_MACHINE" + path[17:]
    if lower.startswith(_HKU) and (len(path) == 14 or path[14] == "\\"):
        return "HKEY_CURRENT_USER" + path[14:]
    return path
