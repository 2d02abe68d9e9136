"""Win32k API audit events → DeviceEvents rows: hooks, raw input, aggregated GetAsyncKeyState."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from normalize_builders import T0, classic_start, ev, of, run
from typer.testing import CliRunner

from etwsensor.cli import app
from etwsensor.normalize import Normalizer, validate_row
from etwsensor.normalize.models import full_row
from etwsensor.normalize.win32k import Win32kTracker, device_type, hook_type_name, ridev_flag_names
from etwsensor.tables import schema

W = "Microsoft-Windows-Win32k"
TABLE = "DeviceEvents"
LOGGER = classic_start(3000, 2000, "rk.exe", r"C:\Users\alice\AppData\Local\Temp\rk.exe", ms=0)


def poll(pid: int, ms: float, calls: int = 300, since: int = 90_000) -> Any:
    return ev(
        W,
        "GetAsyncKeyState",
        ms,
        pid=pid,
        version=0,
        PID=pid,
        MsSinceLastKeyEvent=since,
        BackgroundCallCount=calls,
    )


def hook(pid: int, ms: float, filter_type: int, lib: str = "") -> Any:
    return ev(
        W,
        "SetWindowsHookEx",
        ms,
        pid=pid,
        version=0,
        FilterType=filter_type,
        pstrLib=lib,
        hmod=0x7FF8_0000 if lib else 0,
        pfnFilterProc=0x7FF8_1230,
        ReturnValue=0x2004E,
    )


def raw_input(pid: int, ms: float, flags: int, visible: int, usage: int = 6) -> Any:
    return ev(
        W,
        "RegisterRawInputDevices",
        ms,
        pid=pid,
        version=0,
        ReturnValue=1,
        UsagePage=1,
        Usage=usage,
        Flags=flags,
        hwndTarget=0x100A,
        ThreadStartAddress=0,
        ThreadCreateTime=T0,
        ThreadId=7,
        cWindows=1,
        cVisWindows=visible,
        ThreadInfoFlags=0,
        ProcessId=pid,
        ProcessCreateTime=T0,
        ProcessStartKey=0x20000000042,
        ThreadStartAddressMappedModuleName="",
        ThreadStartAddressQueryResult=0,
        ThreadStartAddressVadAllocationBase=0,
        ThreadStartAddressVadAllocationProtect=0,
        ThreadStartAddressVadRegionType=0,
        ThreadStartAddressVadRegionSize=0,
        ThreadStartAddressVadProtect=0,
    )


def test_a_low_level_keyboard_hook_is_a_row_with_the_hook_type_named_constructed() -> None:
    rows, _ = run([LOGGER, hook(3000, 5, 13, r"C:\Users\alice\AppData\Roaming\hk.dll")])
    (row,) = of(rows, TABLE, "SetWindowsHookExApiCall")
    assert row["InitiatingProcessFileName"] == "rk.exe"
    assert row["InitiatingProcessFolderPath"] == r"C:\Users\alice\AppData\Local\Temp\rk.exe"
    extra = row["AdditionalFields"]
    assert extra["FilterType"] == 13 and extra["HookType"] == "WH_KEYBOARD_LL"
    assert extra["pstrLib"] == r"C:\Users\alice\AppData\Roaming\hk.dll"
    validate_row(TABLE, full_row(TABLE, row))  # the row fits the table model


def test_raw_input_registration_decodes_flags_and_device_constructed() -> None:
    rows, _ = run([LOGGER, raw_input(3000, 5, 0x100 | 0x30, visible=0)])
    (row,) = of(rows, TABLE, "RegisterRawInputDevicesApiCall")
    extra = row["AdditionalFields"]
    assert extra["DeviceType"] == "Keyboard" and extra["cVisWindows"] == 0
    assert extra["FlagNames"] == ["RIDEV_INPUTSINK", "RIDEV_NOLEGACY"]
    assert extra["ProcessCreateTime"] == "2026-11-27T12:00:00Z"  # JSON-safe: a dynamic value
    json.dumps(extra)
    assert row["InitiatingProcessId"] == 3000


def test_get_async_key_state_is_aggregated_per_process_per_window_constructed() -> None:
    # 900 events over 90 s from one process, 10 from another: a few rows with sums, not 910.
    events = [LOGGER, classic_start(3100, 2000, "game.exe", r"C:\Games\game.exe", ms=0)]
    events += [poll(3000, 100 + i * 100, calls=200, since=60_000 + i) for i in range(900)]
    events += [poll(3100, 200 + i * 1000, calls=50, since=40) for i in range(10)]
    rows, normalizer = run(sorted(events, key=lambda e: e.ts))
    logger = of(rows, TABLE, "GetAsyncKeyStateApiCall")
    by_pid: dict[int, list[dict[str, Any]]] = {}
    for r in logger:
        by_pid.setdefault(r["InitiatingProcessId"], []).append(r["AdditionalFields"])
    assert [a["EventCount"] for a in by_pid[3000]] == [600, 300]  # 60 s windows
    assert sum(a["BackgroundCallCount"] for a in by_pid[3000]) == 900 * 200
    assert (
        by_pid[3000][0]["MsSinceLastKeyEvent"] == 60_000
        and by_pid[3000][0]["MaxMsSinceLastKeyEvent"] == 60_599
    )
    assert by_pid[3100] == [
        {
            "PID": 3100,
            "BackgroundCallCount": 500,
            "MsSinceLastKeyEvent": 40,
            "MaxMsSinceLastKeyEvent": 40,
            "EventCount": 10,
            "WindowSeconds": 60,
            "FirstEventTime": "2026-11-27T12:00:00.200000Z",
        }
    ]
    stats = normalizer.stats()
    assert stats["rows"][TABLE] == {"GetAsyncKeyStateApiCall": 3}
    assert stats["caches"]["getasynckeystate_windows"]["aggregated_events"] == 910
    # A row comes out when the stream passes its window's end, stamped with the window's last event.
    assert [r["Timestamp"] for r in logger] == [
        T0 + timedelta(milliseconds=ms) for ms in (60_000, 9_200, 90_000)
    ]


def test_open_windows_are_bounded_without_losing_counts_constructed() -> None:
    n = Normalizer()
    n.win32k = tracker = Win32kTracker(n.sink, n.processes, max_open=4)
    n._open_polls = tracker.open
    n._handlers.update(tracker.handlers())
    events = [poll(5000 + i % 10, i, calls=1) for i in range(100)]
    rows = []
    for e in events:
        rows += n.process(e)
        assert len(tracker.open) <= 4
    rows += n.flush()
    assert len(tracker.open) == 0 and tracker.early_closes > 0
    assert sum(r["AdditionalFields"]["BackgroundCallCount"] for r in of(rows, TABLE)) == 100


def test_an_unknown_process_still_gives_a_row_counted_unresolved_constructed() -> None:
    rows, normalizer = run([hook(4444, 1, 2)])
    (row,) = of(rows, TABLE)
    assert row["InitiatingProcessId"] == 4444 and row["AdditionalFields"]["HookType"] == "WH_KEYBOARD"
    assert normalizer.stats()["unresolved"][TABLE] == 1


def test_a_malformed_win32k_event_is_counted_not_raised_constructed() -> None:
    bad = ev(W, "SetWindowsHookEx", 1, pid=5, version=0, pstrLib="x")  # no FilterType
    rows, normalizer = run([bad, hook(5, 2, 13)])
    assert len(of(rows, TABLE)) == 1 and normalizer.bad_events == 1


@pytest.mark.parametrize(
    ("flags", "usage", "names"),
    [
        (0x100, 6, ["RIDEV_INPUTSINK"]),
        (0x30, 6, ["RIDEV_NOLEGACY"]),
        (0x10, 6, ["RIDEV_EXCLUDE"]),
        (0x20, 6, ["RIDEV_PAGEONLY"]),
        (0x200, 6, ["RIDEV_NOHOTKEYS"]),
        (0x200, 2, ["RIDEV_CAPTUREMOUSE"]),
        (0x1 | 0x2000, 6, ["RIDEV_REMOVE", "RIDEV_DEVNOTIFY"]),
        (0x1000 | 0x400 | 0x8000, 6, ["RIDEV_APPKEYS", "RIDEV_EXINPUTSINK", "0x8000"]),
        (0, 6, []),
    ],
)
def test_ridev_flag_names(flags: int, usage: int, names: list[str]) -> None:
    assert ridev_flag_names(flags, 1, usage) == names


def test_hook_and_device_names() -> None:
    assert [hook_type_name(t) for t in (13, 2, 14, 7, 0xFFFFFFFF, 99)] == [
        "WH_KEYBOARD_LL",
        "WH_KEYBOARD",
        "WH_MOUSE_LL",
        "WH_MOUSE",
        "WH_MSGFILTER",
        "WH_99",
    ]
    assert (device_type(1, 6), device_type(1, 2), device_type(12, 1)) == ("Keyboard", "Mouse", "0xc:0x1")


def test_normalize_command_prints_device_events_rows(tmp_path: Path) -> None:
    from etwsensor.sources.header import HostInfo, RecordingHeader
    from etwsensor.sources.recording import write_recording

    path = tmp_path / "keylog.jsonl.zst"
    events = [LOGGER, hook(3000, 5, 13, r"C:\Users\alice\AppData\Roaming\hk.dll")]
    events += [poll(3000, 10 + i, calls=400) for i in range(50)]
    write_recording(path, RecordingHeader(host=HostInfo(name="ws01", device_id="d1")), events)
    r = CliRunner().invoke(app, ["normalize", str(path), "--table", "DeviceEvents"])
    assert r.exit_code == 0, r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert [(x["$table"], x["ActionType"]) for x in lines] == [
        ("DeviceEvents", "SetWindowsHookExApiCall"),
        ("DeviceEvents", "GetAsyncKeyStateApiCall"),
    ]
    assert list(lines[0])[1:] == list(schema(TABLE).column_names)  # every column in Defender's order
    assert lines[0]["AdditionalFields"]["HookType"] == "WH_KEYBOARD_LL"  # a JSON object, not text
    assert lines[1]["AdditionalFields"]["BackgroundCallCount"] == 50 * 400
    assert "DeviceEvents: GetAsyncKeyStateApiCall 1, SetWindowsHookExApiCall 1" in r.stderr
