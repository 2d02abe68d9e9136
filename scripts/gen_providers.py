#!/usr/bin/env python3
"""Regenerate providers/*.yaml from the Windows manifest dumps, with CORRECTIONS.md applied.

Developer tool: reads ../shared/reference/etw/*.tsv (jdu2600/Windows10EtwEvents dumps) and writes one
YAML file per provider. The YAML files are the source of truth the package ships; this script only
documents how they were made and keeps the corrections in one reviewable place.

    python scripts/gen_providers.py [--tsv-dir ../shared/reference/etw] [--out providers]
"""

from __future__ import annotations

import argparse
import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

# --- what we consume ---------------------------------------------------------------------------------------

KERNEL_PROCESS_EVENTS = {1, 2, 5, 6, 15}
KERNEL_FILE_EVENTS = set(range(10, 31))
KERNEL_REGISTRY_EVENTS = set(range(1, 16))
# The AuditApiCalls events behind DeviceEvents' keylogging ActionTypes, and no others (1000, SetWinEventHook,
# shares the keyword but no table uses it).
WIN32K_EVENTS = {1001, 1002, 1003}

# Classic classes: opcode -> versions we decode (CORRECTIONS §4 lists the opcodes).
CLASSIC_PROCESS = {1: None, 2: None, 3: None, 4: None, 11: None, 39: None}  # None: every version >= 2
CLASSIC_IMAGE = {10: None, 2: None, 3: None, 4: None}
CLASSIC_REGISTRY = {op: None for op in (10, 11, 12, 13, 14, 15, 16, 20, 22, 23, 24, 25, 27)}
CLASSIC_FILEIO = {op: None for op in (0, 32, 35, 36, 64, 65, 66, 67, 68, 69, 70, 71, 72, 74, 76, 79, 80, 81)}

# --- keyword masks (peers-and-etw-facts.md §F1, §F3, §F4; kernel flags from evntrace.h) --------------------

KEYWORDS = {
    "Microsoft-Windows-Kernel-Process": {
        "WINEVENT_KEYWORD_PROCESS": 0x10,
        "WINEVENT_KEYWORD_THREAD": 0x20,
        "WINEVENT_KEYWORD_IMAGE": 0x40,
        "WINEVENT_KEYWORD_CPU_PRIORITY": 0x80,
        "WINEVENT_KEYWORD_OTHER_PRIORITY": 0x100,
        "WINEVENT_KEYWORD_PROCESS_FREEZE": 0x200,
        "WINEVENT_KEYWORD_JOB": 0x400,
        "WINEVENT_KEYWORD_ENABLE_PROCESS_TRACING_CALLBACKS": 0x800,
        "WINEVENT_KEYWORD_JOB_IO": 0x1000,
        "WINEVENT_KEYWORD_WORK_ON_BEHALF": 0x2000,
        "WINEVENT_KEYWORD_JOB_SILO": 0x4000,
    },
    "Microsoft-Windows-Kernel-File": {
        "KERNEL_FILE_KEYWORD_FILENAME": 0x10,
        "KERNEL_FILE_KEYWORD_FILEIO": 0x20,
        "KERNEL_FILE_KEYWORD_OP_END": 0x40,
        "KERNEL_FILE_KEYWORD_CREATE": 0x80,
        "KERNEL_FILE_KEYWORD_READ": 0x100,
        "KERNEL_FILE_KEYWORD_WRITE": 0x200,
        "KERNEL_FILE_KEYWORD_DELETE_PATH": 0x400,
        "KERNEL_FILE_KEYWORD_RENAME_SETLINK_PATH": 0x800,
        "KERNEL_FILE_KEYWORD_CREATE_NEW_FILE": 0x1000,
    },
    "Microsoft-Windows-Kernel-Registry": {
        "CloseKey": 0x1,
        "QuerySecurityKey": 0x2,
        "SetSecurityKey": 0x4,
        "EnumerateValueKey": 0x10,
        "QueryMultipleValueKey": 0x20,
        "SetInformationKey": 0x40,
        "FlushKey": 0x80,
        "SetValueKey": 0x100,
        "DeleteValueKey": 0x200,
        "QueryValueKey": 0x400,
        "EnumerateKey": 0x800,
        "CreateKey": 0x1000,
        "OpenKey": 0x2000,
        "DeleteKey": 0x4000,
        "QueryKey": 0x8000,
    },
    # peers-and-etw-facts.md §4.11; the manifest dump names the keyword but not its value.
    "Microsoft-Windows-Win32k": {"AuditApiCalls": 0x400},
}
# EVENT_TRACE_FLAG_* (evntrace.h): classic classes are enabled by these flags, not keywords.
ENABLE_FLAGS = {
    "Process": {"PROCESS": 0x1},
    "Image": {"IMAGE_LOAD": 0x4},
    "Registry": {"REGISTRY": 0x20000},
    "FileIo": {"DISK_IO": 0x100, "DISK_FILE_IO": 0x200, "FILE_IO": 0x2000000, "FILE_IO_INIT": 0x4000000},
}

