"""NT → DOS path rules (issue 3 §6), one test per rule, and the --device-map parser."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from etwsensor.normalize.paths import DeviceMapError, PathResolver, parse_device_map, registry_key


@pytest.fixture
def paths() -> PathResolver:
    return PathResolver({"\\Device\\HarddiskVolume3": "C:", "\\Device\\HarddiskVolume4\\": "D:\\"})


def test_harddisk_volume_maps_through_device_map(paths: PathResolver) -> None:
    assert paths.to_dos("\\Device\\HarddiskVolume3\\Windows\\System32\\user32.dll") == (
        "C:\\Windows\\System32\\user32.dll"
    )
    assert paths.to_dos("\\Device\\HarddiskVolume4\\data\\x.txt") == "D:\\data\\x.txt"


def test_device_prefix_match_is_case_insensitive_and_whole_component(paths: PathResolver) -> None:
    assert paths.to_dos("\\DEVICE\\harddiskvolume3\\x") == "C:\\x"
    # HarddiskVolume30 is another volume, not a prefix match of HarddiskVolume3
    assert paths.to_dos("\\Device\\HarddiskVolume30\\x") == "\\Device\\HarddiskVolume30\\x"


def test_unknown_device_stays_as_recorded_and_is_counted(paths: PathResolver) -> None:
    assert paths.to_dos("\\Device\\HarddiskVolumeShadowCopy2\\Windows\\x") == (
        "\\Device\\HarddiskVolumeShadowCopy2\\Windows\\x"
    )
    assert paths.unknown_devices == 1


def test_systemroot_and_deviceless_windows_use_the_system_root() -> None:
    paths = PathResolver(system_root="D:\\WINNT\\")
    assert (
        paths.to_dos("\\SystemRoot\\System32\\drivers\\kbdhook.sys")
        == "D:\\WINNT\\System32\\drivers\\kbdhook.sys"
    )
    assert paths.to_dos("\\Windows\\System32\\ntdll.dll") == "D:\\Windows\\System32\\ntdll.dll"
    assert paths.to_dos("\\SystemRootX\\a") == "\\SystemRootX\\a"


def test_default_system_root_is_c_windows() -> None:
    assert PathResolver().to_dos("\\SystemRoot\\explorer.exe") == "C:\\Windows\\explorer.exe"


def test_dos_device_prefixes_are_stripped(paths: PathResolver) -> None:
    assert paths.to_dos("\\??\\C:\\Users\\a\\x.exe") == "C:\\Users\\a\\x.exe"
    assert paths.to_dos("\\\\?\\C:\\x") == "C:\\x"
    assert paths.to_dos("\\??\\UNC\\srv\\share\\x") == "\\\\srv\\share\\x"


@pytest.mark.parametrize(
    ("nt", "dos"),
    [
        ("\\Device\\Mup\\DfsClient\\;Z:0000000000020d40\\clrmain\\public\\x", "\\\\clrmain\\public\\x"),
        ("\\Device\\Mup\\;LanmanRedirector\\;Z:0000000000020d40\\srv\\share\\y.exe", "\\\\srv\\share\\y.exe"),
        ("\\Device\\Mup\\clrmain\\public\\Test.x64.exe", "\\\\clrmain\\public\\Test.x64.exe"),
        ("\\Device\\LanmanRedirector\\;Z:00000000000abcde\\srv\\share\\z", "\\\\srv\\share\\z"),
    ],
)
def test_mup_paths_become_unc(paths: PathResolver, nt: str, dos: str) -> None:
    assert paths.to_dos(nt) == dos


def test_dos_and_unc_paths_pass_through(paths: PathResolver) -> None:
    for path in ("C:\\x", "\\\\srv\\share", "cmd.exe", ""):
        assert paths.to_dos(path) == path


def test_volume_mapping_records_extend_the_map_but_not_override_pinned() -> None:
    paths = PathResolver(pinned={"\\Device\\HarddiskVolume2": "E:"})
    paths.add_mapping("\\Device\\HarddiskVolume2\\", "C:\\")
    paths.add_mapping("\\Device\\HarddiskVolume5\\", "F:\\")
    paths.add_mapping("\\SystemRoot\\", "C:\\Win\\")
    paths.add_mapping("\\??\\", "")
    assert paths.to_dos("\\Device\\HarddiskVolume2\\a") == "E:\\a"
    assert paths.to_dos("\\Device\\HarddiskVolume5\\a") == "F:\\a"
    assert paths.to_dos("\\SystemRoot\\a") == "C:\\Win\\a"


def test_parse_device_map_string_both_orientations() -> None:
    assert parse_device_map("C:=\\Device\\HarddiskVolume3; \\Device\\HarddiskVolume4=d:") == {
        "\\Device\\HarddiskVolume3": "C:",
        "\\Device\\HarddiskVolume4": "D:",
    }


def test_parse_device_map_json_file(tmp_path: Path) -> None:
    f = tmp_path / "map.json"
    f.write_text(json.dumps({"C:": "\\Device\\HarddiskVolume3\\"}), "utf-8")
    assert parse_device_map(str(f)) == {"\\Device\\HarddiskVolume3": "C:"}


@pytest.mark.parametrize("bad", ["", "C:", "C:=D:", "Windows=\\Device\\X", "nosuchfile.json"])
def test_parse_device_map_rejects_bad_input_with_a_clear_error(bad: str) -> None:
    with pytest.raises(DeviceMapError):
        parse_device_map(bad)


@pytest.mark.parametrize(
    ("nt", "defender"),
    [
        (
            "\\REGISTRY\\MACHINE\\SYSTEM\\ControlSet001\\Services\\x",
            "HKEY_LOCAL_MACHINE\\SYSTEM\\ControlSet001\\Services\\x",
        ),
        ("\\Registry\\Machine\\SOFTWARE", "HKEY_LOCAL_MACHINE\\SOFTWARE"),
        (
            "\\REGISTRY\\USER\\S-1-5-21-1-2-3-1001\\Software",
            "HKEY_CURRENT_USER\\S-1-5-21-1-2-3-1001\\Software",
        ),
        (
            "\\REGISTRY\\USER\\S-1-5-21-1-2-3-1001_Classes\\CLSID",
            "HKEY_CURRENT_USER\\S-1-5-21-1-2-3-1001_Classes\\CLSID",
        ),
        ("\\REGISTRY\\USER\\.DEFAULT\\Control Panel", "HKEY_CURRENT_USER\\.DEFAULT\\Control Panel"),
        (
            "\\REGISTRY\\MACHINE\\SYSTEM\\CurrentControlSet\\Services",
            "HKEY_LOCAL_MACHINE\\SYSTEM\\CurrentControlSet\\Services",
        ),
        ("\\REGISTRY\\MACHINEX\\a", "\\REGISTRY\\MACHINEX\\a"),
    ],
)
def test_registry_keys_take_defenders_form(nt: str, defender: str) -> None:
    assert registry_key(nt) == defender
