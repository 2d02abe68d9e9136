"""Syslog: RFC 5424 messages, octet-counted (RFC 6587 §3.4.1) over TCP, or over TLS (RFC 5425).

    <PRI>1 TIMESTAMP HOSTNAME etwsensor PROCID MSGID - {alert JSON}

* PRI = facility × 8 + severity; severity from the alert's rule severity (``SYSLOG_SEVERITY``).
* TIMESTAMP = the alert's ``detected_at`` in UTC; HOSTNAME = the alert's host name (else this host);
  MSGID = the rule id (a GUID loses its dashes to fit the 32 characters RFC 5424 allows).
* MSG = the alert as ASCII JSON (non-ASCII escaped), so no BOM is needed.

TCP syslog has no acknowledgements, and a write after the receiver went away can still "succeed".
So alerts leave the spool only after the connection stayed healthy ``syslog_confirm_window`` seconds
after them, or when the receiver answers our clean close with its own; a broken connection re-sends
the unconfirmed ones (duplicates, same ``alert_id``). Receivers must accept messages longer than
rsyslog's default 8 KiB (``global(maxMessageSize="64k")``).
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import ssl
from datetime import UTC, datetime
from typing import Any

from etwsensor.alerts.formats import envelope
from etwsensor.sinks.base import ConnectionLost, DeliveryError, Outgoing, Transport
from etwsensor.sinks.config import SYSLOG_FACILITIES, SinkSettings

# Alert severity → RFC 5424 severity. Unknown severities are reported as warning, never hidden.
# high: 2 critical, medium: 4 warning, low: 5 notice, informational: 6 informational.
SYSLOG_SEVERITY: dict[str, int] = {"high": 2, "medium": 4, "low": 5, "informational": 6}
SYSLOG_SEVERITY_UNKNOWN = 4
_GUID = re.compile(r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$")
_NOT_PRINTUSASCII = re.compile(r"[^\x21-\x7e]")


def header_field(value: Any, limit: int) -> str:
    """An RFC 5424 header field: printable ASCII without spaces, at most ``limit`` chars, "-" when empty."""
    text = _NOT_PRINTUSASCII.sub("", str(value or ""))[:limit]
    return text or "-"


def msgid(rule_id: Any) -> str:
    text = str(rule_id or "")
    return header_field(text.replace("-", "") if _GUID.match(text) else text, 32)


def timestamp(value: Any) -> str:
    """RFC 3339 in UTC with microseconds; the current time when ``value`` is not an ISO timestamp."""
    moment = datetime.now(UTC)
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def format_message(item: Outgoing, facility: int, local_host: str, procid: int) -> bytes:
    facts = envelope(item.alert)  # etwsensor, ECS or OCSF document
    severity = SYSLOG_SEVERITY.get(facts.severity.lower(), SYSLOG_SEVERITY_UNKNOWN)
    hostname = header_field(facts.host, 255)
    header = "<%d>1 %s %s etwsensor %d %s - " % (  # noqa: UP031 - reads like the RFC's ABNF
        facility * 8 + severity, timestamp(facts.detected_at),
        local_host if hostname == "-" else hostname, procid, msgid(facts.rule_id),
    )  # fmt: skip
    return header.encode("ascii") + item.raw


def frame(message: bytes) -> bytes:
    """Octet counting: "MSG-LEN SP SYSLOG-MSG" (RFC 6587 §3.4.1)."""
    return b"%d %s" % (len(message), message)


class SyslogTransport(Transport):
    def __init__(self, host: str, port: int, tls: ssl.SSLContext | None, settings: SinkSettings) -> None:
        self._host, self._port, self._tls = host, port, tls
        self._settings = settings
        self._facility = SYSLOG_FACILITIES[settings.syslog_facility]
        self._local_host = header_field(socket.gethostname(), 255)
        self._sock: socket.socket | None = None
        self.confirm_window = settings.syslog_confirm_window

    def deliver(self, batch: list[Outgoing]) -> None:
        if self._sock is not None and not self.still_connected():
            raise ConnectionLost(f"syslog {self._host}:{self._port}: connection closed by the receiver")
        sock = self._sock or self._connect()
        pid = os.getpid()
        data = b"".join(frame(format_message(item, self._facility, self._local_host, pid)) for item in batch)
        try:
            sock.sendall(data)
        except OSError as exc:  # ssl.SSLError and TimeoutError included
            self._drop()
            raise DeliveryError(f"syslog {self._host}:{self._port}: send: {exc.strerror or exc}") from None

    def _connect(self) -> socket.socket:
        where = f"syslog {self._host}:{self._port}"
        try:
            sock = socket.create_connection((self._host, self._port), timeout=self._settings.connect_timeout)
        except OSError as exc:
            raise DeliveryError(f"{where}: connect: {exc.strerror or exc}") from None
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)  # notice a silently dead peer
        if self._tls is not None:
            try:
                sock = self._tls.wrap_socket(sock, server_hostname=self._host)
            except (OSError, ssl.SSLError) as exc:
                sock.close()
                raise DeliveryError(f"{where}: TLS: {exc}") from None
        sock.settimeout(self._settings.timeout)
        self._sock = sock
        return sock

    def still_connected(self) -> bool:
        """Peek without blocking: EOF, a reset or a TLS close from the receiver (which never sends) = gone."""
        sock = self._sock
        if sock is None:
            return False
        try:
            sock.setblocking(False)
            try:
                data = sock.recv(1) if isinstance(sock, ssl.SSLSocket) else sock.recv(1, socket.MSG_PEEK)
            finally:
                sock.settimeout(self._settings.timeout)
        except (BlockingIOError, ssl.SSLWantReadError):
            return True  # nothing to read: the connection is up
        except OSError:
            data = b""
        if data:
            return True  # the receiver said something; syslog receivers do not, but it is not a close
        self._drop()
        return False

    def finish(self, timeout: float) -> bool:
        """Half-close and wait for the receiver to close too: it then has read everything we wrote."""
        if not self.still_connected():  # already closed by the receiver: what it last got is unknown
            return False
        sock, self._sock = self._sock, None
        assert sock is not None
        try:
            sock.settimeout(timeout)
            if isinstance(sock, ssl.SSLSocket):
                try:
                    sock = sock.unwrap()  # sends our close_notify; the receiver answers with its own...
                except (ssl.SSLEOFError, ssl.SSLZeroReturnError):
                    return True  # ...or (rsyslog) just closes: either way after reading all we sent
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(4096):
                pass
            return True
        except (OSError, ValueError):
            return False
        finally:
            sock.close()

    def _drop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
