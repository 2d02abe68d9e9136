"""Decoded fields of the real Windows 8 x64 perfview trace against PerfView's own decoding (its baseline).

The baseline is TraceEvent's text rendering: values cut with "..." compare as prefixes, numbers lose
their thousands commas, enums (CreateDisposition, ShareAccess) compare after mapping our raw value to
TraceEvent's name, and TraceEvent shows file names with device paths already mapped to drive letters.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from etwsensor.events import DecodeStatus, RawEvent
from etwsensor.sources import open_source

DATA = Path(__file__).parents[1] / "data" / "etl"
ETL = DATA / "perfview_net.4.5.2.x64.etl"
EVENT = re.compile(r"^EVENT (?P<ms>[\d,]+\.\d+): (?P<type>[^ ]+(?: Kernel)?/[^ ]+) (?P<rest>.*)$")


@cache
def decoded() -> tuple[datetime, tuple[RawEvent, ...], dict[str, Any]]:
    src = open_source(ETL)
    events = tuple(src.events())
    assert src.header.start is not None
    return src.header.start, events, src.stats.as_json()


@cache
def baseline() -> tuple[list[tuple[float, str, dict[str, str]]], dict[str, int]]:
    lines = json.loads((DATA / "perfview_net.4.5.2.x64.baseline.json").read_text(encoding="utf-8"))["lines"]
    events, counts = [], {}
    for line in lines:
        if line.startswith("COUNT "):
            name, n = line[6:].rsplit(":", 1)
            counts[name] = int(n)
            continue
        m = EVENT.match(line)
        if m:
            fields = dict(kv.split("=", 1) for kv in m["rest"].rstrip("; ").split("; ") if "=" in kv)
            events.append((float(m["ms"].replace(",", "")), m["type"], fields))
    return events, counts


# Our (provider, event name) for TraceEvent's event type names.
TYPES = {
    "Windows Kernel/Process/Start": ("Process", "Start"),
    "Windows Kernel/Process/DCStart": ("Process", "DCStart"),
    "Windows Kernel/Process/DCStop": ("Process", "DCEnd"),
    "Windows Kernel/Process/Stop": ("Process", "End"),
    "Windows Kernel/Process/Defunct": ("Process", "Defunct"),
    "Windows Kernel/Image/Load": ("Image", "Load"),
    "Windows Kernel/Image/DCStart": ("Image", "DCStart"),
    "Windows Kernel/Image/DCStop": ("Image", "DCEnd"),
    "Windows Kernel/Image/Unload": ("Image", "UnLoad"),
    "Windows Kernel/SysConfig/VolumeMapping": ("SystemConfigEx", "VolumeMapping"),
    "Windows Kernel/SysConfig/SystemPaths": ("SystemConfigEx", "SystemPaths"),
    "Microsoft-Windows-Kernel-Process/ProcessStart/Start": (
        "Microsoft-Windows-Kernel-Process",
        "ProcessStart",
    ),
    "Microsoft-Windows-Kernel-Process/ProcessStop/Stop": ("Microsoft-Windows-Kernel-Process", "ProcessStop"),
    "Microsoft-Windows-Kernel-File/Create": ("Microsoft-Windows-Kernel-File", "Create"),
}
# TraceEvent field name -> ours, per provider kind.
RENAMES = {
    "ProcessID": "ProcessId",
    "ParentID": "ParentId",
    "SessionID": "SessionId",
    "PageDirectoryBase": "DirectoryTableBase",
    "IrpPtr": "Irp",
    "FileAttributes": "CreateAttributes",
}
CHECKED = {
    ("Process", "Start"): [
        "ProcessID",
        "ParentID",
        "ImageFileName",
        "SessionID",
        "ExitStatus",
        "UniqueProcessKey",
        "CommandLine",
        "PageDirectoryBase",
    ],
    ("Process", "DCStart"): [
        "ProcessID",
        "ParentID",
        "ImageFileName",
        "SessionID",
        "ExitStatus",
        "UniqueProcessKey",
        "CommandLine",
        "PageDirectoryBase",
    ],
    ("Image", "Load"): [
        "ImageBase",
        "ImageSize",
        "ImageChecksum",
        "TimeDateStamp",
        "DefaultBase",
        "FileName",
    ],
    ("SystemConfigEx", "VolumeMapping"): ["NtPath", "DosPath"],
    ("SystemConfigEx", "SystemPaths"): ["SystemDirectory", "SystemWindowsDirectory"],
    ("Microsoft-Windows-Kernel-Process", "ProcessStart"): [
        "ProcessID",
        "ParentProcessID",
        "SessionID",
        "Flags",
        "CreateTime",
        "ImageName",
    ],
    ("Microsoft-Windows-Kernel-Process", "ProcessStop"): [
        "ExitCode",
        "TokenElevationType",
        "HandleCount",
        "CommitCharge",
        "CommitPeak",
    ],
    ("Microsoft-Windows-Kernel-File", "Create"): [
        "IrpPtr",
        "FileObject",
        "CreateOptions",
        "CreateDisposition",
        "ShareAccess",
        "FileName",
    ],
}
DISPOSITIONS = ["SUPERSEDE", "OPEN_EXISTING", "CREATE", "OPEN_IF", "OVERWRITE", "OVERWRITE_IF"]
SHARE = [(1, "Read"), (2, "Write"), (4, "Delete")]


def share_access(v: int) -> str:
    """TraceEvent's rendering of FILE_SHARE_* flags ("ReadWrite, Delete")."""
    names = [n for bit, n in SHARE if v & bit]
    if "Read" in names and "Write" in names:
        names = ["ReadWrite", *[n for n in names if n == "Delete"]]
    return ", ".join(names) or "None"


