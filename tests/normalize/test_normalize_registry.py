"""DeviceRegistryEvents from constructed Kernel-Registry and classic Registry events."""

from __future__ import annotations

import struct

import pytest
from normalize_builders import classic_start, ev, of, run

from etwsensor.normalize.registry import render_value

KR = "Microsoft-Windows-Kernel-Registry"
SID = "S-1-5-21-1-2-3-1001"


def open_key(
    ko: int,
    rel: str,
    base_obj: int = 0,
    base_name: str = "",
    ms: float = 1,
    create: bool = False,
    disposition: int = 2,
    status: int = 0,
):
    return ev(
        KR,
        "CreateKey" if create else "OpenKey",
        ms,
        pid=3000,
        version=0,
        BaseObject=base_obj,
        KeyObject=ko,
        Status=status,
        Disposition=disposition,
        BaseName=base_name,
        RelativeName=rel,
    )


def set_value(ko: int, name: str, reg_type: int, data: bytes, ms: float = 2, **extra: object):
    return ev(
        KR,
        "SetValueKey",
        ms,
        pid=3000,
        version=0,
        KeyObject=ko,
        Status=0,
        Type=reg_type,
        DataSize=len(data),
        KeyName="",
        ValueName=name,
        CapturedDataSize=len(data),
        CapturedData=data,
        **extra,
    )


def test_absolute_relative_name_and_value_set_constructed() -> None:
    image_path = "\\SystemRoot\\System32\\drivers\\kbdhook.sys".encode("utf-16-le") + b"\0\0"
    rows, _ = run(
        [
            classic_start(3000, 4, "sc.exe", "sc.exe create kbdhook", ms=0),
            open_key(
                0x10,
                "\\REGISTRY\\MACHINE\\SYSTEM\\CurrentControlSet\\Services\\kbdhook",
                create=True,
                disposition=1,
            ),
            set_value(0x10, "ImagePath", 2, image_path),
            ev(KR, "CloseKey", 3, pid=3000, version=0, KeyObject=0x10, Status=0, KeyName=""),
            set_value(0x10, "Start", 4, struct.pack("<I", 1), ms=4),  # after close: name is gone
        ]
    )
    created = of(rows, "DeviceRegistryEvents", "RegistryKeyCreated")
    assert [r["RegistryKey"] for r in created] == [
        "HKEY_LOCAL_MACHINE\\SYSTEM\\CurrentControlSet\\Services\\kbdhook"
    ]
    value_set = of(rows, "DeviceRegistryEvents", "RegistryValueSet")
    assert value_set[0]["RegistryKey"] == "HKEY_LOCAL_MACHINE\\SYSTEM\\CurrentControlSet\\Services\\kbdhook"
    assert value_set[0]["RegistryValueName"] == "ImagePath"
    assert value_set[0]["RegistryValueType"] == "ExpandString"
    assert value_set[0]["RegistryValueData"] == "\\SystemRoot\\System32\\drivers\\kbdhook.sys"
    assert value_set[0]["InitiatingProcessFileName"] == "sc.exe"
    assert value_set[1]["RegistryKey"] == ""  # evicted on CloseKey


def test_base_object_and_base_name_resolution_constructed() -> None:
    rows, norm = run(
        [
            open_key(0x20, "\\REGISTRY\\USER\\" + SID),
            open_key(0x21, "Software\\Microsoft\\DirectInput", base_obj=0x20),
            open_key(0x22, "MostRecentApplication", base_obj=0x21, create=True, disposition=1),
            open_key(
                0x23,
                "Run",
                base_name="\\REGISTRY\\MACHINE\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion",
                create=True,
                disposition=1,
            ),
            open_key(
                0x24, "Other", base_obj=0x99, create=True, disposition=1
            ),  # base opened before the trace
        ]
    )
    keys = [r["RegistryKey"] for r in of(rows, "DeviceRegistryEvents", "RegistryKeyCreated")]
    assert keys == [
        f"HKEY_CURRENT_USER\\{SID}\\Software\\Microsoft\\DirectInput\\MostRecentApplication",
        "HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Run",
        "Other",
    ]
    assert norm.stats()["unresolved"]["DeviceRegistryEvents"] == 3  # no process known + one relative key


def test_create_of_existing_key_or_failed_is_no_row_constructed() -> None:
    rows, _ = run(
        [
            open_key(0x30, "\\REGISTRY\\MACHINE\\SOFTWARE\\A", create=True, disposition=2),
            open_key(0x31, "\\REGISTRY\\MACHINE\\SOFTWARE\\B", create=True, disposition=1, status=0xC0000022),
        ]
    )
    assert of(rows, "DeviceRegistryEvents") == []


