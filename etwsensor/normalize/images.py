"""Image loads → DeviceImageLoadEvents.

Real loads come from the classic Image Load (opcode 10) and Kernel-Process ImageLoad (id 5); when
both report the same (pid, ImageBase) it is one row. Rundown (Image DCStart) makes no rows; it
only tells the process table where each process's image lives.
"""

from __future__ import annotations

from collections.abc import Mapping

from etwsensor.events import RawEvent
from etwsensor.normalize.cache import BoundedCache
from etwsensor.normalize.paths import PathResolver
from etwsensor.normalize.processes import INITIATING_COLUMNS, ProcessTracker
from etwsensor.normalize.rows import Handlers, Row, RowGate, RowSink, path_unresolved, usable_gate

IMAGE_TABLE = "DeviceImageLoadEvents"
_CLASSIC, _MANIFEST = "classic", "manifest"
# What an image-load row has before it is built: enough to ask the rules' gate.
_GATE_COLUMNS = INITIATING_COLUMNS | {"FileName", "FolderPath", "ActionType"}
# A gate that reads only these answers the same for every load of the same path: remembered.
_PATH_COLUMNS = frozenset({"FileName", "FolderPath", "ActionType"})
_VERDICTS = 4096  # remembered paths; the memo starts afresh when full


class ImageTracker:
    def __init__(
        self,
        sink: RowSink,
        paths: PathResolver,
        processes: ProcessTracker,
        max_loaded: int = 8192,
        gates: Mapping[str, RowGate] | None = None,
    ) -> None:
        self._sink = sink
        self._paths = paths
        self._processes = processes
        self._gate = usable_gate(gates, IMAGE_TABLE, _GATE_COLUMNS)
        self._verdicts = _verdict_memo(self._gate)
        # (pid, ImageBase) → which provider reported the load; for the classic/manifest de-duplication
        self.loaded: BoundedCache[tuple[int, int], str] = BoundedCache("image_loads", max_loaded)

    def regate(self, gates: Mapping[str, RowGate] | None) -> None:
        """Gate rows with a new rule set's gates from the next event on (a hot reload)."""
        self._gate = usable_gate(gates, IMAGE_TABLE, _GATE_COLUMNS)
        self._verdicts = _verdict_memo(self._gate)

    def handlers(self) -> Handlers:
        return {
            ("Image", "Load"): self._classic_load,
            ("Image", "DCStart"): self._classic_rundown,
            ("Image", "UnLoad"): self._classic_unload,
            ("Microsoft-Windows-Kernel-Process", "ImageLoad"): self._manifest_load,
            ("Microsoft-Windows-Kernel-Process", "ImageUnload"): self._manifest_unload,
        }

    def _classic_load(self, ev: RawEvent) -> None:
        f = ev.fields
        self._load(ev, f.get("ProcessId", ev.pid), f.get("ImageBase", 0), f.get("FileName", ""), _CLASSIC)

    def _manifest_load(self, ev: RawEvent) -> None:
        f = ev.fields
        self._load(ev, f.get("ProcessID", ev.pid), f.get("ImageBase", 0), f.get("ImageName", ""), _MANIFEST)

    def _classic_rundown(self, ev: RawEvent) -> None:
        f = ev.fields
        self._processes.learn_image(f.get("ProcessId", ev.pid), f.get("FileName", ""))

    def _classic_unload(self, ev: RawEvent) -> None:
        f = ev.fields
        self.loaded.pop((f.get("ProcessId", ev.pid), f.get("ImageBase", 0)))

    def _manifest_unload(self, ev: RawEvent) -> None:
        f = ev.fields
        self.loaded.pop((f.get("ProcessID", ev.pid), f.get("ImageBase", 0)))

    def _load(self, ev: RawEvent, pid: int, base: int, nt_path: str, source: str) -> None:
        key = (pid, base)
        seen = self.loaded.swap(key, source)
        if seen is not None and seen != source:
            self.loaded.pop(key)  # the other provider's report of the same load
            return
        path = self._paths.to_dos(nt_path)
        proc = self._processes.image_loaded(pid, path)
        name = path[path.rfind("\\") + 1 :]  # file_name_of, inline: the busiest row kind
        gate = self._gate
        if gate is not None:
            verdicts = self._verdicts
            verdict = verdicts.get(path) if verdicts is not None else None
            if verdict is None:
                initiating = proc.initiating() if proc is not None else {"InitiatingProcessId": pid}
                own = {"FileName": name, "FolderPath": path, "ActionType": "ImageLoaded"}
                verdict = gate.might_match(own, initiating)
                if verdicts is not None:
                    if len(verdicts) >= _VERDICTS:
                        verdicts.clear()
                    verdicts[path] = verdict
            if not verdict:
                self._sink.skip(IMAGE_TABLE, "ImageLoaded", proc is None or path_unresolved(path))
                return
        unresolved = proc is None or path_unresolved(path)
        initiating = proc.initiating() if proc is not None else {"InitiatingProcessId": pid}
        row: Row = dict(initiating)
        row["FileName"] = name
        row["FolderPath"] = path
        self._sink.emit(IMAGE_TABLE, "ImageLoaded", ev.ts, row, unresolved)


def _verdict_memo(gate: RowGate | None) -> dict[str, bool] | None:
    """A path → verdict memo when the gate's answer depends on the path alone."""
    return {} if gate is not None and gate.columns <= _PATH_COLUMNS else None
