"""Sources: everything that produces RawEvents (.etl files, recordings, Windows event logs, live sessions).

``open_source(path)`` picks the reader by file type; every source has the same face: a ``header``
(what the host looked like), ``events()`` (RawEvents, in file order), ``stats`` (counts per event)
and ``damage`` (what could not be read, with where). Windows event logs are EVTX files and JSON
exports of Windows events (Winlogbeat/ECS, flat Sysmon JSON). Row files (.ndjson rows, Defender
Advanced Hunting exports in CSV or JSON) are not event sources: they go straight to the rules (see
etwsensor.normalize.iter_rows).
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
_EVTX_MAGIC = b"ElfFile\x00"


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
    """ "etl", "recording", "evtx", "windows-json" (Winlogbeat/ECS or flat Sysmon JSON) or "rows"
    (row files, Defender exports), by name first and by the content when the name says nothing
    or a JSON file could hold either events or rows."""
    name = path.name.lower()
    if name.endswith(".etl"):
        return "etl"
    if name.endswith(".evtx"):
        return "evtx"
    if name.endswith(".csv"):
        return "rows"
    if name.endswith((".jsonl", ".jsonl.zst")):
        return "recording"
    try:
        with path.open("rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        raise SourceOpenError(f"{path}: {exc.strerror or exc}") from exc
    if head == _EVTX_MAGIC:
        return "evtx"
    json_like = name.endswith((".json", ".ndjson", ".ndjson.zst", ".json.zst"))
    if json_like or head.lstrip()[:1] in (b"{", b"["):
        kind = _json_kind(path)
        if kind is not None:
            return kind
        if json_like:
            return "rows"
    return "recording" if head.startswith((b"{", _ZSTD_MAGIC)) else "etl"


def _json_kind(path: Path) -> str | None:
    from etwsensor.sources.jsondocs import first_object
    from etwsensor.sources.winlog_json import document_kind

    try:
        first = first_object(path)
    except Exception:  # unreadable or not JSON: the reader reports it
        return None
    if first is None:
        return None
    if first.get("format") == "etwsensor-recording":
        return "recording"
    if document_kind(first) is not None:
        return "windows-json"
    return "rows"


def open_source(path: Path, host_name: str | None = None) -> EventSource:
    """Open an .etl file, a recording or a Windows event log. Raises SourceOpenError otherwise.
    ``host_name``: the DeviceName already known (``--device-name``); an .etl file is then not read
    ahead for its own."""
    kind = source_kind(path)
    if not path.is_file():
        raise SourceOpenError(f"{path}: no such file")
    if kind == "rows":
        raise SourceOpenError(f"{path}: a row file holds table rows, not ETW events")
    if kind == "etl":
        from etwsensor.sources.etl_source import EtlSource

        return EtlSource(path, host_name=host_name)
    if kind == "evtx":
        from etwsensor.sources.evtx import EvtxSource

        return EvtxSource(path)
    if kind == "windows-json":
        from etwsensor.sources.winlog_json import WinlogJsonSource

        return WinlogJsonSource(path)
    from etwsensor.sources.recording import RecordingFormatError, RecordingReader

    try:
        return RecordingReader(path)
    except RecordingFormatError as exc:
        raise SourceOpenError(str(exc)) from exc
