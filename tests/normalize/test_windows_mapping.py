"""Sysmon / Security event → Defender row rules, on constructed flat-JSON events (the OTRF form) run
through the public reader and normalizer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from etwsensor.normalize import iter_rows
from etwsensor.normalize.windows_events import registry_key_of, split_user, split_value, value_of_details

SYSMON = "Microsoft-Windows-Sysmon/Operational"


def sysmon(event_id: int, utc: str, **fields: Any) -> dict[str, Any]:
    return {
        "EventID": event_id,
        "Channel": SYSMON,
        "SourceName": "Microsoft-Windows-Sysmon",
        "Hostname": "WS01.lab.local",
        "UtcTime": f"2024-03-01 10:00:{utc}",
        **fields,
    }


def security(event_id: int, ts: str, **fields: Any) -> dict[str, Any]:
    return {
        "EventID": event_id,
        "Channel": "Security",
        "SourceName": "Microsoft-Windows-Security-Auditing",
        "Hostname": "WS01.lab.local",
        "@timestamp": f"2024-03-01T10:00:{ts}Z",
        **fields,
    }


def rows(tmp_path: Path, events: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    path = tmp_path / "events.json"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return list(iter_rows(path))


RUN = "HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Run"
SHARED = "HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\SharedDLLs"
LAYERS = "HKU\\S-1-5-21-1\\Software\\Microsoft\\Windows NT\\CurrentVersion\\AppCompatFlags\\Layers"


@pytest.mark.parametrize(
    ("target", "key", "name"),
    [
        (RUN + "\\Updater", RUN, "Updater"),
        ("HKLM\\SOFTWARE\\Classes\\x\\(Default)", "HKLM\\SOFTWARE\\Classes\\x", ""),
        (SHARED + "\\C:\\Windows\\a b.dll", SHARED, "C:\\Windows\\a b.dll"),
        (LAYERS + "\\C:\\x\\y.exe", LAYERS, "C:\\x\\y.exe"),
        (
            "HKLM\\SOFTWARE\\V\\Paths\\\\\\srv\\share\\t.exe",
            "HKLM\\SOFTWARE\\V\\Paths",
            "\\\\srv\\share\\t.exe",
        ),
    ],
)
def test_target_object_split(target: str, key: str, name: str) -> None:
    assert split_value(target) == (key, name)


def test_registry_roots_in_defender_form() -> None:
    assert registry_key_of("HKLM\\SYSTEM\\CurrentControlSet\\Services\\x") == (
        "HKEY_LOCAL_MACHINE\\SYSTEM\\CurrentControlSet\\Services\\x"
    )
    assert registry_key_of("HKU\\S-1-5-21-1\\Software") == "HKEY_CURRENT_USER\\S-1-5-21-1\\Software"
    assert registry_key_of("HKCR\\exefile\\shell") == "HKEY_LOCAL_MACHINE\\SOFTWARE\\Classes\\exefile\\shell"
    assert registry_key_of("\\REGISTRY\\MACHINE\\SOFTWARE\\x") == "HKEY_LOCAL_MACHINE\\SOFTWARE\\x"
    assert registry_key_of("\\REGISTRY\\USER\\S-1-5-18\\x") == "HKEY_CURRENT_USER\\S-1-5-18\\x"
    assert registry_key_of("HKLMX\\a") == "HKLMX\\a"


def test_details_to_type_and_data() -> None:
    assert value_of_details("DWORD (0x00000001)") == ("Dword", "1")
    assert value_of_details("DWORD (0xffffffff)") == ("Dword", "4294967295")
    assert value_of_details("QWORD (0x00000001-0x00000002)") == ("QWord", str((1 << 32) | 2))
    assert value_of_details("Binary Data") == ("Binary", "")
    assert value_of_details("(Empty)") == ("String", "")
    assert value_of_details("C:\\evil.exe -run") == ("String", "C:\\evil.exe -run")


def test_accounts() -> None:
    assert split_user("NT AUTHORITY\\SYSTEM") == ("nt authority", "system", "S-1-5-18")
    assert split_user("LAB\\alice") == ("LAB", "alice", "")
    assert split_user("-") == ("", "", "")


def test_process_guid_links_children_and_later_events(tmp_path: Path) -> None:
    parent = "{11111111-0000-0000-0000-000000000001}"
    child = "{11111111-0000-0000-0000-000000000002}"
    out = rows(
        tmp_path,
        [
            sysmon(1, "00.000", ProcessGuid=parent, ProcessId=100, Image="C:\\Windows\\explorer.exe",
                   CommandLine="explorer.exe", User="LAB\\alice", IntegrityLevel="Medium", LogonId="0x10",
                   Hashes="SHA1=AA,MD5=BB,SHA256=CC,IMPHASH=DD", Company="Microsoft Corporation",
                   OriginalFileName="EXPLORER.EXE", ParentProcessGuid="{11111111-0000-0000-0000-00000000}",
                   ParentProcessId=50, ParentImage="C:\\Windows\\System32\\userinit.exe"),
            sysmon(1, "01.000", ProcessGuid=child, ProcessId=200, Image="C:\\Windows\\System32\\cmd.exe",
                   CommandLine="cmd /c whoami", User="LAB\\alice", IntegrityLevel="High",
                   ParentProcessGuid=parent.lower().strip("{}"), ParentProcessId=100,
                   ParentImage="C:\\Windows\\explorer.exe", ParentCommandLine="ignored: the table knows it"),
            sysmon(11, "02.000", ProcessGuid=child, ProcessId=200, Image="C:\\Windows\\System32\\cmd.exe",
                   TargetFilename="C:\\Users\\alice\\out.txt"),
            sysmon(13, "03.000", EventType="SetValue", ProcessGuid=child, ProcessId=200,
                   Image="C:\\Windows\\System32\\cmd.exe",
                   TargetObject="HKU\\S-1-5-21-1\\Software\\Microsoft\\Windows\\CurrentVersion\\Run\\(Default)",
                   Details="C:\\Users\\alice\\out.exe"),
            sysmon(12, "04.000", EventType="DeleteValue", ProcessGuid=child, ProcessId=200,
                   Image="C:\\Windows\\System32\\cmd.exe", TargetObject="HKLM\\SOFTWARE\\x\\v"),
            sysmon(12, "05.000", EventType="CreateKey", ProcessGuid=child, ProcessId=200,
                   Image="C:\\Windows\\System32\\cmd.exe", TargetObject="HKLM\\SOFTWARE\\x\\k"),
            sysmon(14, "06.000", EventType="RenameKey", ProcessGuid=child, ProcessId=200,
                   Image="C:\\Windows\\System32\\cmd.exe", TargetObject="HKLM\\SOFTWARE\\x\\k",
                   NewName="HKLM\\SOFTWARE\\x\\k2"),
            sysmon(3, "07.000", ProcessGuid=child, ProcessId=200),  # no Defender table: counted, no row
            sysmon(12, "08.000", EventType="INFO", ProcessGuid=child, ProcessId=200, TargetObject="HKLM\\a"),
        ],
    )  # fmt: skip
    tables = [(t, r["ActionType"]) for t, r in out]
    assert tables == [
        ("DeviceProcessEvents", "ProcessCreated"),
        ("DeviceProcessEvents", "ProcessCreated"),
        ("DeviceFileEvents", "FileCreated"),
        ("DeviceRegistryEvents", "RegistryValueSet"),
        ("DeviceRegistryEvents", "RegistryValueDeleted"),
        ("DeviceRegistryEvents", "RegistryKeyCreated"),
        ("DeviceRegistryEvents", "RegistryKeyRenamed"),
    ]
    explorer, cmd, created, value_set, deleted, key_created, renamed = (r for _t, r in out)
    assert explorer["SHA1"] == "aa" and explorer["MD5"] == "bb" and explorer["SHA256"] == "cc"
    assert explorer["ProcessVersionInfoCompanyName"] == "Microsoft Corporation"
    assert explorer["InitiatingProcessFileName"] == "userinit.exe" and explorer["LogonId"] == 16
    # the child's Initiating* columns come from the parent's own ProcessCreate, found by its GUID
    assert cmd["InitiatingProcessCommandLine"] == "explorer.exe"
    assert (
        cmd["InitiatingProcessSHA1"] == "aa"
        and cmd["InitiatingProcessVersionInfoOriginalFileName"] == "EXPLORER.EXE"
    )
    assert cmd["InitiatingProcessIntegrityLevel"] == "Medium" and cmd["InitiatingProcessLogonId"] == 16
    assert cmd["InitiatingProcessParentFileName"] == "userinit.exe"
    assert cmd["ProcessCreationTime"] == cmd["Timestamp"] and cmd["DeviceName"] == "ws01.lab.local"
    for row in (created, value_set, deleted, key_created, renamed):
        assert row["InitiatingProcessCommandLine"] == "cmd /c whoami"
        assert row["InitiatingProcessParentFileName"] == "explorer.exe"
        assert row["InitiatingProcessAccountName"] == "alice"
    assert created["FolderPath"] == "C:\\Users\\alice\\out.txt" and created["FileName"] == "out.txt"
    assert value_set["RegistryKey"] == (
        "HKEY_CURRENT_USER\\S-1-5-21-1\\Software\\Microsoft\\Windows\\CurrentVersion\\Run"
    )
    assert (
        value_set["RegistryValueName"] == "" and value_set["RegistryValueData"] == "C:\\Users\\alice\\out.exe"
    )
    assert deleted["PreviousRegistryKey"] == "HKEY_LOCAL_MACHINE\\SOFTWARE\\x"
    assert deleted["PreviousRegistryValueName"] == "v"
    assert key_created["RegistryKey"] == "HKEY_LOCAL_MACHINE\\SOFTWARE\\x\\k"
    assert renamed["PreviousRegistryKey"] == "HKEY_LOCAL_MACHINE\\SOFTWARE\\x\\k"
    assert renamed["RegistryKey"] == "HKEY_LOCAL_MACHINE\\SOFTWARE\\x\\k2"


def test_process_seen_only_through_its_events(tmp_path: Path) -> None:
    out = rows(
        tmp_path,
        [
            sysmon(7, "00.000", ProcessGuid="{22222222-0000-0000-0000-000000000001}", ProcessId=300,
                   Image="C:\\Tools\\x.exe", ImageLoaded="C:\\Windows\\System32\\winhttp.dll",
                   Hashes="SHA256=ABCD", User="NT AUTHORITY\\SYSTEM"),
            sysmon(23, "01.000", ProcessGuid="{22222222-0000-0000-0000-000000000001}", ProcessId=300,
                   TargetFilename="C:\\Tools\\x.log", Hashes="MD5=EE"),
        ],
    )  # fmt: skip
    (t1, load), (t2, deleted) = out
    assert t1 == "DeviceImageLoadEvents" and load["SHA256"] == "abcd" and load["FileName"] == "winhttp.dll"
    assert load["InitiatingProcessFolderPath"] == "C:\\Tools\\x.exe" and load["InitiatingProcessId"] == 300
    assert load["InitiatingProcessAccountName"] == "system"
    assert load["InitiatingProcessAccountSid"] == "S-1-5-18"
    assert t2 == "DeviceFileEvents" and deleted["ActionType"] == "FileDeleted" and deleted["MD5"] == "ee"
    assert deleted["InitiatingProcessFileName"] == "x.exe"  # the same process, remembered from the load


def test_security_4688_4657_4689(tmp_path: Path) -> None:
    out = rows(
        tmp_path,
        [
            security(4688, "00.000", NewProcessId="0x1f4", NewProcessName="C:\\Windows\\System32\\cmd.exe",
                     ProcessId="0x64", ParentProcessName="C:\\Windows\\explorer.exe", CommandLine="cmd",
                     SubjectUserSid="S-1-5-21-1-1001", SubjectUserName="bob", SubjectDomainName="LAB",
                     SubjectLogonId="0x3e7", TargetUserSid="S-1-0-0", TokenElevationType="%%1938",
                     MandatoryLabel="S-1-16-8192"),
            security(4688, "01.000", NewProcessId="0x258", NewProcessName="C:\\Windows\\System32\\reg.exe",
                     ProcessId="0x1f4", CommandLine="reg add", SubjectUserSid="S-1-5-18",
                     SubjectUserName="WS01$", SubjectDomainName="LAB", TargetUserSid="S-1-0-0",
                     TokenElevationType="%%1936", MandatoryLabel="S-1-16-16384"),
            security(4657, "02.000", ObjectName="\\REGISTRY\\MACHINE\\SOFTWARE\\Run", ObjectValueName="u",
                     OperationType="%%1905", OldValueType="%%1873", OldValue="a", NewValueType="%%1874",
                     NewValue="b", ProcessId="0x258", ProcessName="C:\\Windows\\System32\\reg.exe"),
            security(4657, "03.000", ObjectName="\\REGISTRY\\MACHINE\\SOFTWARE\\Run", ObjectValueName="u",
                     OperationType="%%1906", OldValueType="%%1874", OldValue="b", ProcessId="0x258",
                     ProcessName="C:\\Windows\\System32\\reg.exe"),
            security(4663, "04.000", ObjectName="C:\\x"),  # not mapped: counted only
        ],
    )  # fmt: skip
    (_, cmd), (_, reg), (_, value_set), (_, value_deleted) = out
    assert cmd["ProcessId"] == 500 and cmd["InitiatingProcessId"] == 100
    assert cmd["InitiatingProcessFileName"] == "explorer.exe"
    assert (cmd["AccountDomain"], cmd["AccountName"], cmd["AccountSid"]) == ("LAB", "bob", "S-1-5-21-1-1001")
    assert (
        cmd["ProcessTokenElevation"] == "TokenElevationTypeLimited"
        and cmd["ProcessIntegrityLevel"] == "Medium"
    )
    assert reg["InitiatingProcessCommandLine"] == "cmd" and reg["InitiatingProcessAccountName"] == "bob"
    assert (reg["AccountDomain"], reg["AccountName"]) == ("nt authority", "system")
    assert reg["InitiatingProcessParentFileName"] == "explorer.exe"
    assert value_set["ActionType"] == "RegistryValueSet"
    assert value_set["RegistryKey"] == "HKEY_LOCAL_MACHINE\\SOFTWARE\\Run"
    assert (value_set["RegistryValueType"], value_set["RegistryValueData"]) == ("ExpandString", "b")
    assert value_set["PreviousRegistryValueData"] == "a"
    assert value_set["InitiatingProcessCommandLine"] == "reg add"
    assert value_deleted["ActionType"] == "RegistryValueDeleted"
    assert (
        value_deleted["PreviousRegistryValueName"] == "u"
        and value_deleted["PreviousRegistryValueData"] == "b"
    )
