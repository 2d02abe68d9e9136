"""pydantic models of the five Defender tables, built from ``etwsensor.tables`` (the column data).

Every documented column in documented order with its KQL type; unfilled columns take Defender's
defaults (strings "", numbers, bools and datetimes null). The hot path carries sparse dicts;
``full_row`` fills them for output and ``validate_row`` checks them against the contract.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import cache
from typing import Any

from pydantic import BaseModel, ConfigDict, create_model

from etwsensor.tables import TABLE_NAMES, KqlType, schema

_PYTHON_TYPES: dict[KqlType, Any] = {
    "string": str,
    "guid": str,
    "long": int | None,
    "int": int | None,
    "bool": bool | None,
    "datetime": datetime | None,
    "real": float | None,
    "timespan": timedelta | None,
    "dynamic": Any,
}


class DefenderRow(BaseModel):
    """Base of the table models: unknown columns are an error, values keep their Python types."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@cache
def table_model(table: str) -> type[DefenderRow]:
    """The model class of one table (KeyError for a table that is not one of the five)."""
    fields: dict[str, Any] = {
        c.name: (_PYTHON_TYPES[c.type], "" if c.type in ("string", "guid") else None)
        for c in schema(table).columns
    }
    model: type[DefenderRow] = create_model(table, __base__=DefenderRow, **fields)
    return model


def table_models() -> dict[str, type[DefenderRow]]:
    return {name: table_model(name) for name in TABLE_NAMES}


@cache
def _empty(table: str) -> dict[str, object]:
    return schema(table).empty_row()


def full_row(table: str, row: dict[str, Any]) -> dict[str, Any]:
    """All columns of ``table`` in documented order: the row's values over the table defaults.

    Keys that are not columns of the table are dropped (callers validate when they care).
    """
    out = dict(_empty(table))
    for name, value in row.items():
        if name in out:
            out[name] = value
    return out


def validate_row(table: str, row: dict[str, Any]) -> DefenderRow:
    """The row as a validated model; pydantic.ValidationError names each bad column."""
    return table_model(table).model_validate(row)
