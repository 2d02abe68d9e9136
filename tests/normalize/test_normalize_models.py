"""The table models against the documented column lists (tests/data/defender/defender_tables.json)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from etwsensor.normalize.models import full_row, table_models, validate_row

DOCUMENTED = json.loads((Path(__file__).parents[1] / "data/defender/defender_tables.json").read_text("utf-8"))
PY_TYPES = {"string": str, "long": int, "int": int, "bool": bool, "datetime": datetime, "dynamic": dict}
SOURCES = json.loads(
    (Path(__file__).parents[2] / "etwsensor/data/defender_tables.sources.json").read_text("utf-8")
)


@pytest.mark.parametrize(
    ("table", "count"),
    [
        ("DeviceProcessEvents", 68),
        ("DeviceImageLoadEvents", 41),
        ("DeviceRegistryEvents", 43),
        ("DeviceFileEvents", 58),
        ("DeviceEvents", 65),
    ],
)
def test_models_have_every_documented_column_in_order(table: str, count: int) -> None:
    model = table_models()[table]
    documented = [c["name"] for c in DOCUMENTED[table]]
    assert len(documented) == count
    assert list(model.model_fields) == documented


@pytest.mark.parametrize("table", list(DOCUMENTED))
def test_defaults_are_defenders_empty_values(table: str) -> None:
    empty = table_models()[table]()
    for column in DOCUMENTED[table]:
        value = getattr(empty, column["name"])
        assert value == ("" if column["type"] == "string" else None), column


@pytest.mark.parametrize("table", list(DOCUMENTED))
def test_model_accepts_each_documented_type(table: str) -> None:
    sample = {"string": "x", "long": 7, "int": 7, "bool": True, "datetime": datetime(2026, 1, 1, tzinfo=UTC),
              "dynamic": {"BackgroundCallCount": 7}}
    row = {c["name"]: sample[c["type"]] for c in DOCUMENTED[table]}
    validated = validate_row(table, row)
    for column in DOCUMENTED[table]:
        assert isinstance(getattr(validated, column["name"]), PY_TYPES[column["type"]])


def test_unknown_column_is_rejected() -> None:
    with pytest.raises(ValidationError, match="NotAColumn"):
        validate_row("DeviceFileEvents", {"NotAColumn": 1})


def test_full_row_fills_defaults_in_documented_order() -> None:
    row = full_row("DeviceImageLoadEvents", {"FileName": "user32.dll", "InitiatingProcessId": 9, "Junk": 1})
    assert list(row) == [c["name"] for c in DOCUMENTED["DeviceImageLoadEvents"]]
    assert row["FileName"] == "user32.dll"
    assert row["InitiatingProcessId"] == 9
    assert row["SHA1"] == ""
    assert row["Timestamp"] is None


def test_every_table_names_where_its_columns_come_from() -> None:
    assert set(SOURCES) == set(DOCUMENTED)
    assert "advanced-hunting-deviceevents-table.md" in SOURCES["DeviceEvents"]["source"]


def test_device_events_additional_fields_is_dynamic_and_the_rest_as_documented() -> None:
    types = {c["name"]: c["type"] for c in DOCUMENTED["DeviceEvents"]}
    assert types["AdditionalFields"] == "dynamic"
    assert (types["RemotePort"], types["ProcessCreationTime"], types["IsProcessRemoteSession"]) == (
        "int", "datetime", "bool")
    assert list(types)[-1] == "InitiatingProcessUniqueId"
