"""The perfview trace (real Windows 8 x64, tests/data/etl) through .etl reader, decoder and normalizer:
the acceptance figures of issue 3."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from etwsensor.normalize import Normalizer, full_row, iter_rows, validate_row
from etwsensor.sources import open_source

ETL = Path(__file__).parents[1] / "data/etl/perfview_net.4.5.2.x64.etl"

Rows = list[tuple[str, dict[str, Any]]]


@pytest.fixture(scope="module")
def normalized() -> tuple[Rows, Normalizer]:
    source = open_source(ETL)
    normalizer = Normalizer(source.header)
    rows: Rows = []
    for event in source.events():
        rows.extend(normalizer.process(event))
    rows.extend(normalizer.flush())
    return rows, normalizer


def of(rows: Rows, table: str, action: str) -> list[dict[str, Any]]:
    return [r for t, r in rows if t == table and r["ActionType"] == action]


def test_exactly_one_process_created_for_pid_3676_real_etl(normalized: tuple[Rows, Normalizer]) -> None:
    rows, _ = normalized
    created = of(rows, "DeviceProcessEvents", "ProcessCreated")
    assert len(created) == 1
    row = created[0]
    assert row["ProcessId"] == 3676
    assert row["FileName"] == "Test.x64.exe"
    assert row["FolderPath"] == "\\\\clrmain\\public\\PerfInvestigations\\20-07-28.TestTraces\\Test.x64.exe"
    assert row["ProcessCommandLine"] == "Test.x64.exe"
    assert row["ProcessCreationTime"] == datetime(2020, 7, 29, 0, 7, 3, 356400, tzinfo=UTC)
    assert row["InitiatingProcessId"] == 3508
    assert row["InitiatingProcessFileName"] == "cmd.exe"  # known from the classic rundown
    assert row["InitiatingProcessFolderPath"] == "C:\\Windows\\System32\\cmd.exe"  # from the image rundown
    assert row["InitiatingProcessParentFileName"] == "explorer.exe"


def test_35_image_loads_none_from_rundown_real_etl(normalized: tuple[Rows, Normalizer]) -> None:
    rows, _ = normalized
    loads = of(rows, "DeviceImageLoadEvents", "ImageLoaded")
    assert len(loads) == 35
    user32 = [r for r in loads if r["FileName"].lower() == "user32.dll"]
    assert [r["FolderPath"] for r in user32] == ["C:\\Windows\\System32\\user32.dll"]
    assert user32[0]["InitiatingProcessFileName"] == "Test.x64.exe"


def test_14_files_created_real_etl(normalized: tuple[Rows, Normalizer]) -> None:
    rows, _ = normalized
    created = of(rows, "DeviceFileEvents", "FileCreated")
    assert len(created) == 14
    temp = [r for r in created if r["FolderPath"].startswith("C:\\Windows\\TEMP\\")]
    prefetch = [r for r in created if r["FolderPath"].startswith("C:\\Windows\\Prefetch\\")]
    assert (len(temp), len(prefetch)) == (13, 1)
    assert prefetch[0]["FileName"] == "TEST.X64.EXE-6B94365B.pf"


def test_no_nt_device_paths_left_real_etl(normalized: tuple[Rows, Normalizer]) -> None:
    rows, normalizer = normalized
    for _, row in rows:
        for column in ("FolderPath", "InitiatingProcessFolderPath", "PreviousFolderPath"):
            assert not str(row.get(column, "")).startswith("\\Device\\"), row
    stats = normalizer.stats()
    assert stats["unresolved"] == {}
    assert stats["decode_errors"] == 0 and stats["bad_events"] == 0


def test_rows_validate_against_the_table_models_real_etl(normalized: tuple[Rows, Normalizer]) -> None:
    rows, _ = normalized
    for table, row in rows:
        validate_row(table, full_row(table, row))


def test_iter_rows_gives_the_same_rows_real_etl(normalized: tuple[Rows, Normalizer]) -> None:
    rows, _ = normalized
    assert [(t, r["ReportId"]) for t, r in iter_rows(ETL)] == [(t, r["ReportId"]) for t, r in rows]
