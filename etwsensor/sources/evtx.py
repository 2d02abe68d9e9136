"""EVTX files (Windows event logs: Sysmon, Security, …) read with the ``evtx`` package (pyevtx-rs).

Each record's JSON rendering is cut down to what the normalizer uses (provider, channel, event id,
version, TimeCreated, Computer, Execution pid/tid, EventData) and made a RawEvent through
``WindowsEventSource.make_event``. A chunk the parser cannot read is reported as damage with the
record numbers it held, and reading goes on with the next chunk; a record that is not a usable event
is reported with its record number and skipped.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

from etwsensor.events import RawEvent
from etwsensor.sources.damage import SourceDamage
from etwsensor.sources.header import HostInfo
from etwsensor.sources.windows_events import RecordError, WindowsEventSource, as_int

EVTX_MAGIC = b"ElfFile\x00"
_CHUNK_ERROR = re.compile(r"record IDs (\d+)\.\.(\d+)")
_MAX_DAMAGE = 1000
_HEADER_SIZE = 4096
_CHUNK_SIZE = 65536  # beyond this, damage is counted in the last entry only


class _Provider(msgspec.Struct):
    attrs: dict[str, Any] = msgspec.field(name="#attributes", default_factory=dict)


class _System(msgspec.Struct):
    """The parts of ``<System>`` the mapping uses; the decoder skips the rest."""

    Provider: _Provider = msgspec.field(default_factory=_Provider)
    EventID: Any = None
    Version: Any = 0
    TimeCreated: _Provider = msgspec.field(default_factory=_Provider)
    Execution: _Provider = msgspec.field(default_factory=_Provider)
    Channel: Any = ""
    Computer: Any = ""


_NULL = msgspec.Raw(b"null")


class _Event(msgspec.Struct):
    System: _System
    # Left undecoded until the event is known to be one the normalizer maps: most of a Sysmon log
    # (network, DNS, …) is only counted.
    EventData: msgspec.Raw = _NULL
    UserData: msgspec.Raw = _NULL


class _Record(msgspec.Struct):
    Event: _Event


def _text(node: Any) -> Any:
    """A value that may carry attributes: ``{"#attributes": …, "#text": 4688}`` → 4688."""
    return node.get("#text") if isinstance(node, dict) else node


_decode_any = msgspec.json.Decoder().decode


def event_data(event: _Event) -> dict[str, Any]:
    """EventData as name → value. Unnamed ``<Data>`` items (classic providers) stay under ``Data``."""
    data = _decode_any(event.EventData)
    if isinstance(data, dict):
        data.pop("#attributes", None)
        return data
    user = _decode_any(event.UserData)
    if isinstance(user, dict) and len(user) == 1:
        inner = next(iter(user.values()))
        if isinstance(inner, dict):
            inner.pop("#attributes", None)
            return inner
    return {}


class EvtxSource(WindowsEventSource):
    kind = "evtx"

    def __init__(self, path: Path) -> None:
        from etwsensor.sources import SourceOpenError

        super().__init__()
        self.path = path
        try:
            with path.open("rb") as fh:
                magic = fh.read(8)
        except OSError as exc:
            raise SourceOpenError(f"{path}: {exc.strerror or exc}") from exc
        if magic != EVTX_MAGIC:
            raise SourceOpenError(f"{path}: not an EVTX file (no ElfFile header)")
        self._decode = msgspec.json.Decoder(_Record).decode
        self._find_host()

    def _parser(self) -> Any:
        import evtx

        # One thread: a replay is one stream, and the benchmark measures one core.
        return evtx.PyEvtxParser(str(self.path), number_of_threads=1)

    def _find_host(self) -> None:
        try:
            for record in self._parser().records_json():
                computer = self._decode(record["data"]).Event.System.Computer
                if isinstance(computer, str) and computer:
                    self.header.host = HostInfo(name=computer.lower())
                return
        except Exception:  # an unreadable first chunk is reported when the events are read
            return

    def _damaged(self, where: str, message: str) -> None:
        if len(self._damage) < _MAX_DAMAGE:
            self._damage.append(SourceDamage(str(self.path), where, message))

    def _check_size(self) -> None:
        """The parser drops a chunk the file ends inside of without a word: say so."""
        size = self.path.stat().st_size
        cut = (size - _HEADER_SIZE) % _CHUNK_SIZE if size > _HEADER_SIZE else 0
        if cut:
            chunk = (size - _HEADER_SIZE) // _CHUNK_SIZE
            self._damaged(
                f"offset {size - cut:#x}",
                f"truncated: the file ends {cut} bytes into chunk {chunk}; its records are lost",
            )

    def events(self) -> Iterator[RawEvent]:
        self._check_size()
        try:
            records = self._parser().records_json()
        except Exception as exc:
            self._damaged("header", f"cannot be parsed: {exc}")
            return
        decode = self._decode
        make = self.make_event
        counted_only = self.counted_only
        while True:
            try:
                record = next(records)
            except StopIteration:
                return
            except Exception as exc:  # the parser reports a bad chunk or record, then goes on
                message = str(exc)
                m = _CHUNK_ERROR.search(message)
                where = f"records {m.group(1)}..{m.group(2)}" if m else "chunk"
                self._damaged(where, f"skipped: {message}")
                continue
            number = record.get("event_record_id", 0)
            try:
                event = decode(record["data"]).Event
                system = event.System
                provider = system.Provider.attrs
                name, channel = provider.get("Name") or "", system.Channel or ""
                event_id, version = as_int(_text(system.EventID), -1), as_int(system.Version)
                if counted_only(name, channel, event_id, version, provider.get("Guid") or ""):
                    continue
                execution = system.Execution.attrs
                yield make(
                    name,
                    channel,
                    event_id,
                    version,
                    system.TimeCreated.attrs.get("SystemTime") or record.get("timestamp"),
                    event_data(event),
                    as_int(execution.get("ProcessID")),
                    as_int(execution.get("ThreadID")),
                    provider.get("Guid") or "",
                )
            except (RecordError, KeyError, TypeError, AttributeError, msgspec.DecodeError) as exc:
                self._damaged(f"record {number}", f"malformed, skipped: {exc!r}")
