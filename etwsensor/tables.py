"""The five Defender for Endpoint tables etwsensor produces: column names, order and KQL types.

The column lists are data (``etwsensor/data/defender_tables.json``, from Microsoft's
advanced-hunting reference; where each list comes from is in ``defender_tables.sources.json`` beside
it). Everything that needs to know a table's shape (normalizer,
rule compiler, row files) asks this module.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Literal

KqlType = Literal["string", "long", "int", "bool", "datetime", "real", "dynamic", "timespan", "guid"]

TABLE_NAMES: tuple[str, ...] = (
    "DeviceProcessEvents",
    "DeviceImageLoadEvents",
    "DeviceRegistryEvents",
    "DeviceFileEvents",
    "DeviceEvents",
)


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: KqlType


@dataclass(frozen=True, slots=True)
class TableSchema:
    name: str
    columns: tuple[Column, ...]

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def type_of(self, column: str) -> KqlType | None:
        for c in self.columns:
            if c.name == column:
                return c.type
        return None

    def empty_row(self) -> dict[str, object]:
        """A row as Defender leaves unfilled columns: strings "", everything else null."""
        return {c.name: ("" if c.type == "string" else None) for c in self.columns}


@cache
def schemas() -> dict[str, TableSchema]:
    raw = json.loads(resources.files("etwsensor").joinpath("data/defender_tables.json").read_text("utf-8"))
    return {
        name: TableSchema(name, tuple(Column(c["name"], c["type"]) for c in raw[name]))
        for name in TABLE_NAMES
    }


def schema(table: str) -> TableSchema:
    """The schema of one table; KeyError names the table when it is not one of the five."""
    return schemas()[table]
