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
