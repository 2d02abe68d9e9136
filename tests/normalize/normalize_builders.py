"""Constructed RawEvents with the providers, names and field names real traces carry.

Tests built on these say so in their names (``..._constructed``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from etwsensor.events import RawEvent

T0 = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)

GUIDS = {
    "Process": "3d6fa8d0-fe05-11d0-9dda-00c04fd7ba7c",
    "Image": "2cb15d1d-5fc1-11d2-abe1-00a0c911f518",
    "FileIo": "90cbdc39-4a3e-11d1-84f4-0000f80464e3",
    "Registry": "ae53722e-c863-11d2-8659-00c04fa321a1",
    "SystemConfigEx": "9b79ee91-b5fd-41c0-a243-4248e266e9d0",
    "Microsoft-Windows-Kernel-Process": "22fb2cd6-0e7b-422b-a0c7-2fad1fd0e716",
    "Microsoft-Windows-Kernel-File": "edd08927-9cc4-4e65-b970-c2560fb5c289",
    "Microsoft-Windows-Kernel-Registry": "70eb4f03-c1de-4f73-a051-33d13d5413bd",
    "Microsoft-Windows-Win32k": "8c416c79-d49b-4f01-a467-e56d3aa8234c",
}

CLASSIC_OPCODES = {
    ("Process", "Start"): 1,
    ("Process", "End"): 2,
    ("Process", "DCStart"): 3,
    ("Image", "Load"): 10,
    ("Image", "UnLoad"): 2,
    ("Image", "DCStart"): 3,
    ("FileIo", "Name"): 0,
    ("FileIo", "FileCreate"): 32,
    ("FileIo", "FileDelete"): 35,
    ("FileIo", "FileRundown"): 36,
    ("FileIo", "Create"): 64,
    ("FileIo", "Cleanup"): 65,
    ("FileIo", "Close"): 66,
    ("FileIo", "Write"): 68,
    ("FileIo", "Delete"): 70,
    ("FileIo", "OperationEnd"): 76,
    ("FileIo", "DeletePath"): 79,
    ("FileIo", "RenamePath"): 80,
    ("Registry", "Create"): 10,
    ("Registry", "Open"): 11,
    ("Registry", "Delete"): 12,
    ("Registry", "SetValue"): 14,
    ("Registry", "DeleteValue"): 15,
    ("Registry", "KCBCreate"): 22,
    ("Registry", "KCBDelete"): 23,
    ("Registry", "KCBRundownEnd"): 25,
    ("SystemConfigEx", "VolumeMapping"): 35,
    ("SystemConfigEx", "SystemPaths"): 33,
}
MANIFEST_IDS = {
    ("Microsoft-Windows-Kernel-Process", "ProcessStart"): 1,
    ("Microsoft-Windows-Kernel-Process", "ProcessStop"): 2,
    ("Microsoft-Windows-Kernel-Process", "ImageLoad"): 5,
    ("Microsoft-Windows-Kernel-Process", "ImageUnload"): 6,
    ("Microsoft-Windows-Kernel-Process", "ProcessRundown"): 15,
    ("Microsoft-Windows-Kernel-File", "NameCreate"): 10,
    ("Microsoft-Windows-Kernel-File", "NameDelete"): 11,
    ("Microsoft-Windows-Kernel-File", "Create"): 12,
    ("Microsoft-Windows-Kernel-File", "Cleanup"): 13,
    ("Microsoft-Windows-Kernel-File", "Close"): 14,
    ("Microsoft-Windows-Kernel-File", "Write"): 16,
    ("Microsoft-Windows-Kernel-File", "SetDelete"): 18,
    ("Microsoft-Windows-Kernel-File", "OperationEnd"): 24,
    ("Microsoft-Windows-Kernel-File", "DeletePath"): 26,
    ("Microsoft-Windows-Kernel-File", "RenamePath"): 27,
    ("Microsoft-Windows-Kernel-File", "CreateNewFile"): 30,
    ("Microsoft-Windows-Kernel-Registry", "CreateKey"): 1,
    ("Microsoft-Windows-Kernel-Registry", "OpenKey"): 2,
    ("Microsoft-Windows-Kernel-Registry", "DeleteKey"): 3,
    ("Microsoft-Windows-Kernel-Registry", "SetValueKey"): 5,
    ("Microsoft-Windows-Kernel-Registry", "DeleteValueKey"): 6,
    ("Microsoft-Windows-Kernel-Registry", "CloseKey"): 13,
    ("Microsoft-Windows-Win32k", "RegisterRawInputDevices"): 1001,
    ("Microsoft-Windows-Win32k", "SetWindowsHookEx"): 1002,
    ("Microsoft-Windows-Win32k", "GetAsyncKeyState"): 1003,
}


def ev(provider: str, name: str, ms: float = 0, pid: int = 4, version: int = 1, **fields: Any) -> RawEvent:
    """One decoded event ``ms`` milliseconds after T0."""
    key = (provider, name)
    manifest = key in MANIFEST_IDS
    return RawEvent(
        guid=GUIDS[provider],
        provider=provider,
        name=name,
        id=MANIFEST_IDS[key] if manifest else None,
        opcode=None if manifest else CLASSIC_OPCODES[key],
        version=version,
        ts=T0 + timedelta(milliseconds=ms),
        pid=pid,
        tid=pid + 4,
        cpu=0,
        fields=dict(fields),
    )


def classic_start(
    pid: int,
    ppid: int,
    image: str,
    cmd: str,
    ms: float = 0,
    key: int | None = None,
    sid: str = "S-1-5-21-1-2-3-1001",
    name: str = "Start",
) -> RawEvent:
    return ev(
        "Process",
        name,
        ms,
        pid=pid,
        version=4,
        UniqueProcessKey=key or 0xFFFF0000 + pid,
        ProcessId=pid,
        ParentId=ppid,
        SessionId=1,
        ExitStatus=259,
        UserSID=sid,
        ImageFileName=image,
        CommandLine=cmd,
    )


def manifest_start(
    pid: int,
    ppid: int,
    nt_image: str,
    ms: float = 0,
    create_time: datetime | None = None,
    name: str = "ProcessStart",
    label: str = "S-1-16-8192",
    elevation: int = 3,
) -> RawEvent:
    return ev(
        "Microsoft-Windows-Kernel-Process",
        name,
        ms,
        pid=ppid,
        version=3,
        ProcessID=pid,
        CreateTime=create_time or T0 + timedelta(milliseconds=ms),
        ParentProcessID=ppid,
        SessionID=1,
        Flags=0,
        ProcessTokenElevationType=elevation,
        ProcessTokenIsElevated=0,
        MandatoryLabel=label,
        ImageName=nt_image,
    )


def image_load(pid: int, nt_path: str, base: int, ms: float = 0, name: str = "Load") -> RawEvent:
    return ev(
        "Image",
        name,
        ms,
        pid=pid,
        version=3,
        ImageBase=base,
        ImageSize=0x1000,
        ProcessId=pid,
        FileName=nt_path,
    )


def run(events: list[RawEvent], normalizer: Any = None) -> tuple[list[tuple[str, dict[str, Any]]], Any]:
    """All rows a stream gives (flushed at the end), and the normalizer for its stats."""
    from etwsensor.normalize import Normalizer
    from etwsensor.sources.header import HostInfo, RecordingHeader

    if normalizer is None:
        header = RecordingHeader(
            host=HostInfo(name="ws01.contoso.test", device_id="dev-1"),
            device_map={"\\Device\\HarddiskVolume3": "C:"},
            sids={"S-1-5-21-1-2-3-1001": "CONTOSO\\alice"},
        )
        normalizer = Normalizer(header)
    rows: list[tuple[str, dict[str, Any]]] = []
    for event in events:
        rows.extend(normalizer.process(event))
    rows.extend(normalizer.flush())
    return rows, normalizer


def of(rows: list[tuple[str, dict[str, Any]]], table: str, action: str | None = None) -> list[dict[str, Any]]:
    return [r for t, r in rows if t == table and (action is None or r["ActionType"] == action)]
