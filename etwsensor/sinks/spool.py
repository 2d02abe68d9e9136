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

import contextlib
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
        self._entries: dict[int, int] = {}  # segment -> entries in it (as found on open, plus appends)
        self._first_entry: dict[int, int] = {}  # segment -> number of its first entry on that axis
        self.damage: list[str] = []  # what was found wrong with the spool, for the summary
        for path in directory.glob(f"*{_SEGMENT_SUFFIX}"):
            if not path.stem.isdigit():
                continue
            if not path.is_file():  # e.g. a directory with a segment's name: not ours to remove
                self._report(f"{path.name} is not a regular file; ignored")
                continue
            self._sizes[int(path.stem)] = path.stat().st_size
        self._reader: tuple[int, IO[bytes]] | None = None
        self._commit = self._checked_cursor(self._load_cursor())
        for seg in [s for s in self._sizes if s < self._commit.segment]:  # crash between commit and delete
            self._delete_segment(seg)
        self._read = self._commit
        self._cursor_stale = False  # the last cursor write failed (e.g. a full disk): retry on commit
        self.lost = 0  # entries lost to damage: a segment truncated or deleted under the spool
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
        reason = self.offer(payload)
        if reason is not None:
            with self._lock:
                self._drop(reason)
        return reason is None

    def offer(self, payload: bytes) -> str | None:
        """Append one entry; None when it is spooled, else why not (nothing counted: the caller
        keeps the entry elsewhere or counts it)."""
        record = encode_record(payload)
        with self._lock:
            if self.pending_bytes + len(record) > self._max_bytes:
                return "spool full"
            try:
                if self._writer is None or self._sizes[self._active] >= self._segment_bytes:
                    self._rotate()
                assert self._writer is not None
                view = memoryview(record)
                while view:
                    view = view[os.write(self._writer, view) :]
            except OSError as exc:
                self._undo_partial_write()
                self.last_error = f"spool write failed: {exc.strerror or exc}"
                return self.last_error
            self._sizes[self._active] += len(record)
            self._entries[self._active] += 1
            self._appended += 1
            self._dirty = True
            return None

    def _rotate(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(OSError):  # its entries are written; fsync is best effort here
                os.fsync(self._writer)
            with contextlib.suppress(OSError):
                os.close(self._writer)
            self._writer = None
        seg = self._next_segment
        path = self._segment_path(seg)
        self._writer = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | _O_BINARY, 0o600)
        self._next_segment += 1
        self._active = seg
        self._sizes[seg] = 0
        self._entries[seg] = 0
        self._first_entry[seg] = self._appended
        _fsync_dir(self.directory)

    def _undo_partial_write(self) -> None:
        """Cut a half-written record off, or abandon the segment (its tail then reads as corrupt)."""
        if self._writer is None:
            return
        try:
            os.ftruncate(self._writer, self._sizes[self._active])
        except OSError:
            with contextlib.suppress(OSError):
                os.close(self._writer)
            self._writer = None
            with contextlib.suppress(OSError):
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
        except OSError as exc:  # e.g. ENOSPC on write-back: the entries stay counted as pending
            self.last_error = f"spool fsync failed: {exc.strerror or exc}"
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
                try:
                    fh = self._reader_for(seg)
                    fh.seek(offset)
                    line = fh.readline(self._sizes[seg] - offset)
                except OSError as exc:  # deleted or unreadable under us
                    line = b""
                    self._report(f"segment {seg} unreadable: {exc.strerror or exc}")
                if not line:  # file shorter than recorded: the rest is gone, and counted
                    gone = self._entries_after(seg)
                    if gone:
                        self._report(f"segment {seg} lost {gone} entries after byte {offset}")
                    self.lost += gone
                    self._read_index += gone
                    consumed += gone
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
        saved = self._try_save_cursor(end)
        for seg in done:  # delivered either way; deleting them is what frees a full disk
            try:
                self._segment_path(seg).unlink(missing_ok=True)
            except OSError as exc:
                self.last_error = f"cannot delete a delivered segment: {exc.strerror or exc}"
        if not saved and done:
            self._try_save_cursor(end)  # the space just freed may be enough

    def _try_save_cursor(self, commit: SpoolPosition) -> bool:
        """Save the cursor; on failure (a full disk) keep going: the in-memory position is right, and a
        restart before the next successful save re-sends what came after the old cursor (duplicates)."""
        try:
            self._save_cursor(commit)
        except OSError as exc:
            if not self._cursor_stale:
                log.error("spool cursor not saved; a restart would re-send delivered alerts",
                          spool=str(self.directory), error=exc.strerror or str(exc))  # fmt: skip
            self._cursor_stale = True
            self.last_error = f"cursor not saved: {exc.strerror or exc}"
            return False
        self._cursor_stale = False
        return True

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
        self._entries.pop(seg, None)
        self._first_entry.pop(seg, None)

    def _report(self, what: str) -> None:
        self.damage.append(what)
        log.warning("spool damaged", spool=str(self.directory), damage=what)

    def _load_cursor(self) -> SpoolPosition:
        path = self.directory / _CURSOR
        try:
            data: Any = json.loads(path.read_bytes())
            segment, offset = data["segment"], data["offset"]
            if type(segment) is not int or type(offset) is not int:  # 1e400, "3", true: not a position
                raise ValueError("segment and offset must be integers")
            if segment < 0 or offset < 0:
                raise ValueError("negative position")
            return SpoolPosition(segment, offset)
        except FileNotFoundError:
            return SpoolPosition(0, 0)
        except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
            # Start from the oldest segment: re-delivering (duplicates) beats losing alerts.
            self._report(f"cursor unreadable ({exc}); re-delivering from the oldest entry")
            return SpoolPosition(0, 0)

    def _checked_cursor(self, pos: SpoolPosition) -> SpoolPosition:
        """A cursor that would skip entries still on disk is not trusted: segments are deleted only
        after the cursor moved past them, so a cursor beyond the newest segment, or beyond the end of
        its own, did not come from this spool's commits."""
        if not self._sizes:
            return pos
        newest = max(self._sizes)
        if pos.segment > newest:
            self._report(f"cursor {pos.segment}:{pos.offset} is past the newest segment {newest}; "
                         "re-delivering from the oldest entry")  # fmt: skip
            return SpoolPosition(0, 0)
        size = self._sizes.get(pos.segment)
        if size is not None and pos.offset > size:
            self._report(f"cursor offset {pos.offset} is past the end of segment {pos.segment} "
                         f"({size} bytes); re-delivering that segment")  # fmt: skip
            return SpoolPosition(pos.segment, 0)
        return pos

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
            found = 0
            try:
                with open(self._segment_path(seg), "rb") as fh:
                    if seg == start.segment:
                        fh.seek(start.offset)
                    last = b"\n"
                    while chunk := fh.read(1 << 20):
                        found += chunk.count(b"\n")
                        last = chunk[-1:]
                    found += last != b"\n"  # a torn last record still counts as one (corrupt) entry
            except OSError as exc:
                self._report(f"segment {seg} unreadable: {exc.strerror or exc}")
                del self._sizes[seg]
                continue
            self._first_entry[seg] = count
            self._entries[seg] = found
            count += found
        return count

    def _entries_after(self, seg: int) -> int:
        """Entries of ``seg`` the reader has not reached: the ones a truncation or deletion took.
        Known for segments counted on open and written by this process (entries are numbered on one
        axis: ``_first_entry[seg]`` is the number of the segment's first entry)."""
        if seg not in self._entries:
            return 0
        return max(self._first_entry[seg] + self._entries[seg] - self._read_index, 0)

    def close(self) -> None:
        """fsync, release the lock; a fully delivered spool leaves no segment behind."""
        with self._lock:
            if self._writer is not None:
                with contextlib.suppress(OSError):  # a full disk: what is written stays counted
                    os.fsync(self._writer)
                with contextlib.suppress(OSError):
                    os.close(self._writer)
                self._writer = None
            if self._reader is not None:
                self._reader[1].close()
                self._reader = None
            active, self._active = self._active, 0
            if active in self._sizes and self._commit == SpoolPosition(active, self._sizes[active]):
                try:
                    self._delete_segment(active)
                except OSError as exc:
                    self.last_error = f"cannot delete a delivered segment: {exc.strerror or exc}"
        self._lock_file.release()
