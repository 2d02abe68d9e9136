"""A collected disk for the demo trace: real PE files (tests/data/pe) under some of its image paths."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "data" / "pe"
DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo.jsonl.zst"

# image path in the demo trace → the file standing in for it (folder case differs on purpose: Windows
# paths ignore case, the collection's file system does not)
STAND_INS = {
    "C:\\Windows\\explorer.exe": ("C/windows/EXPLORER.EXE", "t64.exe"),
    "C:\\Windows\\System32\\notepad.exe": ("C/windows/SYSTEM32/notepad.exe", "w64.exe"),
    "C:\\Windows\\System32\\svchost.exe": ("C/windows/SYSTEM32/svchost.exe", "shimx64.efi"),
    "C:\\Windows\\System32\\reg.exe": ("C/windows/SYSTEM32/Reg.exe", "cli-64.exe"),
}


def make_collection(root: Path) -> Path:
    """KAPE-like layout: one folder per drive letter."""
    for rel, source in STAND_INS.values():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(DATA / source, target)
    return root


def sha256_of(image: str) -> str:
    return hashlib.sha256((DATA / STAND_INS[image][1]).read_bytes()).hexdigest()
