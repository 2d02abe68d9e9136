"""The synthetic demo recording (examples/demo.jsonl.zst): deterministic, and it carries the T1056.001
keylogger episode of issue 3 §8 with the shapes the seed rule matches (and misses)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import zstandard

from etwsensor.normalize import Normalizer, full_row, validate_row
from etwsensor.sources import open_source

ROOT = Path(__file__).parents[2]
DEMO = ROOT / "examples/demo.jsonl.zst"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_demo_trace", ROOT / "scripts/make_demo_trace.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_demo_trace"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def rows() -> list[tuple[str, dict[str, Any]]]:
    source = open_source(DEMO)
    assert "synthetic" in source.header.host.name and "SYNTHETIC" in (source.header.comment or "")
    normalizer = Normalizer(source.header)
    out = [row for event in source.events() for row in normalizer.process(event)]
    out.extend(normalizer.flush())
    assert normalizer.stats()["bad_events"] == 0
    assert not source.damage
    return out


def test_committed_demo_is_what_the_script_writes(tmp_path: Path) -> None:
    script = load_script()
    fresh = tmp_path / "demo.jsonl.zst"
    from etwsensor.sources.recording import write_recording

    write_recording(fresh, script.HEADER, script.build())

    def unzip(path: Path) -> bytes:  # every frame: recordings are written in frames
        with path.open("rb") as fh:
            return zstandard.ZstdDecompressor().stream_reader(fh, read_across_frames=True).read()

    assert unzip(fresh) == unzip(DEMO)


def test_every_demo_row_fits_its_table(rows: list[tuple[str, dict[str, Any]]]) -> None:
    assert {t for t, _ in rows} == {
        "DeviceProcessEvents",
        "DeviceImageLoadEvents",
        "DeviceRegistryEvents",
        "DeviceFileEvents",
        "DeviceEvents",
    }
    for table, row in rows:
        validate_row(table, full_row(table, row))
        assert row["DeviceName"] == "ws01.synthetic-demo.invalid"


def test_keylogger_episode_is_in_the_demo(rows: list[tuple[str, dict[str, Any]]]) -> None:
    def of(table: str) -> list[dict[str, Any]]:
        return [r for t, r in rows if t == table]

    ps = [r for r in of("DeviceProcessEvents") if "GetAsyncKeyState" in r["ProcessCommandLine"]]
    assert [r["FileName"] for r in ps] == ["powershell.exe"]
    assert ps[0]["InitiatingProcessFileName"] == "explorer.exe"
    user32 = {
        r["InitiatingProcessFileName"] for r in of("DeviceImageLoadEvents") if r["FileName"] == "user32.dll"
    }
    assert {"powershell.exe", "inputsvc.exe"} <= user32
    assert len(user32) >= 6  # ordinary desktop processes load it too
    created = {r["FolderPath"] for r in of("DeviceFileEvents") if r["ActionType"] == "FileCreated"}
    assert "C:\\Users\\alice\\AppData\\Local\\Temp\\keylog.txt" in created
    assert "C:\\Users\\alice\\AppData\\Local\\Temp\\key.log" in created
    image_paths = {
        r["RegistryKey"]
        for r in of("DeviceRegistryEvents")
        if r.get("RegistryValueName") == "ImagePath" and "kbdhook.sys" in r["RegistryValueData"]
    }
    assert image_paths == {
        "HKEY_LOCAL_MACHINE\\SYSTEM\\CurrentControlSet\\Services\\kbdhook",
        "HKEY_LOCAL_MACHINE\\SYSTEM\\ControlSet001\\Services\\kbdhook",
    }
    direct_input = [
        r
        for r in of("DeviceRegistryEvents")
        if r.get("RegistryKey", "").endswith("\\DirectInput\\MostRecentApplication")
    ]
    assert {r.get("RegistryValueName") for r in direct_input} >= {"Name", "Id", "Version"}
    assert all(r["RegistryKey"].startswith("HKEY_CURRENT_USER\\S-1-5-21-") for r in direct_input)
    assert (
        direct_input[0]["InitiatingProcessFolderPath"]
        == "C:\\Users\\alice\\AppData\\Local\\Temp\\inputsvc.exe"
    )


def test_key_capture_episodes_are_in_the_demo(rows: list[tuple[str, dict[str, Any]]]) -> None:
    calls = [r for t, r in rows if t == "DeviceEvents"]
    by = {(r["ActionType"], r["InitiatingProcessFileName"]) for r in calls}
    assert by == {
        ("GetAsyncKeyStateApiCall", "powershell.exe"),  # the keylogger's background loop
        ("GetAsyncKeyStateApiCall", "arena.exe"),  # the game, polling with the focus
        ("SetWindowsHookExApiCall", "syshelper.exe"),  # WH_KEYBOARD_LL and a global hook DLL in AppData
        ("SetWindowsHookExApiCall", "ContosoIme.exe"),  # an IME's global hook under Program Files
        ("SetWindowsHookExApiCall", "ScreenReader.exe"),  # an accessibility tool's low-level hook
        ("RegisterRawInputDevicesApiCall", "inputsvc.exe"),  # RIDEV_INPUTSINK, no visible window
        ("RegisterRawInputDevicesApiCall", "ScreenReader.exe"),  # RIDEV_INPUTSINK, window shown
        ("RegisterRawInputDevicesApiCall", "arena.exe"),  # keyboard and mouse, no sink
    }
    polls = [r["AdditionalFields"] for r in calls if r["InitiatingProcessFileName"] == "powershell.exe"]
    assert len(polls) <= 6 and all(p["MsSinceLastKeyEvent"] >= 5000 for p in polls)  # aggregated per minute
    game = [
        r["AdditionalFields"]
        for r in calls
        if r["ActionType"] == "GetAsyncKeyStateApiCall" and r["InitiatingProcessFileName"] == "arena.exe"
    ]
    assert game and all(p["MsSinceLastKeyEvent"] < 5000 for p in game)
