"""An .etl file as an event source: the .etl reader's records through the payload decoder.

The live session hands the same decoder the same RawRecords, so what is tested here on real
Windows traces is what runs on a host.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from etwsensor.decode.decoder import Decoder
from etwsensor.events import RawEvent, RawRecord
from etwsensor.sources.damage import SourceDamage
from etwsensor.sources.header import HostInfo, RecordingHeader


class EtlSource:
    """``host_name``: the DeviceName already known (``--device-name``): the file is then not read ahead
    for its SystemConfig record."""

    def __init__(self, path: Path, decoder: Decoder | None = None, host_name: str | None = None) -> None:
        from etwsensor.sources import SourceOpenError
        from etwsensor.sources.etl import EtlFormatError, EtlReader

        self.path = path
        try:
            self._reader = EtlReader(path)
        except EtlFormatError as exc:
            raise SourceOpenError(str(exc)) from exc
        h = self._reader.header
        self.etl_header = h
        from etwsensor.enrich.device import device_id_from_name, etl_host_name

        # DeviceName for every row, not just those after the record: read ahead unless it is given
        name = host_name if host_name else etl_host_name(self._reader)
        self.header = RecordingHeader(
            host=HostInfo(
                name=name,
                device_id=device_id_from_name(name) if name else "",
                os_build=f"{h.os_version}.{h.os_build}" if h.os_build else "",
            ),
            pointer_size=8 if h.pointer_size == 8 else 4,
            start=h.start_time,
        )
        self.decoder = decoder or Decoder()
        self.stats = self.decoder.stats

    @property
    def damage(self) -> list[SourceDamage]:
        return [SourceDamage(str(d.path), f"offset {d.offset:#x}", d.message) for d in self._reader.damage]

    def events(self) -> Iterator[RawEvent]:
        """The decoded events; records of providers the decoder does not know are only counted (as
        ``other``), without being built."""
        decode = self.decoder.decode
        try:
            for rec in self._reader.records(only=self.decoder.known_guids):
                ev = decode(rec)
                if ev is not None:
                    yield ev
        finally:
            self._count_passed_over()

    def records(self) -> Iterator[RawRecord]:
        """The raw records ``events`` would decode (of the providers the decoder knows), undecoded: for a
        caller that picks by ``decoder.identify`` which to decode (the CPU ceiling sheds before decoding)."""
        try:
            yield from self._reader.records(only=self.decoder.known_guids)
        finally:
            self._count_passed_over()

    def _count_passed_over(self) -> None:
        passed_over = self._reader.stats.passed_over
        for (guid, manifest, key, version), count in passed_over.items():
            self.decoder.count_other(guid, manifest, key, version, count)
        passed_over.clear()
