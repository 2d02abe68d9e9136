"""Local sinks: NDJSON on stdout (streaming) and NDJSON in a size-rotated file. No spool: a local write
either works now or the disk is the problem, which a spool on the same disk would not solve."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any, TextIO

from etwsensor.logging import get_logger
from etwsensor.sinks.base import alert_json, empty_state
from etwsensor.sinks.config import SinkSettings
from etwsensor.sinks.urls import SinkConfigError

log = get_logger("etwsensor.sinks")


class StdoutSink:
    """One JSON object per line on stdout (UTF-8), flushed per alert so a reader sees it at once."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.name = "stdout"
        self._stream = stream  # None: whatever sys.stdout is when an alert is written
        self._lock = threading.Lock()
        self._state = empty_state(self.name)
        self._gone = False  # the reader closed the pipe (e.g. `| head`): stop writing

    def send(self, alert: Mapping[str, Any]) -> None:
        line = alert_json(alert, ascii_only=False) + b"\n"
        with self._lock:
            if self._gone:
                self._state["closed_by_reader" if "closed_by_reader" in self._state else "dropped"] += 1
                return
            stream = self._stream or sys.stdout
            try:
                buffer: IO[bytes] | None = getattr(stream, "buffer", None)
                if buffer is not None:  # bytes: UTF-8 whatever the console code page says
                    stream.flush()
                    buffer.write(line)
                    buffer.flush()
                else:
                    stream.write(line.decode())
                    stream.flush()
            except BrokenPipeError:  # the reader left (`| head -1`): it wants no more, not an error
                self._state["closed_by_reader"] = 1
                self._gone = True
                return
            except (OSError, ValueError) as exc:  # ValueError: write to a closed file
                self._state["dropped"] += 1
                self._state["last_error"] = str(exc)
                self._gone = self._state["down"] = True
                log.warning("stdout failed; alerts are no longer written to it", error=str(exc))
                return
            self._state["delivered"] += 1

    def flush(self) -> None:
        with self._lock:
            if not self._gone:
                try:
                    (self._stream or sys.stdout).flush()
                except BrokenPipeError:
                    self._state["closed_by_reader"] = self._state.get("closed_by_reader", 0)
                    self._gone = True
                except (OSError, ValueError):
                    self._gone = True

    def close(self) -> None:
        self.flush()

    def state(self) -> dict[str, Any]:
        return dict(self._state)


class FileSink:
    """NDJSON appended to PATH; past ``max_bytes`` PATH becomes PATH.1,
    PATH.1 → PATH.2 … up to ``backups`` files."""

    def __init__(self, path: Path, settings: SinkSettings) -> None:
        self.name = f"file:{path}"
        self._path = path
        self._max_bytes = settings.max_bytes
        self._backups = settings.backups
        self._lock = threading.Lock()
        self._state = empty_state(self.name)
        self._fh: IO[bytes] | None = None
        self._torn_tail = False
        self._size = 0
        try:
            self._open()
        except OSError as exc:
            raise SinkConfigError(f"sink {self.name}: cannot open: {exc.strerror or exc}") from None

    def _open(self) -> IO[bytes]:
        fh = open(self._path, "ab", buffering=0)  # noqa: SIM115 - kept open between alerts
        self._size = fh.seek(0, os.SEEK_END)
        self._fh = fh
        if self._torn_tail:  # a torn line we could not cut off: end it so the next alert starts clean
            try:
                self._write_all(fh, b"\n")
            except OSError:
                self._close_quietly()
                raise
            self._torn_tail = False
        return fh

    def _write_all(self, fh: IO[bytes], data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = fh.write(view)
            if not written:
                raise OSError("short write")
            view = view[written:]
        self._size += len(data)

    def send(self, alert: Mapping[str, Any]) -> None:
        line = alert_json(alert, ascii_only=False) + b"\n"
        with self._lock:
            start = self._size
            try:
                if self._max_bytes and self._size and self._size + len(line) > self._max_bytes:
                    self._rotate()
                fh = self._fh or self._open()
                start = self._size
                self._write_all(fh, line)  # unbuffered: to the OS per alert; `tail -f` sees it
            except OSError as exc:
                self._state["dropped"] += 1
                if self._state["last_error"] != str(exc):  # once per distinct error, not per alert
                    log.error("alert not written to file", sink=self.name, error=str(exc))
                self._state["last_error"] = str(exc)
                self._cut_torn_line(start)
                self._close_quietly()  # reopen on the next alert
                return
            self._state["delivered"] += 1

    def _cut_torn_line(self, start: int) -> None:
        """After a failed write: truncate the file back to where the alert began; if even that fails
        and part of it is there, the next open ends that line first. Either way it is counted as torn."""
        if self._fh is None:
            return
        try:
            now = os.fstat(self._fh.fileno()).st_size
        except OSError:
            now = start + 1  # unknown: assume a partial line
        if now <= start:
            self._size = now
            return
        self._state["torn"] = int(self._state.get("torn") or 0) + 1
        try:
            os.ftruncate(self._fh.fileno(), start)
            self._size = start
        except OSError:
            self._torn_tail = True

    def _rotate(self) -> None:
        self._close_quietly()  # Windows cannot rename an open file
        for n in range(self._backups - 1, 0, -1):
            older = self._path.with_name(f"{self._path.name}.{n}")
            if older.exists():
                os.replace(older, self._path.with_name(f"{self._path.name}.{n + 1}"))
        os.replace(self._path, self._path.with_name(f"{self._path.name}.1"))
        self._open()

    def _close_quietly(self) -> None:
        if self._fh is not None:
            with contextlib.suppress(OSError):
                self._fh.close()
            self._fh = None

    def flush(self) -> None:
        with self._lock:
            if self._fh is not None:
                try:
                    os.fsync(self._fh.fileno())
                except OSError as exc:
                    self._state["last_error"] = str(exc)

    def close(self) -> None:
        self.flush()
        with self._lock:
            self._close_quietly()

    def state(self) -> dict[str, Any]:
        return dict(self._state)
