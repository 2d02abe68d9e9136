"""DeviceImageLoadEvents from constructed Image / Kernel-Process image events."""

from __future__ import annotations

from normalize_builders import classic_start, ev, image_load, of, run

USER32 = "\\Device\\HarddiskVolume3\\Windows\\System32\\user32.dll"


def test_load_makes_a_row_with_the_loading_process_constructed() -> None:
    rows, norm = run(
        [
            classic_start(
                3000, 2000, "keyhook.exe", "C:\\Users\\alice\\AppData\\Local\\Temp\\keyhook.exe", ms=0
            ),
            image_load(3000, USER32, 0x7FFA0000, ms=5),
        ]
    )
    load = of(rows, "DeviceImageLoadEvents", "ImageLoaded")
    assert len(load) == 1
    assert load[0]["FileName"] == "user32.dll"
    assert load[0]["FolderPath"] == "C:\\Windows\\System32\\user32.dll"
    assert load[0]["InitiatingProcessFileName"] == "keyhook.exe"
    assert load[0]["InitiatingProcessFolderPath"] == "C:\\Users\\alice\\AppData\\Local\\Temp\\keyhook.exe"
    assert norm.stats()["unresolved"] == {"DeviceProcessEvents": 1}  # the parent 2000 is unknown


def test_rundown_images_make_no_rows_constructed() -> None:
    rows, _ = run([image_load(4, USER32, 0x1000 * i, ms=i, name="DCStart") for i in range(1, 50)])
    assert of(rows, "DeviceImageLoadEvents") == []


def test_same_load_from_both_providers_is_one_row_constructed() -> None:
    rows, _ = run(
        [
            image_load(3000, USER32, 0x7FFA0000, ms=5),
            ev(
                "Microsoft-Windows-Kernel-Process",
                "ImageLoad",
                5,
                pid=3000,
                version=0,
                ImageBase=0x7FFA0000,
                ImageSize=0x1000,
                ProcessID=3000,
                ImageCheckSum=0,
                TimeDateStamp=0,
                DefaultBase=0,
                ImageName=USER32,
            ),
        ]
    )
    assert len(of(rows, "DeviceImageLoadEvents")) == 1


def test_reload_after_unload_is_a_new_row_constructed() -> None:
    rows, _ = run(
        [
            image_load(3000, USER32, 0x7FFA0000, ms=5),
            image_load(3000, USER32, 0x7FFA0000, ms=6, name="UnLoad"),
            image_load(3000, USER32, 0x7FFA0000, ms=7),
        ]
    )
    assert len(of(rows, "DeviceImageLoadEvents")) == 2


def test_unknown_process_is_counted_unresolved_constructed() -> None:
    rows, norm = run([image_load(5555, USER32, 0x10, ms=1)])
    assert of(rows, "DeviceImageLoadEvents")[0]["InitiatingProcessId"] == 5555
    assert norm.stats()["unresolved"] == {"DeviceImageLoadEvents": 1}


class _Gate:
    """A RowGate that lets only user32.dll through and records what it was asked."""

    def __init__(self, columns: frozenset[str]) -> None:
        self.columns = columns
        self.asked: list[tuple[dict, dict | None]] = []

    def might_match(self, own: dict, base: dict | None = None) -> bool:
        self.asked.append((dict(own), base))
        return own["FileName"].lower() == "user32.dll"


def _gated_run(gate: _Gate) -> tuple[list, object]:
    from etwsensor.normalize import Normalizer
    from etwsensor.sources.header import HostInfo, RecordingHeader

    header = RecordingHeader(
        host=HostInfo(name="ws", device_id="d"), device_map={"\\Device\\HarddiskVolume3": "C:"}
    )
    normalizer = Normalizer(header, gates={"DeviceImageLoadEvents": gate})
    kernel32 = USER32.replace("user32", "kernel32")
    events = [
        classic_start(3000, 2000, "keyhook.exe", "C:\\Users\\alice\\keyhook.exe", ms=0),
        image_load(3000, kernel32, 0x7FF00000, ms=4),
        image_load(3000, USER32, 0x7FFA0000, ms=5),
    ]
    return run(events, normalizer)


def test_a_gate_skips_rows_no_rule_wants_but_keeps_counts_and_report_ids() -> None:
    gate = _Gate(frozenset({"FileName"}))
    rows, norm = _gated_run(gate)
    [load] = of(rows, "DeviceImageLoadEvents", "ImageLoaded")
    assert load["FileName"] == "user32.dll"
    assert sorted(r["ReportId"] for _, r in rows) == [2, 3]  # 1 went to kernel32.dll: counted, not built
    assert norm.stats()["rows"]["DeviceImageLoadEvents"] == {"ImageLoaded": 2}
    assert norm.stats()["skipped"] == {"DeviceImageLoadEvents": 1}
    own, base = gate.asked[0]
    assert own == {
        "FileName": "kernel32.dll",
        "FolderPath": "C:\\Windows\\System32\\kernel32.dll",
        "ActionType": "ImageLoaded",
    }
    assert base is not None and base["InitiatingProcessFileName"] == "keyhook.exe"


def test_a_gate_asking_for_a_column_the_tracker_lacks_is_not_used() -> None:
    gate = _Gate(frozenset({"FileName", "SHA256"}))  # SHA256 is not known before the row is built
    rows, norm = _gated_run(gate)
    assert len(of(rows, "DeviceImageLoadEvents", "ImageLoaded")) == 2 and gate.asked == []
    assert norm.stats()["skipped"] == {}


def test_initiating_columns_are_what_a_process_gives_its_rows() -> None:
    from etwsensor.normalize.processes import INITIATING_COLUMNS

    rows, _ = run(
        [classic_start(3000, 2000, "a.exe", "C:\\a.exe", ms=0), image_load(3000, USER32, 0x1000, ms=1)]
    )
    [load] = of(rows, "DeviceImageLoadEvents", "ImageLoaded")
    assert {c for c in load if c.startswith("InitiatingProcess")} == INITIATING_COLUMNS