def dos_path(nt: str, volumes: list[tuple[str, str]]) -> str:
    """The device mapping TraceEvent applies to file names: VolumeMapping records, and Mup → UNC."""
    for ntp, dosp in volumes:
        if dosp and nt.startswith(ntp):
            return dosp + nt[len(ntp) :]
    if nt.startswith("\\Windows\\"):  # device-less: on the system drive
        return dict(volumes)["\\SystemRoot\\"][:2] + nt
    return "\\\\" + nt[len("\\Device\\Mup\\") :] if nt.startswith("\\Device\\Mup\\") else nt


def our_name(name: str, ev: RawEvent) -> str:
    renamed = RENAMES.get(name, name)
    return renamed if renamed in ev.fields else name


def ours_as_text(name: str, ev: RawEvent, volumes: list[tuple[str, str]]) -> str:
    f = ev.fields
    if name == "CreateDisposition":
        return DISPOSITIONS[f["CreateOptions"] >> 24]
    if name == "ShareAccess":
        return share_access(f["ShareAccess"])
    v = f[our_name(name, ev)]
    if isinstance(v, datetime):
        return v.strftime("%y/%m/%d %H:%M:%S.%f")
    if name in ("FileName",):
        return dos_path(v, volumes)
    return str(v)


def baseline_matches(expected: str, ours: str, ours_int: int | None) -> bool:
    if expected.endswith("..."):
        return ours.startswith(expected[:-3])
    if expected.startswith("0x"):
        return ours_int is not None and ours_int == int(expected, 16)
    if re.fullmatch(r"-?[\d,]+", expected) and ours_int is not None:
        want = int(expected.replace(",", ""))
        return ours_int in (want, want & 0xFFFFFFFF)  # TraceEvent prints some UInt32s signed
    return expected == ours


def pick(
    events: tuple[RawEvent, ...], start: datetime, provider: str, name: str, ms: float, fields: dict[str, str]
) -> RawEvent:
    cands = [
        e
        for e in events
        if (e.provider, e.name) == (provider, name)
        and abs((e.ts - start).total_seconds() * 1000 - ms) < 0.0015
    ]
    if len(cands) > 1 and "NtPath" in fields:  # VolumeMapping records all stand at time 0
        cands = [e for e in cands if e.fields["NtPath"].startswith(fields["NtPath"].removesuffix("..."))]
    assert cands, (provider, name, ms)
    return cands[0]


def test_no_decode_errors_on_the_real_trace() -> None:
    _, events, stats = decoded()
    assert stats["decode_errors"] == 0 and stats["undecoded"] == 0
    assert all(e.status is DecodeStatus.OK for e in events)


def test_counts_agree_with_every_baseline_count_line_of_our_types() -> None:
    _, events, _ = decoded()
    _, counts = baseline()
    ours = Counter((e.provider, e.name) for e in events)
    for their, mine in TYPES.items():
        assert ours[mine] == counts[their], their
    # Classic FileIo is not in the baseline; these are the trace's own totals.
    assert (
        ours[("FileIo", "FileRundown")],
        ours[("FileIo", "FileCreate")],
        ours[("FileIo", "FileDelete")],
    ) == (
        3054,
        16,
        14,
    )


def test_fields_agree_with_perfviews_decoding() -> None:
    start, events, _ = decoded()
    volumes = [(e.fields["NtPath"], e.fields["DosPath"]) for e in events if e.name == "VolumeMapping"]
    checked = Counter[str]()
    for ms, typ, fields in baseline()[0]:
        if typ not in TYPES or TYPES[typ] not in CHECKED:
            continue
        ev = pick(events, start, *TYPES[typ], ms, fields)
        if ev.provider != "Process":  # TraceEvent shows the new process's id as PID of Process events
            assert fields["PID"] in (str(ev.pid), "-1"), (typ, ms, ev.pid)
        for name in CHECKED[TYPES[typ]]:
            expected = fields[name]
            if name == "CreateOptions" and not re.fullmatch(r"[\d,]+", expected):
                continue  # TraceEvent renders some V1 CreateOptions through a wrong map: nothing to compare
            ours = ours_as_text(name, ev, volumes)
            raw = ev.fields.get(our_name(name, ev))
            if name == "CreateOptions":
                raw = raw & 0xFFFFFF  # TraceEvent shows the options without the disposition byte
            ours_int = raw if isinstance(raw, int) else None
            assert baseline_matches(expected, ours, ours_int), (typ, ms, name, expected, ours)
            checked[typ] += 1
    # Every type of the list was compared on real records.
    assert set(checked) == {t for t, mine in TYPES.items() if mine in CHECKED}
    assert sum(checked.values()) >= 100


@pytest.mark.parametrize("pid", [3676])
def test_the_test_process_start_carries_its_command_line_and_sid(pid: int) -> None:
    _, events, _ = decoded()
    (start,) = [e for e in events if e.provider == "Process" and e.name == "Start"]
    assert start.fields["ProcessId"] == pid and start.fields["ParentId"] == 3508
    assert start.fields["CommandLine"] == "Test.x64.exe"
    assert re.fullmatch(r"S-1-5-21(-\d+){4}", start.fields["UserSID"])
    (kstart,) = [e for e in events if e.name == "ProcessStart"]
    assert kstart.fields["ImageName"].startswith("\\Device\\Mup\\")
    assert kstart.fields["CreateTime"].isoformat().startswith("2020-07-29T00:07:03.356")
