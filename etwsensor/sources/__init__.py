"""Sources: everything that produces RawEvents (.etl files, recordings, live sessions).

``open_source(path)`` picks the reader by file type; every source has the same face: a ``header``
(what the host looked like), ``events()`` (RawEvents, in file order), ``stats`` (counts per event)
and ``damage`` (what could not be read, with where). Row files (.ndjson) are not event sources:
they go straight to the rules (see etwsensor.normalize.iter_rows).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from etwsensor.decode.decoder import DecodeStats
from etwsensor.events import RawEvent
from etwsensor.sources.damage import SourceDamage
from etwsensor.sources.header import RecordingHeader

__all__ = ["EventSource", "SourceDamage", "SourceOpenError", "open_source", "source_kind"]

_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class SourceOpenError(ValueError):
    """The input cannot be read at all: names the file and the reason."""


class EventSource(Protocol):
    path: Path
    header: RecordingHeader
    stats: DecodeStats

    @property
    def damage(self) -> list[SourceDamage]: ...

    def events(self) -> Iterator[RawEvent]: ...


def source_kind(path: Path) -> str:
    """ "etl", "recording" or "rows", by name first and by the first bytes when the name says nothing."""
    name = path.name.lower()
    if name.endswith(".etl"):
        return "etl"
    if name.endswith((".jsonl", ".jsonl.zst")):
        return "recording"
    if name.endswith((".ndjson", ".ndjson.zst")):
        return "rows"
    try:
        with path.open("rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        raise SourceOpenError(f"{path}: {exc.strerror or exc}") from exc
    return "recording" if head.startswith((b"{", _ZSTD_MAGIC)) else "etl"


def open_source(path: Path) -> EventSource:
    """Open an .etl file or a recording. Raises SourceOpenError when it is neither."""
    kind = source_kind(path)
    if not path.is_file():
        raise SourceOpenError(f"{path}: no such file")
    if kind == "rows":
        raise SourceOpenError(f"{path}: a row file holds table rows, not ETW events")
    if kind == "etl":
        from etwsensor.sources.etl_source import EtlSource

        return EtlSource(path)
    from etwsensor.sources.recording import RecordingFormatError, RecordingReader

    try:
        return RecordingReader(path)
    except RecordingFormatError as exc:
        raise SourceOpenError(str(exc)) from exc