GUIDS = {
    "Microsoft-Windows-Kernel-Process": "22fb2cd6-0e7b-422b-a0c7-2fad1fd0e716",
    "Microsoft-Windows-Kernel-File": "edd08927-9cc4-4e65-b970-c2560fb5c289",
    "Microsoft-Windows-Kernel-Registry": "70eb4f03-c1de-4f73-a051-33d13d5413bd",
    "Microsoft-Windows-Win32k": "8c416c79-d49b-4f01-a467-e56d3aa8234c",
    "Process": "3d6fa8d0-fe05-11d0-9dda-00c04fd7ba7c",
    "Image": "2cb15d1d-5fc1-11d2-abe1-00a0c911f518",
    "Registry": "ae53722e-c863-11d2-8659-00c04fa321a1",
    "FileIo": "90cbdc39-4a3e-11d1-84f4-0000f80464e3",
    "SystemConfigEx": "9b79ee91-b5fd-41c0-a243-4248e266e9d0",
}

# --- CORRECTIONS.md §1–2 for the classic dump -------------------------------------------------------

POINTER_FIELDS = {
    "Process": {"UniqueProcessKey", "DirectoryTableBase"},
    "Image": {"ImageBase", "ImageSize", "DefaultBase"},
    "FileIo": {"IrpPtr", "FileObject", "FileKey", "ExtraInfo"},
    "Registry": {"KeyHandle"},
}
ANSI_FIELDS = {"Process": {"ImageFileName"}}
CLASSIC_TYPES = {"SInt8": "Int8", "SInt32": "Int32", "SInt64": "Int64", "String": "UnicodeString"}
EVENT_NAME_FIXES = {"DletePath": "DeletePath"}
# Manifest events the dump names only by task ("task_01001"): the API each one audits.
MANIFEST_EVENT_NAMES = {
    ("Microsoft-Windows-Win32k", 1001): "RegisterRawInputDevices",
    ("Microsoft-Windows-Win32k", 1002): "SetWindowsHookEx",
    ("Microsoft-Windows-Win32k", 1003): "GetAsyncKeyState",
}


@dataclass
class Version:
    version: int
    fields: list[tuple[str, str]]


@dataclass
class Event:
    key: int
    name: str
    keywords: list[str] = field(default_factory=list)
    versions: list[Version] = field(default_factory=list)


SIGNATURE = re.compile(r"^(?P<name>[^(]*)\((?P<fields>.*)\)$")


