"""Normalize RawEvents into rows of the five Defender for Endpoint tables."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from etwsensor.normalize.models import full_row, table_model, table_models, validate_row
from etwsensor.normalize.normalizer import Normalizer, TableRow
from etwsensor.normalize.paths import DeviceMapError, PathResolver, parse_device_map, registry_key

__all__ = [
    "DeviceMapError",
    "Normalizer",
    "PathResolver",
    "TableRow",
    "full_row",
    "is_row_file",
    "iter_rows",
    "parse_device_map",
    "registry_key",
    "table_model",
    "table_models",
    "validate_row",
]


def is_row_file(path: Path) -> bool:
    """Files of already-normalized rows (``.ndjson``/``.ndjson.zst`` with a ``"$table"`` key per line)."""
    from etwsensor.sources import source_kind

    return source_kind(path) == "rows"


def iter_rows(path: Path, device_map: str | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every row a recording, .etl file or row file yields, as ``(table, row)``.

    Event sources are normalized (sparse rows); row files are read through
    ``etwsensor.sources.rowfile.read_row_file`` (full rows, coerced to the column types).
    """
    if is_row_file(path):
        from etwsensor.sources.rowfile import read_row_file

        yield from read_row_file(path)
        return
    from etwsensor.sources import open_source

    source = open_source(path)
    normalizer = Normalizer(source.header, device_map=device_map)
    process = normalizer.process
    for event in source.events():
        rows = process(event)
        if rows:
            yield from rows
    yield from normalizer.flush()
