"""DeviceProcessEvents from constructed process events (classic Process and Kernel-Process)."""

from __future__ import annotations

from datetime import timedelta

from normalize_builders import T0, classic_start, ev, image_load, manifest_start, of, run

from etwsensor.normalize.models import full_row, validate_row

SYS32 = "\\Device\\HarddiskVolume3\\Windows\\System32\\"
PS = "\\Device\\HarddiskVolume3\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe"
PS_CMD = 'powershell.exe -c "Add-Type ...GetAsyncKeyState..."'


def explorer_rundown() -> list:
    return [
        classic_start(2000, 600, "explorer.exe", "C:\\Windows\\Explorer.EXE", ms=0, name="DCStart"),
        image_load(2000, "\\Device\\HarddiskVolume3\\Windows\\explorer.exe", 0x7FF600000000, name="DCStart"),
    ]


def test_classic_and_manifest_start_merge_into_one_row_constructed() -> None:
    rows, _ = run(
        [
            *explorer_rundown(),
            manifest_start(4242, 2000, PS, ms=10),
            classic_start(4242, 2000, "powershell.exe", PS_CMD, ms=11),
        ]
    )
    created = of(rows, "DeviceProcessEvents")
    assert len(created) == 1
    row = created[0]
    assert row["ActionType"] == "ProcessCreated"
    assert row["FileName"] == "powershell.exe"
    assert row["FolderPath"] == "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe"
    assert row["ProcessCommandLine"] == PS_CMD
    assert row["ProcessCreationTime"] == T0 + timedelta(milliseconds=10)
    assert row["ProcessIntegrityLevel"] == "Medium"
    assert row["ProcessTokenElevation"] == "TokenElevationTypeLimited"
    assert (row["AccountSid"], row["AccountDomain"], row["AccountName"]) == (
        "S-1-5-21-1-2-3-1001",
        "CONTOSO",
        "alice",
    )
    assert row["CreatedProcessSessionId"] == 1
    # the parent is known from rundown only: its image path came from the Image DCStart record
    assert row["InitiatingProcessId"] == 2000
    assert row["InitiatingProcessFileName"] == "explorer.exe"
    assert row["InitiatingProcessFolderPath"] == "C:\\Windows\\explorer.exe"
    assert row["InitiatingProcessCreationTime"] is None
    assert row["InitiatingProcessParentId"] == 600
    assert row["DeviceName"] == "ws01.contoso.test"
    assert row["DeviceId"] == "dev-1"
    validate_row("DeviceProcessEvents", full_row("DeviceProcessEvents", row))


def test_classic_first_then_manifest_also_merges_constructed() -> None:
    rows, _ = run(
        [
            ev(
                "Microsoft-Windows-Kernel-Process",
                "ProcessRundown",
                0,
                ProcessID=2000,
                ParentProcessID=600,
                CreateTime=T0 - timedelta(hours=1),
                ImageName=SYS32 + "..\\explorer.exe",
            ),
            classic_start(4242, 2000, "powershell.exe", PS_CMD, ms=10),
            manifest_start(4242, 2000, PS, ms=60),
        ]
    )
    created = of(rows, "DeviceProcessEvents")
    assert len(created) == 1
    assert created[0]["ProcessCommandLine"] == PS_CMD
    assert created[0]["ProcessCreationTime"] == T0 + timedelta(milliseconds=60)


def test_starts_further_apart_than_100ms_are_two_processes_constructed() -> None:
    rows, _ = run(
        [
            classic_start(1, 0, "a.exe", "a.exe", ms=0, name="DCStart"),
            ev(
                "Microsoft-Windows-Kernel-Process",
                "ProcessRundown",
                0,
                ProcessID=5,
                ParentProcessID=0,
                CreateTime=T0,
                ImageName=SYS32 + "x.exe",
            ),
            manifest_start(4242, 2000, PS, ms=10),
            classic_start(4242, 2000, "powershell.exe", PS_CMD, ms=300),
        ]
    )
    assert len(of(rows, "DeviceProcessEvents")) == 2


def test_without_classic_process_later_starts_are_written_at_once_constructed() -> None:
    _, norm = run([])
    assert norm.process(manifest_start(4242, 2000, PS, ms=10)) == ()  # may still get its classic half
    out = norm.process(manifest_start(4243, 2000, PS, ms=500))  # the first waited in vain
    assert [r["ProcessId"] for _, r in out] == [4242, 4243]


def test_pending_start_is_written_when_window_passes_constructed() -> None:
    _, norm = run([classic_start(1, 0, "a.exe", "a.exe", name="DCStart")])
    assert norm.process(manifest_start(4242, 2000, PS, ms=10)) == ()
    later = norm.process(
        ev("Image", "Load", 500, pid=4242, ProcessId=4242, ImageBase=1, FileName=SYS32 + "x.dll")
    )
    assert [t for t, _ in later] == ["DeviceProcessEvents", "DeviceImageLoadEvents"]


