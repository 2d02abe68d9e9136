"""Durable, bounded, append-only spool: the write-ahead queue between the pipeline and a network sink.

Every alert for a network sink is appended here first; the sink's worker reads entries in order,
delivers them, and *commits* the position once the far end has them. What is not committed is
delivered again after a failure or a restart (at least once; duplicates carry the same ``alert_id``).

On disk, one directory per sink::

    spool.lock                    held while a process uses the spool (a second one is refused)
    cursor.json                   {"segment": N, "offset": BYTES}: everything before it was delivered
    0000000000000001.seg …        segments; one record per line: "<crc32 hex8> <payload>\\n"

A process never appends to a segment it did not create, so a record torn by a crash stays a
single bad line: bad lines (CRC mismatch, no newline) are counted as corrupt and skipped.
Segments are fsync'd by ``sync()`` (the worker calls it before every delivery attempt), on rotation
and on close; the cursor is replaced atomically. Bounded by undelivered bytes: when full, new
entries are dropped, counted and logged loudly: the oldest alerts are kept.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from etwsensor.logging import get_logger

log = get_logger("etwsensor.sinks.spool")

_SEGMENT_SUFFIX = ".seg"
_CURSOR = "cursor.json"
_LOCK = "spool.lock"
_DROP_WARN_EVERY = 10.0  # seconds between "spool full" warnings while dropping
_O_BINARY = getattr(os, "O_BINARY", 0)  # Windows: no newline translation


class SpoolError(OSError):
    """The spool directory cannot be used (not writable, or held by another process)."""


@dataclass(frozen=True, slots=True, order=True)
class SpoolPosition:
    segment: int
    offset: int


@dataclass(frozen=True, slots=True)
class SpoolBatch:
    """Entries read in order; ``end`` and ``consumed`` (corrupt lines included) are what ``commit`` takes."""

    payloads: list[bytes]
    end: SpoolPosition
    consumed: int
    corrupt: int


def encode_record(payload: bytes) -> bytes:
    if b"\n" in payload:
        raise ValueError("a spool payload is one line")
    return b"%08x %s\n" % (zlib.crc32(payload), payload)


def decode_record(line: bytes) -> bytes | None:
    """The payload of one spool line, or None when it is damaged."""
    if len(line) < 10 or not line.endswith(b"\n") or line[8:9] != b" ":
        return None
    payload = line[9:-1]
    try:
        crc = int(line[:8], 16)
    except ValueError:
        return None
    return payload if crc == zlib.crc32(payload) else None


def _fsync_dir(path: Path) -> None:
    if sys.platform == "win32":  # directories cannot be opened for fsync there; NTFS journals metadata
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _DirLock:
    """An exclusive, non-blocking lock on a file: released by the OS if the process dies."""

    def __init__(self, path: Path) -> None:
        self._fh = open(path, "a+b")  # noqa: SIM115 - held for the spool's lifetime
        try:
            if sys.platform == "win32":
                import msvcrt

                self._fh.seek(0)
                msvcrt.locking(self._fh.fileno(), msvcrt.LK_NBLCK, 1)
            else:
                import fcntl

                fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._fh.close()
            raise SpoolError(f"spool {path.parent} is in use by another etwsensor process") from None

    def release(self) -> None:
        self._fh.close()  # closing releases both lock kinds


class Spool:
    """One sink's spool. Thread-safe: the pipeline appends while the sink's worker reads and commits."""

    def __init__(self, directory: Path, max_bytes: int, segment_bytes: int) -> None:
        self.directory = directory
        self._max_bytes = max_bytes
        self._segment_bytes = segment_bytes
        try:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)  # alerts name users and paths
            self._lock_file = _DirLock(directory / _LOCK)
        except SpoolError:
            raise
        except OSError as exc:
            raise SpoolError(f"spool {directory}: {exc.strerror or exc}") from None
        self._lock = threading.Lock()
        self._sizes: dict[int, int] = {}  # segment number -> bytes
        for path in directory.glob(f"*{_SEGMENT_SUFFIX}"):
            if path.stem.isdigit():
                self._sizes[int(path.stem)] = path.stat().st_size
        self._reader: tuple[int, IO[bytes]] | None = None
        self._commit = self._load_cursor()
        for seg in [s for s in self._sizes if s < self._commit.segment]:  # crash between commit and delete
            self._delete_segment(seg)
        self._read = self._commit
        self._writer: int | None = None  # fd of the active segment
        self._active = 0  # segment this process appends to (0: none yet)
        self._next_segment = max([*self._sizes, self._commit.segment]) + 1
        self._dirty = False
        # Entry counters on one axis: committed <= read <= appended.
        self.pending_at_open = self._count_entries_from(self._commit)
        self._committed = 0
        self._read_index = 0
        self._appended = self.pending_at_open
        self.dropped = 0
        self.corrupt = 0
        self._last_drop_warning = -_DROP_WARN_EVERY
        self._dropped_since_warning = 0
        self.last_error: str | None = None

    # --- counters -------------------------------------------------------------------------------------

    @property
    def appended(self) -> int:
        """Entries appended so far (including those found on open): a ``flush`` target."""
        return self._appended

    @property
    def pending(self) -> int:
        """Entries not yet committed (delivered)."""
        return self._appended - self._committed

    @property
    def unread(self) -> int:
        return self._appended - self._read_index

    @property
    def read_index(self) -> int:
        return self._read_index

    @property
    def pending_bytes(self) -> int:
        total = sum(self._sizes.values())
        return total - (self._commit.offset if self._commit.segment in self._sizes else 0)

    # --- writing --------------------------------------------------------------------------------------

    def append(self, payload: bytes) -> bool:
        """Append one entry (one line). False when the spool is full or the disk refused it: dropped."""
        record = encode_record(payload)
        with self._lock:
            if self.pending_bytes + len(record) > self._max_bytes:
                self._drop("spool full")
                return False
            try:
                if self._writer is None or self._sizes[self._active] >= self._segment_bytes:
                    self._rotate()
                assert self._writer is not None
                view = memoryview(record)
                while view:
                    view = view[os.write(self._writer, view) :]
            except OSError as exc:
                self._undo_partial_write()
                self._drop(f"spool write failed: {exc.strerror or exc}")
                return False
            self._sizes[self._active] += len(record)
            self._appended += 1
            self._dirty = True
            return True

    def _rotate(self) -> None:
        if self._writer is not None:
            os.fsync(self._writer)
            os.close(self._writer)
            self._writer = None
        seg = self._next_segment
        path = self._segment_path(seg)
        self._writer = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | _O_BINARY, 0o600)
        self._next_segment += 1
        self._active = seg
        self._sizes[seg] = 0
        _fsync_dir(self.directory)

    def _undo_partial_write(self) -> None:
        """Cut a half-written record off, or abandon the segment (its tail then reads as corrupt)."""
        if self._writer is None:
            return
        try:
            os.ftruncate(self._writer, self._sizes[self._active])
        except OSError:
            os.close(self._writer)
            self._writer = None
            self._sizes[self._active] = self._segment_path(self._active).stat().st_size

    def _drop(self, reason: str) -> None:
        self.dropped += 1
        self._dropped_since_warning += 1
        self.last_error = reason
        now = time.monotonic()
        if now - self._last_drop_warning >= _DROP_WARN_EVERY:
            log.error(
                "alerts dropped: not delivered and not spooled", spool=str(self.directory), reason=reason,
                dropped=self._dropped_since_warning, dropped_total=self.dropped,
                pending_bytes=self.pending_bytes, max_bytes=self._max_bytes,
            )  # fmt: skip
            self._last_drop_warning = now
            self._dropped_since_warning = 0

    def sync(self) -> None:
        """fsync what was appended since the last call (outside the lock: appends need not wait)."""
        with self._lock:
            if not self._dirty or self._writer is None:
                return
            fd = os.dup(self._writer)  # stays valid if an append rotates the segment meanwhile
            self._dirty = False
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # --- reading --------------------------------------------------------------------------------------

    def read(self, max_entries: int) -> SpoolBatch:
        """Up to ``max_entries`` entries after the read position (which advances; see ``rewind``)."""
        payloads: list[bytes] = []
        consumed = corrupt = 0
        with self._lock:
            while len(payloads) < max_entries:
                seg, offset = self._read.segment, self._read.offset
                if seg not in self._sizes:
                    later = [s for s in self._sizes if s > seg]
                    if not later:
                        break
                    self._read = SpoolPosition(min(later), 0)
                    continue
                if offset >= self._sizes[seg]:
                    if seg == self._active:
                        break  # caught up with the writer
                    self._read = SpoolPosition(seg + 1, 0)
                    continue
                fh = self._reader_for(seg)
                fh.seek(offset)
                line = fh.readline(self._sizes[seg] - offset)
                if not line:  # file shorter than recorded: treat the rest as gone
                    self._sizes[seg] = offset
                    continue
                self._read = SpoolPosition(seg, offset + len(line))
                self._read_index += 1
                consumed += 1
                payload = decode_record(line)
                if payload is None:
                    corrupt += 1
                else:
                    payloads.append(payload)
            end = self._read
        if corrupt:
            self.corrupt += corrupt
            log.warning("corrupt spool entries skipped", spool=str(self.directory), count=corrupt)
        return SpoolBatch(payloads, end, consumed, corrupt)

    def _reader_for(self, seg: int) -> IO[bytes]:
        if self._reader is not None:
            if self._reader[0] == seg:
                return self._reader[1]
            self._reader[1].close()
        fh = open(self._segment_path(seg), "rb")  # noqa: SIM115 - cached until the reader moves on
        self._reader = (seg, fh)
        return fh

    def rewind(self) -> None:
        """Go back to the commit position: what was read but not committed is read again."""
        with self._lock:
            self._read = self._commit
            self._read_index = self._committed

    def commit(self, end: SpoolPosition, consumed: int) -> None:
        """Everything up to ``end`` (``consumed`` entries since the last commit) was delivered."""
        with self._lock:
            self._commit = end
            self._committed += consumed
            done = [
                s
                for s in self._sizes
                if s < end.segment
                or (s == end.segment and s != self._active and end.offset >= self._sizes[s])
            ]
            for seg in done:
                self._forget_segment(seg)
        # Only the worker commits, so these files need no lock. Cursor first: a crash in between leaves
        # delivered segments behind (re-sent: duplicates), never a cursor past undelivered entries.
        self._save_cursor(end)
        for seg in done:
            self._segment_path(seg).unlink(missing_ok=True)

    # --- files ----------------------------------------------------------------------------------------

    def _segment_path(self, seg: int) -> Path:
        return self.directory / f"{seg:016d}{_SEGMENT_SUFFIX}"

    def _delete_segment(self, seg: int) -> None:
        self._forget_segment(seg)
        self._segment_path(seg).unlink(missing_ok=True)

    def _forget_segment(self, seg: int) -> None:
        if self._reader is not None and self._reader[0] == seg:
            self._reader[1].close()  # Windows cannot delete an open file
            self._reader = None
        del self._sizes[seg]

    def _load_cursor(self) -> SpoolPosition:
        path = self.directory / _CURSOR
        try:
            data: Any = json.loads(path.read_bytes())
            pos = SpoolPosition(int(data["segment"]), int(data["offset"]))
            if pos.segment < 0 or pos.offset < 0:
                raise ValueError("negative position")
            return pos
        except FileNotFoundError:
            return SpoolPosition(0, 0)
        except (ValueError, KeyError, TypeError) as exc:
            # Start from the oldest segment: re-delivering (duplicates) beats losing alerts.
            log.warning("spool cursor unreadable, re-delivering from the oldest entry",
                        spool=str(self.directory), error=str(exc))  # fmt: skip
            return SpoolPosition(0, 0)

    def _save_cursor(self, commit: SpoolPosition) -> None:
        tmp = self.directory / (_CURSOR + ".tmp")
        data = json.dumps({"segment": commit.segment, "offset": commit.offset}).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _O_BINARY, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.directory / _CURSOR)
        _fsync_dir(self.directory)

    def _count_entries_from(self, start: SpoolPosition) -> int:
        count = 0
        for seg in sorted(s for s in self._sizes if s >= start.segment):
            with open(self._segment_path(seg), "rb") as fh:
                if seg == start.segment:
                    fh.seek(start.offset)
                last = b"\n"
                while chunk := fh.read(1 << 20):
                    count += chunk.count(b"\n")
                    last = chunk[-1:]
                count += last != b"\n"  # a torn last record still counts as one (corrupt) entry
        return count

    def close(self) -> None:
        """fsync, release the lock; a fully delivered spool leaves no segment behind."""
        with self._lock:
            if self._writer is not None:
                os.fsync(self._writer)
                os.close(self._writer)
                self._writer = None
            if self._reader is not None:
                self._reader[1].close()
                self._reader = None
            active, self._active = self._active, 0
            if active in self._sizes and self._commit == SpoolPosition(active, self._sizes[active]):
                self._delete_segment(active)
        self._lock_file.release()