def test_value_and_key_deletion_fill_previous_columns_constructed() -> None:
    rows, _ = run(
        [
            open_key(0x40, "\\REGISTRY\\MACHINE\\SOFTWARE\\Vendor"),
            ev(
                KR,
                "DeleteValueKey",
                2,
                pid=3000,
                version=0,
                KeyObject=0x40,
                Status=0,
                KeyName="",
                ValueName="Old",
            ),
            ev(KR, "DeleteKey", 3, pid=3000, version=0, KeyObject=0x40, Status=0, KeyName=""),
        ]
    )
    deleted_value = of(rows, "DeviceRegistryEvents", "RegistryValueDeleted")[0]
    assert deleted_value["PreviousRegistryKey"] == "HKEY_LOCAL_MACHINE\\SOFTWARE\\Vendor"
    assert deleted_value["PreviousRegistryValueName"] == "Old"
    deleted_key = of(rows, "DeviceRegistryEvents", "RegistryKeyDeleted")[0]
    assert deleted_key["PreviousRegistryKey"] == "HKEY_LOCAL_MACHINE\\SOFTWARE\\Vendor"
    assert "RegistryKey" not in deleted_key


def test_previous_value_data_is_rendered_constructed() -> None:
    rows, _ = run(
        [
            open_key(0x50, "\\REGISTRY\\MACHINE\\SOFTWARE\\Vendor"),
            set_value(
                0x50,
                "Level",
                4,
                struct.pack("<I", 7),
                PreviousDataType=4,
                PreviousDataSize=4,
                PreviousDataCapturedSize=4,
                PreviousData=struct.pack("<I", 3),
            ),
        ]
    )
    row = of(rows, "DeviceRegistryEvents", "RegistryValueSet")[0]
    assert (row["RegistryValueData"], row["PreviousRegistryValueName"], row["PreviousRegistryValueData"]) == (
        "7",
        "Level",
        "3",
    )


@pytest.mark.parametrize(
    ("reg_type", "data", "expected"),
    [
        (1, "C:\\x.exe\0".encode("utf-16-le"), ("String", "C:\\x.exe")),
        (2, "%SystemRoot%\\a\0".encode("utf-16-le"), ("ExpandString", "%SystemRoot%\\a")),
        (3, b"\x01\xab", ("Binary", "01ab")),
        (4, struct.pack("<I", 4294967295), ("Dword", "4294967295")),
        (5, struct.pack(">I", 258), ("Dword", "258")),
        (7, "a b\0c\0\0".encode("utf-16-le"), ("MultiString", "a b c")),
        (11, struct.pack("<Q", 2**40), ("QWord", str(2**40))),
        (0, b"\x01", ("None", "")),
        (4, b"", ("Dword", "")),
        (9, b"\xff", ("Binary", "ff")),
    ],
)
def test_value_rendering(reg_type: int, data: bytes, expected: tuple[str, str]) -> None:
    assert render_value(reg_type, data) == expected


def kcb(name: str, handle: int, key: str, ms: float = 0):
    return ev(
        "Registry",
        name,
        ms,
        pid=3000,
        version=2,
        InitialTime=0,
        Status=0,
        Index=0,
        KeyHandle=handle,
        KeyName=key,
    )


def test_classic_registry_makes_rows_without_kernel_registry_constructed() -> None:
    rows, _ = run(
        [
            kcb("KCBRundownEnd", 0xA0, "\\REGISTRY\\MACHINE\\SYSTEM\\ControlSet001\\Services"),
            kcb("Create", 0xA0, "kbdhook", ms=1),
            kcb("KCBCreate", 0xA1, "\\REGISTRY\\MACHINE\\SYSTEM\\ControlSet001\\Services\\kbdhook", ms=2),
            kcb("SetValue", 0xA1, "ImagePath", ms=3),
            kcb("KCBDelete", 0xA1, "", ms=4),
            kcb("SetValue", 0xA1, "Start", ms=5),
        ]
    )
    created = of(rows, "DeviceRegistryEvents", "RegistryKeyCreated")
    assert created[0]["RegistryKey"] == "HKEY_LOCAL_MACHINE\\SYSTEM\\ControlSet001\\Services\\kbdhook"
    sets = of(rows, "DeviceRegistryEvents", "RegistryValueSet")
    assert [(r["RegistryKey"], r["RegistryValueName"]) for r in sets] == [
        ("HKEY_LOCAL_MACHINE\\SYSTEM\\ControlSet001\\Services\\kbdhook", "ImagePath"),
        ("", "Start"),
    ]


def test_with_kernel_registry_classic_only_feeds_names_constructed() -> None:
    rows, _ = run(
        [
            open_key(0x10, "\\REGISTRY\\MACHINE\\SOFTWARE"),
            kcb("KCBRundownEnd", 0xA0, "\\REGISTRY\\MACHINE\\SOFTWARE"),
            kcb("Create", 0xA0, "New", ms=1),
            kcb("SetValue", 0xA0, "X", ms=1),
        ]
    )
    assert of(rows, "DeviceRegistryEvents") == []