def test_rundown_never_makes_rows_and_has_no_creation_time_constructed() -> None:
    rows, norm = run(explorer_rundown())
    assert of(rows, "DeviceProcessEvents") == []
    proc = norm.processes.get(2000)
    assert proc is not None and proc.create_time is None


def test_pid_reuse_gives_a_new_process_constructed() -> None:
    rows, _ = run(
        [
            classic_start(700, 4, "svchost.exe", "C:\\Windows\\system32\\svchost.exe -k a", ms=0, key=0xA),
            ev("Process", "End", 50, pid=700, version=4, ProcessId=700, UniqueProcessKey=0xA),
            classic_start(700, 4, "notepad.exe", "notepad.exe x.txt", ms=5000, key=0xB),
            image_load(700, SYS32 + "user32.dll", 0x7FF0, ms=5001),
        ]
    )
    created = of(rows, "DeviceProcessEvents")
    assert [r["FileName"] for r in created] == ["svchost.exe", "notepad.exe"]
    assert created[0]["FolderPath"] == "C:\\Windows\\system32\\svchost.exe"  # from the command line
    load = of(rows, "DeviceImageLoadEvents")[0]
    assert load["InitiatingProcessFileName"] == "notepad.exe"
    assert load["InitiatingProcessCommandLine"] == "notepad.exe x.txt"


def test_unknown_parent_counts_as_unresolved_constructed() -> None:
    rows, norm = run([manifest_start(4242, 31337, PS, ms=10)])
    row = of(rows, "DeviceProcessEvents")[0]
    assert row["InitiatingProcessId"] == 31337
    assert "InitiatingProcessFileName" not in row
    assert norm.stats()["unresolved"] == {"DeviceProcessEvents": 1}


def test_well_known_sid_and_integrity_system_constructed() -> None:
    rows, _ = run(
        [
            classic_start(900, 4, "services.exe", "C:\\Windows\\system32\\services.exe", sid="S-1-5-18"),
            manifest_start(900, 4, SYS32 + "services.exe", ms=1, label="S-1-16-16384", elevation=1),
        ]
    )
    row = of(rows, "DeviceProcessEvents")[0]
    assert (row["AccountDomain"], row["AccountName"]) == ("nt authority", "system")
    assert row["ProcessIntegrityLevel"] == "System"
    assert row["ProcessTokenElevation"] == "TokenElevationTypeDefault"


def test_report_ids_increase_per_row_constructed() -> None:
    rows, _ = run([classic_start(p, 4, "a.exe", "a.exe", ms=p) for p in (10, 20, 30)])
    assert [r["ReportId"] for _, r in rows] == [1, 2, 3]


def test_same_pid_started_twice_before_partner_is_two_rows_constructed() -> None:
    rows, _ = run(
        [
            manifest_start(10, 4, SYS32 + "a.exe", ms=0, name="ProcessRundown"),
            classic_start(4242, 2000, "first.exe", "first.exe", ms=1, key=0x1),
            classic_start(4242, 2000, "second.exe", "second.exe", ms=40, key=0x2),
        ]
    )
    assert [r["FileName"] for r in of(rows, "DeviceProcessEvents")] == ["first.exe", "second.exe"]


def test_later_rundown_completes_a_started_process_constructed() -> None:
    _, norm = run(
        [
            manifest_start(10, 4, SYS32 + "a.exe", ms=0, name="ProcessRundown"),
            classic_start(4242, 2000, "notepad.exe", "notepad.exe", ms=1, key=0x7),
            manifest_start(4242, 2000, SYS32 + "notepad.exe", ms=2),
            # capture state requested again later: rundown of the same process
            classic_start(4242, 2000, "notepad.exe", "notepad.exe", ms=5000, key=0x7, name="DCStart"),
        ]
    )
    proc = norm.processes.get(4242)
    assert proc is not None and proc.create_time is not None and not proc.rundown


def test_volume_mapping_after_rundown_converts_known_paths_constructed() -> None:
    from etwsensor.normalize import Normalizer

    rows, _ = run(
        [
            classic_start(3508, 2876, "cmd.exe", "", ms=0, name="DCStart"),
            image_load(
                3508, "\\Device\\HarddiskVolume2\\Windows\\System32\\cmd.exe", 0x4A000000, name="DCStart"
            ),
            ev(
                "SystemConfigEx",
                "VolumeMapping",
                1,
                pid=0,
                version=0,
                NtPath="\\Device\\HarddiskVolume2\\",
                DosPath="C:\\",
            ),
            manifest_start(3676, 3508, "\\Device\\HarddiskVolume2\\Temp\\Test.x64.exe", ms=2),
        ],
        Normalizer(),  # no header: the map comes from the trace only
    )
    row = of(rows, "DeviceProcessEvents")[0]
    assert row["FolderPath"] == "C:\\Temp\\Test.x64.exe"
    assert row["InitiatingProcessFolderPath"] == "C:\\Windows\\System32\\cmd.exe"
