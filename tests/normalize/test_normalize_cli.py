"""`etwsensor normalize` as a user runs it, on small constructed recordings."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from normalize_builders import classic_start, image_load, manifest_start
from typer.testing import CliRunner

from etwsensor.cli import app
from etwsensor.sources.header import HostInfo, RecordingHeader
from etwsensor.sources.recording import write_recording
from etwsensor.tables import schema

VOL = "\\Device\\HarddiskVolume3"


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def etwsensor(*args: str) -> Result:
    """In-process, as the installed command runs (one test below goes through a real process)."""
    r = CliRunner().invoke(app, list(args))
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return Result(r.exit_code, r.stdout, r.stderr)


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rec") / "small.jsonl.zst"
    header = RecordingHeader(host=HostInfo(name="ws01.test"), device_map={VOL: "C:"})
    events = [
        classic_start(2000, 600, "explorer.exe", "C:\\Windows\\Explorer.EXE", name="DCStart"),
        manifest_start(4242, 2000, VOL + "\\Windows\\System32\\notepad.exe", ms=10),
        classic_start(4242, 2000, "notepad.exe", "notepad.exe a.txt", ms=11),
        image_load(4242, VOL + "\\Windows\\System32\\user32.dll", 0x7FF0, ms=12),
    ]
    write_recording(path, header, events)
    return path


def lines(stdout: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in stdout.splitlines()]


def test_rows_are_full_ndjson_with_table_key_constructed(recording: Path) -> None:
    r = etwsensor("normalize", str(recording))
    assert r.returncode == 0, r.stderr
    rows = lines(r.stdout)
    assert [row["$table"] for row in rows] == ["DeviceProcessEvents", "DeviceImageLoadEvents"]
    for row in rows:
        assert list(row)[1:] == list(schema(str(row["$table"])).column_names)
    assert rows[0]["FolderPath"] == "C:\\Windows\\System32\\notepad.exe"
    assert rows[0]["Timestamp"] == "2026-11-27T12:00:00.0100000Z"
    assert rows[1]["SHA1"] == "" and rows[1]["FileSize"] is None
    assert "DeviceProcessEvents: ProcessCreated 1" in r.stderr


def test_table_filter_constructed(recording: Path) -> None:
    r = etwsensor("normalize", str(recording), "--table", "deviceimageloadevents")
    assert r.returncode == 0, r.stderr
    assert [row["$table"] for row in lines(r.stdout)] == ["DeviceImageLoadEvents"]


def test_json_summary_is_one_object_constructed(recording: Path) -> None:
    r = etwsensor("normalize", str(recording), "--json-summary")
    assert r.returncode == 0, r.stderr
    (summary,) = lines(r.stdout)
    assert summary["events"] == 4
    assert summary["rows"] == {
        "DeviceProcessEvents": {"ProcessCreated": 1},
        "DeviceImageLoadEvents": {"ImageLoaded": 1},
    }
    assert summary["unresolved"] == {}
    assert summary["decode_errors"] == 0
    assert {"processes", "file_objects", "registry_key_objects"} <= set(summary["caches"])  # type: ignore[arg-type]


def test_device_map_option_overrides_the_header_constructed(recording: Path) -> None:
    r = etwsensor(
        "normalize", str(recording), "--table", "DeviceImageLoadEvents", "--device-map", f"E:={VOL}"
    )
    assert r.returncode == 0, r.stderr
    assert lines(r.stdout)[0]["FolderPath"] == "E:\\Windows\\System32\\user32.dll"


@pytest.mark.parametrize("args", [["--device-map", "nonsense"], ["--table", "DeviceNetworkEvents"]])
def test_usage_errors_exit_2_constructed(recording: Path, args: list[str]) -> None:
    r = etwsensor("normalize", str(recording), *args)
    assert r.returncode == 2
    assert r.stdout == ""
    assert "error:" in r.stderr


def test_missing_file_exits_2(tmp_path: Path) -> None:
    r = etwsensor("normalize", str(tmp_path / "nope.jsonl"))
    assert r.returncode == 2 and "no such file" in r.stderr


def test_row_files_pass_through_constructed(tmp_path: Path) -> None:
    rows = tmp_path / "rows.ndjson"
    rows.write_text(
        json.dumps({"$table": "DeviceFileEvents", "ActionType": "FileCreated", "FileName": "keylog.txt"})
        + "\n"
        + "not json\n",
        "utf-8",
    )
    r = etwsensor("normalize", str(rows))
    assert r.returncode == 3  # one damaged line; the rest still came out
    (row,) = lines(r.stdout)
    assert row["FileName"] == "keylog.txt" and row["FolderPath"] == ""
    assert "line 2" in r.stderr


def test_end_to_end_in_a_process_constructed(recording: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "etwsensor", "normalize", str(recording), "--json-summary"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["rows"]["DeviceImageLoadEvents"] == {"ImageLoaded": 1}


def test_iter_rows_reads_recordings_and_row_files_constructed(recording: Path, tmp_path: Path) -> None:
    from etwsensor.normalize import iter_rows

    loads = [r for t, r in iter_rows(recording, device_map=f"F:={VOL}") if t == "DeviceImageLoadEvents"]
    assert [r["FolderPath"] for r in loads] == ["F:\\Windows\\System32\\user32.dll"]
    rows = tmp_path / "rows.ndjson"
    rows.write_text(json.dumps({"$table": "DeviceProcessEvents", "ProcessId": "42"}) + "\n", "utf-8")
    ((table, row),) = list(iter_rows(rows))
    assert table == "DeviceProcessEvents" and row["ProcessId"] == 42 and row["FileName"] == ""
