"""Sink URLs, the same on the command line and in the config file:

* ``stdout``
* ``file:PATH`` (``file:///abs/path`` also accepted)
* ``syslog+tcp://HOST[:PORT]``: RFC 5424 over TCP, octet counting; default port 514
* ``syslog+tls://HOST[:PORT]``: the same over TLS (RFC 5425); default port 6514
* ``syslog+relp://HOST[:PORT]``: RFC 5424 over RELP, every message acknowledged; default port 2514
* ``syslog+relp+tls://HOST[:PORT]``: the same over TLS (rsyslog imrelp's ``tls="on"``); default port 2514
* ``hec+https://HOST[:PORT][/services/collector]``: Splunk HTTP Event Collector (``hec+http://`` for tests)
* ``webhook+https://HOST[:PORT]/PATH[?QUERY]``: a JSON array per batch (``webhook+http://`` for tests)
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import SplitResult, urlsplit, urlunsplit

SinkKind = Literal["stdout", "file", "syslog", "hec", "webhook"]

SINK_URL_FORMS = (
    "stdout, file:PATH, syslog+tcp://HOST:PORT, syslog+tls://HOST:PORT, syslog+relp://HOST:PORT, "
    "syslog+relp+tls://HOST:PORT, "
    "hec+https://HOST:PORT/services/collector, webhook+https://URL"
)
_SYSLOG_DEFAULT_PORT = {"tcp": 514, "tls": 6514, "relp": 2514, "relp+tls": 2514}
_HEC_DEFAULT_PATH = "/services/collector"


class SinkConfigError(ValueError):
    """A sink that cannot be used as configured; the message is one line for the user."""


@dataclass(frozen=True, slots=True)
class SinkTarget:
    """A parsed sink URL."""

    kind: SinkKind
    url: str  # as the user wrote it
    path: Path | None = None  # file
    host: str = ""  # syslog
    port: int = 0  # syslog
    tls: bool = False  # syslog+tls, https
    endpoint: str = ""  # hec/webhook: the http(s) URL requests go to
    relp: bool = False  # syslog+relp: acknowledged delivery

    @property
    def display(self) -> str:
        """The URL without credentials or query string, for logs and summaries."""
        return redact(self.url)

    @property
    def spool_name(self) -> str:
        """A directory name unique to this sink (a hash, so secrets in the URL never reach the disk)."""
        slug = re.sub(r"[^A-Za-z0-9.-]+", "_", f"{self.kind}_{self.host or urlsplit(self.endpoint).hostname}")
        return f"{slug}-{hashlib.sha256(self.url.encode()).hexdigest()[:12]}"


def redact(url: str) -> str:
    """Drop user:password@ and ?query from a URL: both commonly carry tokens; of a webhook's path only
    the first segment is kept (Slack, Teams and Discord put the key in the rest of it)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    try:
        parts = urlsplit(f"x://{rest}")
    except ValueError:
        return f"{scheme}://***"
    host = parts.netloc.rpartition("@")[2]
    auth = "***@" if "@" in parts.netloc else ""
    query = "?***" if parts.query else ""
    path = parts.path
    if scheme.lower().startswith("webhook"):
        first, _, tail = path.lstrip("/").partition("/")
        path = f"/{first}/***" if tail else path
    return f"{scheme}://{auth}{host}{path}{query}"


def register_url_secrets(url: str) -> None:
    """Every part of a sink URL that may be a secret (password, query, webhook path key) is masked
    from all output from now on."""
    from etwsensor.redact import register

    _scheme, sep, rest = url.partition("://")
    if not sep:
        return
    try:
        parts = urlsplit(f"x://{rest}")
        password = parts.password
    except ValueError:
        return
    register(password, parts.query)
    if _scheme.lower().startswith("webhook"):
        _first, _, tail = parts.path.lstrip("/").partition("/")
        register(tail)


def parse_sink_url(url: str) -> SinkTarget:
    """Parse one sink URL; a ``SinkConfigError`` names what is wrong with it."""
    text = url.strip()
    if not text:
        raise SinkConfigError(f"empty sink URL (expected one of: {SINK_URL_FORMS})")
    register_url_secrets(text)
    if text.lower() == "stdout":
        return SinkTarget("stdout", text)
    scheme, colon, rest = text.partition(":")
    scheme = scheme.lower()
    if scheme == "file" and colon:
        path = rest[2:] if rest.startswith("//") else rest
        if not path:
            raise SinkConfigError(f"sink {text!r}: file: needs a path, e.g. file:/var/log/etwsensor.ndjson")
        return SinkTarget("file", text, path=Path(path))
    if "+" not in scheme or not rest.startswith("//"):
        raise SinkConfigError(f"sink {redact(text)!r}: unknown sink (expected one of: {SINK_URL_FORMS})")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise SinkConfigError(f"sink {redact(text)!r}: {exc}") from None
    kind, _, transport = scheme.partition("+")
    if not parts.hostname:
        raise SinkConfigError(f"sink {redact(text)!r}: no host")
    if kind == "syslog":
        if transport not in _SYSLOG_DEFAULT_PORT:
            raise SinkConfigError(
                f"sink {redact(text)!r}: syslog transport must be tcp, tls, relp or relp+tls"
            )
        if parts.path not in ("", "/") or parts.query or parts.username:
            raise SinkConfigError(f"sink {redact(text)!r}: a syslog URL is only HOST:PORT")
        return SinkTarget(
            "syslog", text, host=parts.hostname, port=port or _SYSLOG_DEFAULT_PORT[transport],
            tls=transport in ("tls", "relp+tls"), relp=transport in ("relp", "relp+tls"),
        )  # fmt: skip
    if kind in ("hec", "webhook"):
        if transport not in ("https", "http"):
            raise SinkConfigError(f"sink {redact(text)!r}: {kind} transport must be https (or http)")
        path = parts.path or (_HEC_DEFAULT_PATH if kind == "hec" else "")
        if kind == "hec" and (parts.query or parts.username):
            raise SinkConfigError(f"sink {redact(text)!r}: the HEC token goes in the settings, not the URL")
        endpoint = urlunsplit(SplitResult(transport, parts.netloc, path, parts.query, ""))
        return SinkTarget(kind, text, tls=transport == "https", endpoint=endpoint)  # type: ignore[arg-type]
    raise SinkConfigError(f"sink {redact(text)!r}: unknown sink (expected one of: {SINK_URL_FORMS})")
