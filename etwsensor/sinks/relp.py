"""RELP: syslog with acknowledgements (rsyslog's Reliable Event Logging Protocol, as librelp speaks it).

Every frame is ``TXNR SP COMMAND SP DATALEN [SP DATA] LF``. The client opens a session
(``open`` with its offers), sends each message as a ``syslog`` command with a new transaction number,
and the receiver answers every one with ``rsp`` and ``200 OK`` once it has taken the message. A batch
counts as delivered when every message of it was acknowledged, so nothing leaves the spool on hope
(TCP syslog's confirmation window), and only a batch in flight when the connection breaks is sent
again. Messages are the same RFC 5424 lines as ``syslog+tcp`` (``etwsensor.sinks.syslog``).
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl

from etwsensor import __version__
from etwsensor.sinks.base import DeliveryError, Outgoing, Transport
from etwsensor.sinks.config import SYSLOG_FACILITIES, SinkSettings
from etwsensor.sinks.syslog import format_message, header_field

_OFFERS = b"relp_version=0\nrelp_software=etwsensor," + __version__.encode() + b"\ncommands=syslog"
_MAX_FRAME = 1 << 20  # an answer longer than this is not a RELP answer


class RelpError(DeliveryError):
    """The receiver answered outside the protocol, refused a message, or closed the session."""


class _Frames:
    """Reads RELP frames from a socket: (txnr, command, data)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buf = b""

    def _fill(self) -> None:
        chunk = self._sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed by the receiver")
        self._buf += chunk

    def _token(self) -> bytes:
        while True:
            space = self._buf.find(b" ")
            newline = self._buf.find(b"\n")
            ends = [i for i in (space, newline) if i >= 0]
            if ends:
                end = min(ends)
                token, self._buf = self._buf[:end], self._buf[end:]
                return token
            if len(self._buf) > 64:
                raise RelpError("RELP: malformed frame header")
            self._fill()

    def read(self) -> tuple[int, bytes, bytes]:
        txnr = self._token()
        self._buf = self._buf[1:]  # the space
        command = self._token()
        self._buf = self._buf[1:]
        length_text = self._token()
        try:
            txn, length = int(txnr), int(length_text)
        except ValueError:
            raise RelpError("RELP: malformed frame header") from None
        if not 0 <= length <= _MAX_FRAME:
            raise RelpError("RELP: frame too long")
        need = length + (1 if length else 0) + 1  # SP DATA, then the trailing LF
        if length == 0:
            need = 1
        while len(self._buf) < need:
            self._fill()
        frame, self._buf = self._buf[:need], self._buf[need:]
        data = frame[1:-1] if length else b""
        if not frame.endswith(b"\n"):
            raise RelpError("RELP: frame without its trailer")
        return txn, command, data


def _frame(txnr: int, command: bytes, data: bytes) -> bytes:
    if data:
        return b"%d %s %d %s\n" % (txnr, command, len(data), data)
    return b"%d %s 0\n" % (txnr, command)


class RelpTransport(Transport):
    """``syslog+relp://HOST:PORT``: a batch is delivered when the receiver acknowledged every message."""

    confirm_window = 0.0  # acknowledgements, not a timer

    def __init__(self, host: str, port: int, tls: ssl.SSLContext | None, settings: SinkSettings) -> None:
        self._host, self._port, self._tls = host, port, tls
        self._settings = settings
        self._facility = SYSLOG_FACILITIES[settings.syslog_facility]
        self._local_host = header_field(socket.gethostname(), 255)
        self._where = f"syslog+relp {host}:{port}"
        self._sock: socket.socket | None = None
        self._frames: _Frames | None = None
        self._txnr = 0

    def _next(self) -> int:
        self._txnr = self._txnr % 999_999_999 + 1  # RELP numbers wrap after 999999999 to 1
        return self._txnr

    def _connect(self) -> tuple[socket.socket, _Frames]:
        try:
            sock = socket.create_connection((self._host, self._port), timeout=self._settings.connect_timeout)
        except OSError as exc:
            raise DeliveryError(f"{self._where}: connect: {exc.strerror or exc}") from None
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if self._tls is not None:
            try:
                sock = self._tls.wrap_socket(sock, server_hostname=self._host)
            except (OSError, ssl.SSLError) as exc:
                sock.close()
                raise DeliveryError(f"{self._where}: TLS: {exc}") from None
        sock.settimeout(self._settings.timeout)
        frames = _Frames(sock)
        self._txnr = 0
        try:
            txnr = self._next()
            sock.sendall(_frame(txnr, b"open", _OFFERS))
            got, command, data = frames.read()
        except (OSError, RelpError) as exc:
            sock.close()
            raise DeliveryError(f"{self._where}: open: {exc}") from None
        if got != txnr or command != b"rsp" or not data.startswith(b"200"):
            sock.close()
            raise RelpError(f"{self._where}: session refused: {data[:120]!r}")
        self._sock, self._frames = sock, frames
        return sock, frames

    def deliver(self, batch: list[Outgoing]) -> None:
        sock, frames = (self._sock, self._frames) if self._sock and self._frames else self._connect()
        pid = os.getpid()
        waiting: set[int] = set()
        data = bytearray()
        for item in batch:
            txnr = self._next()
            waiting.add(txnr)
            data += _frame(txnr, b"syslog", format_message(item, self._facility, self._local_host, pid))
        try:
            sock.sendall(data)
            while waiting:
                txnr, command, answer = frames.read()
                if command == b"serverclose":
                    raise RelpError("the receiver closed the session")
                if command != b"rsp":
                    continue
                if not answer.startswith(b"200"):
                    raise RelpError(f"message refused: {answer[:120].decode('ascii', 'replace')}")
                waiting.discard(txnr)
        except (OSError, RelpError) as exc:  # unacknowledged messages of the batch are sent again
            self._drop()
            raise DeliveryError(f"{self._where}: {len(waiting)} not acknowledged: {exc}") from None

    def finish(self, timeout: float) -> bool:
        """Close the session politely (``close`` answered by ``rsp``); every batch was acknowledged."""
        sock, frames = self._sock, self._frames
        if sock is None or frames is None:
            return True
        try:
            sock.settimeout(timeout)
            txnr = self._next()
            sock.sendall(_frame(txnr, b"close", b""))
            frames.read()
        except (OSError, RelpError):
            pass
        finally:
            self._drop()
        return True

    def _drop(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
        self._sock = self._frames = None
