"""The stateful stage: RawEvents in, Defender rows out.

``Normalizer.process(event)`` returns the rows that event completes (often none); call
``flush()`` at the end of a stream for rows still waiting on a partner event. Rows are sparse
dicts keyed by Defender column names (a missing column means the table default); use
``etwsensor.normalize.models.full_row`` to fill them at the edges.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from etwsensor.events import DecodeStatus, RawEvent
from etwsensor.normalize.accounts import AccountResolver
from etwsensor.normalize.cache import BoundedCache
from etwsensor.normalize.files import FileTracker
from etwsensor.normalize.images import ImageTracker
from etwsensor.normalize.paths import PathResolver, parse_device_map
from etwsensor.normalize.processes import ProcessTracker
from etwsensor.normalize.registry import RegistryTracker
from etwsensor.normalize.rows import Handlers, Row, RowGate, RowSink
from etwsensor.normalize.win32k import Win32kTracker
from etwsensor.normalize.windows_events import WindowsEventTracker
from etwsensor.sources.header import RecordingHeader

if TYPE_CHECKING:
    from etwsensor.enrich import Enricher

TableRow = tuple[str, Row]
_NO_ROWS: tuple[TableRow, ...] = ()
_OK = DecodeStatus.OK
_MAX_ERROR_SAMPLES = 20


class Normalizer:
    """Turns one host's RawEvent stream into DeviceProcess/ImageLoad/Registry/File/DeviceEvents rows.

    ``device_map``: a ``--device-map`` string (``C:=\\Device\\HarddiskVolume3;…`` or a JSON file)
    or a {NT device: drive} mapping; it wins over the header and the trace's own records.

    ``gates`` (``RuleSet.row_gates()``): when given, image-load and file rows that no loaded rule
    can match are counted but not built (``stats()["skipped"]``); the pipeline passes them, the
    ``normalize`` command does not.

    ``facts`` (etwsensor.enrich): fills hashes, sizes, version info and signatures into the rows of
    each event; ImageFacts events in the stream feed it (one is made when the first arrives).
    """

    def __init__(
        self,
        header: RecordingHeader | None = None,
        device_map: str | Mapping[str, str] | None = None,
        gates: Mapping[str, RowGate] | None = None,
        facts: Enricher | None = None,
    ) -> None:
        header = header or RecordingHeader()
        pinned = parse_device_map(device_map) if isinstance(device_map, str) else device_map
        self.header = header
        self.paths = PathResolver(header.device_map, header.system_root, pinned)
        self.accounts = AccountResolver(header.sids)
        self.sink = RowSink(header.host.device_id, header.host.name)
        self.processes = ProcessTracker(self.sink, self.paths, self.accounts)
        self.images = ImageTracker(self.sink, self.paths, self.processes, gates=gates)
        self.registry = RegistryTracker(self.sink, self.processes)
        self.files = FileTracker(self.sink, self.paths, self.processes, gates=gates)
        self.win32k = Win32kTracker(self.sink, self.processes)
        self.facts = facts
        self.windows = WindowsEventTracker(self.sink, self.processes)
        self._pending_starts = self.processes.pending  # the same dict: checked per event, cheaply
        self._handlers: Handlers = {
            **self.processes.handlers(),
            **self.images.handlers(),
            **self.registry.handlers(),
            **self.files.handlers(),
            **self.win32k.handlers(),
            **self.windows.handlers(),
            ("SystemConfigEx", "VolumeMapping"): self._volume_mapping,
            ("SystemConfigEx", "SystemPaths"): self._system_paths,
            ("etwsensor-ImageFacts", "ImageFacts"): self._image_facts,
            ("SystemConfig", "CPU"): self._host_name,
        }
        self.events = 0
        self.decode_errors = 0
        self.bad_events = 0  # decoded, but fields not as the provider data promise: skipped
        self.error_samples: list[str] = []

    def regate(self, gates: Mapping[str, RowGate] | None) -> None:
        """A new rule set went live (hot reload): its gates apply from the next event on."""
        self.images.regate(gates)
        self.files.regate(gates)

    def process(self, event: RawEvent) -> Sequence[TableRow]:
        """The rows ``event`` completes, in order; never raises on bad input (it is counted)."""
        self.events += 1
        if event.status is not _OK:
            self.decode_errors += 1
            return _NO_ROWS
        if self._pending_starts:
            self.processes.advance(event.ts)
        due = self.win32k.first_end
        if due is not None and event.ts >= due:  # a GetAsyncKeyState window is due
            self.win32k.advance(event.ts)
        handler = self._handlers.get((event.provider, event.name))
        if handler is not None:
            try:
                handler(event)
            except Exception as exc:  # one malformed event must not stop the stream
                self._bad(event, exc)
        sink = self.sink
        if not sink.out:
            return _NO_ROWS
        rows = sink.out
        sink.out = []
        if self.facts is not None:
            self.facts.complete(rows, event.ts)
        return rows

    def flush(self) -> Sequence[TableRow]:
        """End of stream: emit rows that were waiting for a partner event."""
        self.processes.flush()
        self.files.flush()
        self.win32k.flush()
        rows = self.sink.out
        self.sink.out = []
        if self.facts is not None and rows:
            self.facts.complete(rows, rows[-1][1]["Timestamp"])
        return rows

    def _bad(self, event: RawEvent, exc: Exception) -> None:
        self.bad_events += 1
        if len(self.error_samples) < _MAX_ERROR_SAMPLES:
            self.error_samples.append(f"{event.provider}/{event.name} at {event.ts.isoformat()}: {exc!r}")

    # --- trace metadata ------------------------------------------------------------------------

    def _volume_mapping(self, event: RawEvent) -> None:
        f = event.fields
        self.paths.add_mapping(f.get("NtPath") or "", f.get("DosPath") or "")
        self.processes.remap()

    def _system_paths(self, event: RawEvent) -> None:
        windows = event.fields.get("SystemWindowsDirectory") or ""
        if windows:
            self.paths.set_system_root(windows)
            self.processes.remap()

    def _host_name(self, event: RawEvent) -> None:
        """SystemConfig CPU names the host: DeviceName (and an id derived from it) when nothing did."""
        name = event.fields.get("ComputerName")
        if isinstance(name, str) and name and not self.sink.device_name:
            from etwsensor.enrich.device import device_id_from_name

            self.sink.device_name = name
            self.sink.device_id = self.sink.device_id or device_id_from_name(name)

    def _image_facts(self, event: RawEvent) -> None:
        if self.facts is None:
            from etwsensor.enrich import Enricher

            self.facts = Enricher()
        self.facts.apply_event(event)

    # --- quality -------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counts for the summary: events, rows per table and ActionType, unresolved rows, caches."""
        caches: dict[str, dict[str, int]] = {"processes": self.processes.stats()}
        caches["getasynckeystate_windows"] = self.win32k.stats()
        named: list[BoundedCache[Any, Any]] = [self.images.loaded, self.registry.keys, self.registry.kcbs]
        for cache in (*named, *self.files.caches()):
            caches[cache.name] = cache.stats()
        return {
            "events": self.events,
            "rows": {table: dict(actions) for table, actions in self.sink.counts.items()},
            "unresolved": dict(self.sink.unresolved),
            "skipped": dict(self.sink.skipped),
            "events_without_rows": dict(self.windows.skipped),
            "decode_errors": self.decode_errors,
            "bad_events": self.bad_events,
            "unknown_devices": self.paths.unknown_devices,
            "inferred_device_map": dict(self.paths.inferred),
            "caches": caches,
            **({"enrich": self.facts.stats()} if self.facts is not None else {}),
        }
