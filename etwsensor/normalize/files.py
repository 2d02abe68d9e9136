"""File events → DeviceFileEvents.

Names: FileObject → open file (path, flags) from Create/CreateNewFile; FileKey → path from
Kernel-File NameCreate and the classic FileIo Name/FileCreate/FileRundown records (whose
"FileObject" is the file key, learn.microsoft.com fileio-name). Lookups try FileKey first, then
FileObject. Close, NameDelete and classic FileDelete evict. All caches are bounded LRUs.

Rows: Kernel-File makes them once it has been seen in the stream; classic FileIo only while it
has not (and always feeds the caches).

* FileCreated: CreateNewFile, or a Create whose disposition (CreateOptions >> 24) is SUPERSEDE,
  CREATE, OVERWRITE or OVERWRITE_IF and that is not a directory; once OperationEnd records are in
  the stream the row waits for the Irp's OperationEnd and is dropped when it failed.
* FileModified: the first Write through an open file object.
* FileDeleted: DeletePath, SetDelete, classic Delete/DeletePath (one row per Irp), and the Cleanup
  of a file object opened with FILE_DELETE_ON_CLOSE.
* FileRenamed: RenamePath carries the new path; the old one (Previous*) comes from the caches.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from etwsensor.events import RawEvent
from etwsensor.normalize.cache import BoundedCache
from etwsensor.normalize.paths import PathResolver, file_name_of
from etwsensor.normalize.processes import INITIATING_COLUMNS, ProcessTracker
from etwsensor.normalize.rows import Handlers, Row, RowGate, RowSink, path_unresolved, usable_gate

FILE_TABLE = "DeviceFileEvents"
# What a file row has before it is built: enough to ask the rules' gate.
_GATE_COLUMNS = INITIATING_COLUMNS | {
    "FileName", "FolderPath", "ActionType", "PreviousFileName", "PreviousFolderPath",
}  # fmt: skip
KERNEL_FILE = "Microsoft-Windows-Kernel-File"

# CreateOptions >> 24 (CORRECTIONS §5): SUPERSEDE 0, OPEN 1, CREATE 2, OPEN_IF 3, OVERWRITE 4, OVERWRITE_IF 5
CREATING_DISPOSITIONS = frozenset({0, 2, 4, 5})
FILE_DIRECTORY_FILE = 0x1
FILE_DELETE_ON_CLOSE = 0x1000


@dataclass(slots=True, eq=False)
class OpenFile:
    path: str  # as recorded (NT form): converted when a row is written, after the device map is known
    delete_on_close: bool
    created: bool = False  # a FileCreated row was made (or is waiting for OperationEnd)
    written: bool = False
    deleted: bool = False


@dataclass(slots=True, eq=False)
class _PendingCreate:
    ts: datetime
    pid: int
    path: str


def _nt_success(status: int) -> bool:
    return (status & 0xFFFFFFFF) < 0x80000000


class FileTracker:
    def __init__(
        self,
        sink: RowSink,
        paths: PathResolver,
        processes: ProcessTracker,
        max_objects: int = 65536,
        max_names: int = 65536,
        max_pending: int = 8192,
        gates: Mapping[str, RowGate] | None = None,
    ) -> None:
        self._sink = sink
        self._paths = paths
        self._processes = processes
        self._gate = usable_gate(gates, FILE_TABLE, _GATE_COLUMNS)
        self.objects: BoundedCache[int, OpenFile] = BoundedCache("file_objects", max_objects)
        self.names: BoundedCache[int, str] = BoundedCache("file_keys", max_names)
        self.pending: BoundedCache[int, _PendingCreate] = BoundedCache("file_pending_creates", max_pending)
        self._recent_irps: BoundedCache[int, bool] = BoundedCache("file_recent_irps", 1024)
        self._written: BoundedCache[int, bool] = BoundedCache("file_written_unopened", 16384)
        self._manifest_seen = False
        self._op_end_seen = False

    def regate(self, gates: Mapping[str, RowGate] | None) -> None:
        """Gate rows with a new rule set's gates from the next event on (a hot reload)."""
        self._gate = usable_gate(gates, FILE_TABLE, _GATE_COLUMNS)

    def caches(self) -> list[BoundedCache[Any, Any]]:
        return [self.objects, self.names, self.pending, self._recent_irps, self._written]

    def handlers(self) -> Handlers:
        k = KERNEL_FILE
        return {
            (k, "NameCreate"): self._k_name_create,
            (k, "NameDelete"): self._k_name_delete,
            (k, "Create"): self._k_create,
            (k, "CreateNewFile"): self._k_create_new,
            (k, "Cleanup"): self._k_cleanup,
            (k, "Close"): self._k_close,
            (k, "Write"): self._k_write,
            (k, "SetDelete"): self._k_set_delete,
            (k, "DeletePath"): self._k_delete_path,
            (k, "RenamePath"): self._k_rename_path,
            (k, "OperationEnd"): self._k_op_end,
            ("FileIo", "Name"): self._c_name,
            ("FileIo", "FileCreate"): self._c_name,
            ("FileIo", "FileRundown"): self._c_name,
            ("FileIo", "FileDelete"): self._c_name_delete,
            ("FileIo", "Create"): self._c_create,
            ("FileIo", "Cleanup"): self._c_cleanup,
            ("FileIo", "Close"): self._c_close,
            ("FileIo", "Write"): self._c_write,
            ("FileIo", "Delete"): self._c_delete,  # no FileName: the path comes from the caches
            ("FileIo", "DeletePath"): self._c_delete,
            ("FileIo", "RenamePath"): self._c_rename_path,
            ("FileIo", "OperationEnd"): self._c_op_end,
        }

    def flush(self) -> None:
        """End of stream: creates still waiting for OperationEnd are reported (never lost)."""
        while (oldest := self.pending.pop_oldest()) is not None:
            self._emit_created(oldest[1])

    # --- rows ----------------------------------------------------------------------------------

    def _emit(self, action: str, ts: datetime, pid: int, nt_path: str, row: Row | None = None) -> None:
        path = self._paths.to_dos(nt_path)
        proc = self._processes.get(pid)
        initiating = proc.initiating() if proc is not None else {"InitiatingProcessId": pid}
        unresolved = proc is None or path_unresolved(path)
        own: Row = {"FileName": file_name_of(path), "FolderPath": path}
        if row:
            own.update(row)
        gate = self._gate
        if gate is not None and not gate.might_match({**own, "ActionType": action}, initiating):
            self._sink.skip(FILE_TABLE, action, unresolved)
            return
        out: Row = dict(initiating)
        out.update(own)
        self._sink.emit(FILE_TABLE, action, ts, out, unresolved)

    def _emit_created(self, waiting: _PendingCreate) -> None:
        self._emit("FileCreated", waiting.ts, waiting.pid, waiting.path)

    def _lookup(self, file_key: int, file_object: int) -> tuple[str, OpenFile | None]:
        obj = self.objects.get(file_object) if file_object else None
        path = self.names.get(file_key) if file_key else None
        if path is None:
            # classic FileIo name records key the name by the value that later arrives as FileObject
            path = obj.path if obj is not None else (self.names.peek(file_object) if file_object else None)
        return path or "", obj

    # --- shared logic --------------------------------------------------------------------------

    def _create(
        self, ev: RawEvent, irp: int, file_object: int, options: int, path: str, new_file: bool, rows: bool
    ) -> None:
        obj = self.objects.peek(file_object) if file_object else None
        if obj is None or obj.path != path:
            obj = OpenFile(path, delete_on_close=bool(options & FILE_DELETE_ON_CLOSE))
            if file_object:
                self.objects.put(file_object, obj)
        elif options & FILE_DELETE_ON_CLOSE:
            obj.delete_on_close = True
        if not rows or obj.created or options & FILE_DIRECTORY_FILE:
            return
        if not new_file and (options >> 24) not in CREATING_DISPOSITIONS:
            return
        obj.created = True
        waiting = _PendingCreate(ev.ts, ev.pid, path)
        if self._op_end_seen and irp:
            evicted = self.pending.put(irp, waiting)
            if evicted is not None:
                self._emit_created(evicted)  # its OperationEnd never came: report rather than lose
        else:
            self._emit_created(waiting)

    def _op_end(self, irp: int, status: int) -> None:
        self._op_end_seen = True
        waiting = self.pending.pop(irp)
        if waiting is not None and _nt_success(status):
            self._emit_created(waiting)

    def _cleanup(self, ev: RawEvent, file_object: int, rows: bool) -> None:
        obj = self.objects.peek(file_object)
        if obj is not None and obj.delete_on_close and not obj.deleted:
            obj.deleted = True
            if rows:
                self._emit("FileDeleted", ev.ts, ev.pid, obj.path)

    def _close(self, file_object: int) -> None:
        self.objects.pop(file_object)

    def _write(self, ev: RawEvent, file_key: int, file_object: int, rows: bool) -> None:
        obj = self.objects.get(file_object) if file_object else None
        if obj is not None:
            if obj.written:
                return
            obj.written = True
            path = (self.names.peek(file_key) if file_key else None) or obj.path  # FileKey first
        else:
            if file_object in self._written:
                return
            self._written.put(file_object, True)
            path = self._lookup(file_key, file_object)[0]
        if rows:
            self._emit("FileModified", ev.ts, ev.pid, path)

    def _delete(
        self, ev: RawEvent, irp: int, file_key: int, file_object: int, nt_path: str, rows: bool
    ) -> None:
        if irp:
            if irp in self._recent_irps:
                return
            self._recent_irps.put(irp, True)
        path, obj = self._lookup(file_key, file_object)
        if nt_path:
            path = nt_path
        if obj is not None:
            obj.deleted = True
        if rows:
            self._emit("FileDeleted", ev.ts, ev.pid, path)

    def _rename(self, ev: RawEvent, file_key: int, file_object: int, nt_path: str, rows: bool) -> None:
        old, obj = self._lookup(file_key, file_object)
        new = nt_path
        if obj is not None:
            obj.path = new
        if file_key:
            self.names.put(file_key, new)
        if rows:
            old = self._paths.to_dos(old)
            previous = {"PreviousFileName": file_name_of(old), "PreviousFolderPath": old}
            self._emit("FileRenamed", ev.ts, ev.pid, new, previous)

    # --- Kernel-File ---------------------------------------------------------------------------

    def _k_name_create(self, ev: RawEvent) -> None:
        self._manifest_seen = True
        f = ev.fields
        key = f.get("FileKey", 0)
        if key:
            self.names.put(key, f.get("FileName") or "")

    def _k_name_delete(self, ev: RawEvent) -> None:
        self._manifest_seen = True
        self.names.pop(ev.fields.get("FileKey", 0))

    def _k_create(self, ev: RawEvent) -> None:
        self._k_open(ev, new_file=False)

    def _k_create_new(self, ev: RawEvent) -> None:
        self._k_open(ev, new_file=True)

    def _k_open(self, ev: RawEvent, new_file: bool) -> None:
        """Kernel-File Create (12) and CreateNewFile (30): one layout, one meaning of the result."""
        self._manifest_seen = True
        f = ev.fields
        self._create(
            ev,
            f.get("Irp", 0),
            f.get("FileObject", 0),
            f.get("CreateOptions", 0),
            f.get("FileName") or "",
            new_file=new_file,
            rows=True,
        )

    def _k_cleanup(self, ev: RawEvent) -> None:
        self._manifest_seen = True
        self._cleanup(ev, ev.fields.get("FileObject", 0), rows=True)

    def _k_close(self, ev: RawEvent) -> None:
        self._manifest_seen = True
        self._close(ev.fields.get("FileObject", 0))

    def _k_write(self, ev: RawEvent) -> None:
        self._manifest_seen = True
        f = ev.fields
        self._write(ev, f.get("FileKey", 0), f.get("FileObject", 0), rows=True)

    def _k_set_delete(self, ev: RawEvent) -> None:
        self._manifest_seen = True
        f = ev.fields
        self._delete(ev, f.get("Irp", 0), f.get("FileKey", 0), f.get("FileObject", 0), "", rows=True)

    def _k_delete_path(self, ev: RawEvent) -> None:
        self._manifest_seen = True
        f = ev.fields
        self._delete(
            ev,
            f.get("Irp", 0),
            f.get("FileKey", 0),
            f.get("FileObject", 0),
            f.get("FilePath") or "",
            rows=True,
        )

    def _k_rename_path(self, ev: RawEvent) -> None:
        self._manifest_seen = True
        f = ev.fields
        self._rename(ev, f.get("FileKey", 0), f.get("FileObject", 0), f.get("FilePath") or "", rows=True)

    def _k_op_end(self, ev: RawEvent) -> None:
        self._manifest_seen = True
        f = ev.fields
        self._op_end(f.get("Irp", 0), f.get("Status", 0))

    # --- classic FileIo ------------------------------------------------------------------------

    def _c_name(self, ev: RawEvent) -> None:
        f = ev.fields
        key = f.get("FileObject", 0)
        if key:
            self.names.put(key, f.get("FileName") or "")

    def _c_name_delete(self, ev: RawEvent) -> None:
        self.names.pop(ev.fields.get("FileObject", 0))

    def _c_create(self, ev: RawEvent) -> None:
        f = ev.fields
        self._create(
            ev,
            f.get("IrpPtr", 0),
            f.get("FileObject", 0),
            f.get("CreateOptions", 0),
            f.get("OpenPath") or "",
            new_file=False,
            rows=not self._manifest_seen,
        )

    def _c_cleanup(self, ev: RawEvent) -> None:
        self._cleanup(ev, ev.fields.get("FileObject", 0), rows=not self._manifest_seen)

    def _c_close(self, ev: RawEvent) -> None:
        self._close(ev.fields.get("FileObject", 0))

    def _c_write(self, ev: RawEvent) -> None:
        f = ev.fields
        self._write(ev, f.get("FileKey", 0), f.get("FileObject", 0), rows=not self._manifest_seen)

    def _c_delete(self, ev: RawEvent) -> None:
        f = ev.fields
        self._delete(
            ev,
            f.get("IrpPtr", 0),
            f.get("FileKey", 0),
            f.get("FileObject", 0),
            f.get("FileName") or "",
            rows=not self._manifest_seen,
        )

    def _c_rename_path(self, ev: RawEvent) -> None:
        f = ev.fields
        self._rename(
            ev,
            f.get("FileKey", 0),
            f.get("FileObject", 0),
            f.get("FileName") or "",
            rows=not self._manifest_seen,
        )

    def _c_op_end(self, ev: RawEvent) -> None:
        f = ev.fields
        self._op_end(f.get("IrpPtr", 0), f.get("NtStatus", 0))