def parse_fields(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        typ, name = part.split()
        out.append((name, typ))
    return out


def binary_counts(fields: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Manifest Binary fields are counted by the UInt16 field right before them (CapturedDataSize …)."""
    out: list[tuple[str, str]] = []
    for i, (name, typ) in enumerate(fields):
        if typ == "Binary":
            count_name = fields[i - 1][0]
            typ = f"Binary, count: {count_name}"
        out.append((name, typ))
    return out


def manifest_events(tsv: Path, provider: str, wanted: set[int]) -> list[Event]:
    events: dict[int, Event] = {}
    with tsv.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            eid = int(row["event_id"])
            if eid not in wanted:
                continue
            m = SIGNATURE.match(row["event(fields)"])
            assert m, row
            name = MANIFEST_EVENT_NAMES.get((provider, eid))
            name = name or re.sub(r"_V\d+$", "", m["name"]).removeprefix("task_0")
            ev = events.setdefault(eid, Event(eid, name, row["keywords"].split()))
            ev.versions.append(Version(int(row["version"]), binary_counts(parse_fields(m["fields"]))))
    return [events[k] for k in sorted(events)]


def classic_events(tsv: Path, klass: str, wanted: dict[int, None]) -> list[Event]:
    guid = "{" + GUIDS[klass] + "}"
    events: dict[int, Event] = {}
    with tsv.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            if row["category"] != guid:
                continue
            op, version = int(row["event_id"]), int(row["version"])
            if op not in wanted or version < 2:
                continue
            m = SIGNATURE.match(row["event(fields)"])
            assert m, row
            name = EVENT_NAME_FIXES.get(row["event_type"], row["event_type"])
            fields = []
            for fname, typ in parse_fields(m["fields"]):
                if fname in POINTER_FIELDS.get(klass, set()) or (klass, fname, version) == (
                    "FileIo",
                    "TTID",
                    2,
                ):
                    typ = "Pointer"
                elif typ == "Object" and fname == "UserSID":
                    typ = "TokenUser"
                elif typ == "String" and fname in ANSI_FIELDS.get(klass, set()):
                    typ = "AnsiString"
                typ = CLASSIC_TYPES.get(typ, typ)
                fields.append((fname, typ))
            events.setdefault(op, Event(op, name)).versions.append(Version(version, fields))
    return [events[k] for k in sorted(events)]


def system_config_ex() -> list[Event]:
    # Not in the manifest dumps: written by KernelTraceControl when xperf/WPR merges a trace (CORRECTIONS §3).
    return [
        Event(
            33,
            "SystemPaths",
            [],
            [Version(0, [("SystemDirectory", "UnicodeString"), ("SystemWindowsDirectory", "UnicodeString")])],
        ),
        Event(
            35, "VolumeMapping", [], [Version(0, [("NtPath", "UnicodeString"), ("DosPath", "UnicodeString")])]
        ),
    ]


def render(name: str, kind: str, source: str, events: list[Event], header_comment: str) -> str:
    key = "id" if kind == "manifest" else "opcode"
    lines = [
        f"# {header_comment}",
        f"# Generated by scripts/gen_providers.py from {source}; edit with care.",
        f"name: {name}",
        f"guid: {GUIDS[name]}",
        f"kind: {kind}",
    ]
    if name in KEYWORDS:
        lines.append("keywords:")
        lines += [f"  {k}: 0x{v:x}" for k, v in KEYWORDS[name].items()]
    if name in ENABLE_FLAGS:
        lines.append("enable_flags:")
        lines += [f"  {k}: 0x{v:x}" for k, v in ENABLE_FLAGS[name].items()]
    lines.append("events:")
    for ev in events:
        lines.append(f"  - {key}: {ev.key}")
        lines.append(f"    name: {ev.name}")
        if ev.keywords:
            lines.append(f"    keywords: [{', '.join(ev.keywords)}]")
        lines.append("    versions:")
        for v in ev.versions:
            lines.append(f"      - version: {v.version}")
            if not v.fields:
                lines.append("        fields: []")
                continue
            lines.append("        fields:")
            lines += [f"          - {{name: {n}, type: {t}}}" for n, t in v.fields]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tsv-dir", type=Path, default=Path("../shared/reference/etw"))
    ap.add_argument("--out", type=Path, default=Path("providers"))
    args = ap.parse_args()
    d, out = args.tsv_dir, args.out
    out.mkdir(exist_ok=True)
    manifests = [
        (
            "Microsoft-Windows-Kernel-Process",
            KERNEL_PROCESS_EVENTS,
            "process starts, stops, image loads, rundown",
        ),
        (
            "Microsoft-Windows-Kernel-File",
            KERNEL_FILE_EVENTS,
            "file creates, writes, deletes, renames, names",
        ),
        (
            "Microsoft-Windows-Kernel-Registry",
            KERNEL_REGISTRY_EVENTS,
            "registry keys and values by KeyObject",
        ),
        (
            "Microsoft-Windows-Win32k",
            WIN32K_EVENTS,
            "API audit events (keyword AuditApiCalls) behind DeviceEvents' keylogging rows",
        ),
    ]
    for name, wanted, what in manifests:
        tsv = d / f"{name}.tsv"
        text = render(name, "manifest", tsv.name, manifest_events(tsv, name, wanted), f"{name}: {what}.")
        (out / f"{name}.yaml").write_text(text, encoding="utf-8")
    classic_tsv = d / "Windows_Kernel_Trace.classic.tsv"
    classics = [
        (
            "Process",
            CLASSIC_PROCESS,
            "classic kernel Process class: the only source of command lines and SIDs",
        ),
        ("Image", CLASSIC_IMAGE, "classic kernel Image class: image loads and rundown"),
        ("Registry", CLASSIC_REGISTRY, "classic kernel Registry class: operations by KCB, KCB names"),
        ("FileIo", CLASSIC_FILEIO, "classic kernel FileIo class: operations by FileObject, file names"),
    ]
    for name, wanted, what in classics:
        text = render(
            name, "classic", classic_tsv.name, classic_events(classic_tsv, name, wanted), what + "."
        )
        (out / f"Kernel-{name}.classic.yaml").write_text(text, encoding="utf-8")
    text = render(
        "SystemConfigEx",
        "classic",
        "CORRECTIONS.md §3",
        system_config_ex(),
        "SystemConfigEx: volume mapping written when xperf/WPR merges a trace.",
    )
    (out / "Kernel-SystemConfigEx.classic.yaml").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
