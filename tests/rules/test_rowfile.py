"""Row files: coercion to the Defender column types, defaults, bad lines counted with numbers."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import zstandard

from etwsensor.sources.rowfile import read_row_file, row_to_json


def test_rows_are_coerced_and_completed(tmp_path: Path) -> None:
    p = tmp_path / "r.ndjson"
    p.write_text(
        '{"$table": "DeviceProcessEvents", "Timestamp": "2026-01-02T03:04:05.1234567Z", "ProcessId": "12",'
        ' "FileName": "a.exe", "IsProcessRemoteSession": "true", "ActionType": "Anything"}\n'
        "\n"
        '{"$table": "DeviceFileEvents", "FileSize": 3.0}\n'
    )
    reader = read_row_file(p)
    rows = list(reader)
    assert reader.bad == 0
    (t1, r1), (t2, r2) = rows
    assert t1 == "DeviceProcessEvents" and r1["ProcessId"] == 12 and r1["IsProcessRemoteSession"] is True
    assert r1["Timestamp"] == datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
    assert r1["ActionType"] == "Anything" and r1["AccountName"] == "" and r1["LogonId"] is None
    assert t2 == "DeviceFileEvents" and r2["FileSize"] == 3
    assert row_to_json({"T": r1["Timestamp"]}) == {"T": "2026-01-02T03:04:05.1234560Z"}


def test_bad_lines_are_counted_with_their_numbers(tmp_path: Path) -> None:
    p = tmp_path / "r.ndjson"
    p.write_text(
        "{nope\n"
        "[1, 2]\n"
        '{"FileName": "x"}\n'
        '{"$table": "DeviceProcessEvents", "NoSuchColumn": 1}\n'
        '{"$table": "DeviceProcessEvents", "ProcessId": "twelve"}\n'
        '{"$table": "DeviceProcessEvents", "Timestamp": "yesterday"}\n'
        '{"$table": "DeviceProcessEvents", "FileName": "ok.exe"}\n'
    )
    reader = read_row_file(p)
    rows = list(reader)
    assert [r["FileName"] for _t, r in rows] == ["ok.exe"]
    assert [n for n, _ in reader.bad_lines] == [1, 2, 3, 4, 5, 6]
    reasons = dict(reader.bad_lines)
    assert "NoSuchColumn" in reasons[4] and "ProcessId" in reasons[5] and "Timestamp" in reasons[6]


def test_zstd_row_files(tmp_path: Path) -> None:
    p = tmp_path / "r.ndjson.zst"
    p.write_bytes(zstandard.ZstdCompressor().compress(b'{"$table": "DeviceFileEvents", "FileName": "z"}\n'))
    assert [r["FileName"] for _t, r in read_row_file(p)] == ["z"]


def test_log_analytics_csv_export(tmp_path: Path) -> None:
    """Log Analytics CSV: ' [UTC]' headers, US-style times, Type names the table, extras dropped."""
    p = tmp_path / "query_data.csv"
    p.write_text(
        "TenantId,TimeGenerated [UTC],Timestamp [UTC],DeviceName,ActionType,FileName,ProcessId,Type,"
        "_BilledSize,Odd\n"
        't1,"5/1/2024, 10:00:00.123 AM","5/1/2024, 10:00:00.123 AM",pc1,ProcessCreated,a.exe,12,'
        "DeviceProcessEvents,1.5,x\n"
        't1,"5/1/2024, 1:00:00 PM",,pc1,RegistryValueSet,,,DeviceRegistryEvents,1,\n'
    )
    reader = read_row_file(p)
    rows = list(reader)
    assert reader.bad == 0 and reader.kind == "defender-csv"
    (t1, r1), (t2, r2) = rows
    assert t1 == "DeviceProcessEvents" and r1["ProcessId"] == 12 and r1["FileName"] == "a.exe"
    assert r1["Timestamp"] == datetime(2024, 5, 1, 10, 0, 0, 123000, tzinfo=UTC)
    assert t2 == "DeviceRegistryEvents" and r2["Timestamp"] == datetime(2024, 5, 1, 13, 0, tzinfo=UTC)
    assert "TenantId" not in r1 and dict(reader.dropped_columns) == {"Odd": 1}


def test_defender_api_json_export(tmp_path: Path) -> None:
    """The Advanced Hunting API's {"Schema", "Results"}: the table from the file name, Timestamp without Z."""
    p = tmp_path / "DeviceFileEvents-export.json"
    p.write_text(
        '{"Schema": [{"Name": "Timestamp", "Type": "DateTime"}], "Results": ['
        '{"Timestamp": "2024-05-01T10:00:00.5", "ActionType": "FileCreated", "FileName": "x.txt",'
        ' "FileSize": "7"},'
        '{"Timestamp": "2024-05-01T10:00:01Z", "ActionType": "FileDeleted", "FileSize": "big"}]}'
    )
    reader = read_row_file(p)
    rows = list(reader)
    assert reader.kind == "defender-json"
    assert [(t, r["ActionType"]) for t, r in rows] == [("DeviceFileEvents", "FileCreated")]
    assert rows[0][1]["Timestamp"] == datetime(2024, 5, 1, 10, 0, 0, 500000, tzinfo=UTC)
    assert rows[0][1]["FileSize"] == 7
    assert reader.bad_lines[0][0] == 2 and "FileSize" in reader.bad_lines[0][1]
