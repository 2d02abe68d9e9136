"""Where the bytes of a path in a row are: on this host (live) or in a collected copy of its disks.

``HostFiles`` opens the path itself (live, on Windows; an NT device path goes through
``\\\\?\\GLOBALROOT``). ``CollectedFiles`` maps drives or NT devices to folders of a mounted image or a
KAPE/Velociraptor collection and resolves each component case-insensitively, as Windows does.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote


@dataclass(frozen=True, slots=True)
class FileStat:
    size: int
    mtime_ns: int
    file_id: int  # inode / NTFS file index: the same path replaced by another file changes it


class Locator:
    """Path in a row → local file; None when it cannot be located."""

    def locate(self, path: str) -> Path | None:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


class HostFiles(Locator):
    def locate(self, path: str) -> Path | None:
        if not path:
            return None
        if path.startswith("\\Device\\") and sys.platform == "win32":
            return Path("\\\\?\\GLOBALROOT" + path)
        if (len(path) > 2 and path[1] == ":") or path.startswith("\\\\"):
            return Path(path)
        return None

    def describe(self) -> str:
        return "this host"


class FilesFromError(ValueError):
    """A ``--files-from`` value that cannot be used; the message says why."""


_DRIVE = re.compile(r"^[A-Za-z]:$")
# How collectors name a drive's folder: "C" (KAPE), "C%3A" / "%5C%5C.%5CC%3A" (Velociraptor), "C:"
_DRIVE_FOLDER = re.compile(r"^(?:\\\\\.\\)?([A-Za-z])(?::)?$")


def parse_files_from(spec: str) -> dict[str, Path]:
    """``DIR``, or ``C:=DIR;D:=DIR2`` / ``\\Device\\HarddiskVolume3=DIR`` → {drive or device (lower): DIR}.

    A bare DIR that holds one folder per drive (``C``, ``C%3A`` …, as KAPE and Velociraptor lay them
    out, possibly under ``auto``/``ntfs``) maps each; otherwise DIR is the system drive's root (``C:``).
    """
    text = spec.strip()
    if not text:
        raise FilesFromError("--files-from is empty")
    if "=" not in text:
        root = Path(text)
        if not root.is_dir():
            raise FilesFromError(f"--files-from {text}: no such folder")
        return _drive_folders(root) or {"c:": root}
    out: dict[str, Path] = {}
    for item in text.split(";"):
        if not item.strip():
            continue
        key, _, folder = item.partition("=")
        key = key.strip().rstrip("\\")
        if not (_DRIVE.match(key) or key.lower().startswith("\\device\\")):
            raise FilesFromError(f"--files-from entry {item!r}: expected C:=DIR or \\Device\\…=DIR")
        where = Path(folder.strip())
        if not where.is_dir():
            raise FilesFromError(f"--files-from entry {item!r}: {where} is not a folder")
        out[key.lower()] = where
    return out


def _drive_folders(root: Path) -> dict[str, Path]:
    for base in (root, root / "auto", root / "ntfs", root / "uploads" / "auto", root / "uploads" / "ntfs"):
        if not base.is_dir():
            continue
        found: dict[str, Path] = {}
        for child in base.iterdir():
            m = _DRIVE_FOLDER.match(unquote(child.name))
            if m and child.is_dir():
                found[m.group(1).lower() + ":"] = child
        if found:
            return found
    return {}


class CollectedFiles(Locator):
    """Paths resolved under collected folders, one component at a time, ignoring case."""

    def __init__(self, roots: Mapping[str, Path], max_dirs: int = 4096) -> None:
        self.roots = dict(roots)
        self._listing: dict[Path, dict[str, str]] = {}
        self._max_dirs = max_dirs

    def describe(self) -> str:
        return ", ".join(f"{k.upper() if len(k) == 2 else k} → {v}" for k, v in sorted(self.roots.items()))

    def locate(self, path: str) -> Path | None:
        lower = path.lower()
        for key, root in self.roots.items():
            if lower.startswith(key) and (len(lower) == len(key) or lower[len(key)] == "\\"):
                return self._resolve(root, path[len(key) :].strip("\\").split("\\"))
        return None

    def _resolve(self, root: Path, parts: list[str]) -> Path | None:
        here = root
        for part in parts:
            if part in ("", ".", ".."):
                return None  # never step outside the collection
            names = self._names(here)
            actual = names.get(part.lower()) if names is not None else None
            if actual is None:
                return None
            here = here / actual
        return here

    def _names(self, folder: Path) -> dict[str, str] | None:
        names = self._listing.get(folder)
        if names is None:
            try:
                names = {n.lower(): n for n in os.listdir(folder)}
            except OSError:
                return None
            if len(self._listing) >= self._max_dirs:
                self._listing.clear()
            self._listing[folder] = names
        return names


def stat_of(path: Path) -> FileStat | None:
    try:
        st = path.stat()
    except OSError:
        return None
    if not path.is_file():
        return None
    return FileStat(st.st_size, st.st_mtime_ns, st.st_ino)
