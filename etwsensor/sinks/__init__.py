"""Alert sinks: stdout, rotating file, syslog (TCP/TLS), Splunk HEC and webhook, with a durable spool.

    sink = open_sink("syslog+tls://siem.example:6514", SinkSettings(tls_ca_file=Path("ca.pem")))
    sink.send(alert)      # never raises because the far end is down; never waits for it
    sink.close()          # delivers for up to close_timeout; the rest stays spooled for the next run
    sink.state()          # {"sink", "delivered", "spooled", "pending", "dropped", "corrupt",
                          #  "down", "last_error"}

URL grammar: see ``etwsensor.sinks.urls``; options: ``SinkSettings``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from etwsensor.logging import get_logger
from etwsensor.sinks.base import Sink, SpooledSink, Transport, empty_state, undelivered
from etwsensor.sinks.config import SinkSettings, default_spool_dir
from etwsensor.sinks.formatted import split_format, with_format
from etwsensor.sinks.local import FileSink, StdoutSink
from etwsensor.sinks.spool import Spool, SpoolError
from etwsensor.sinks.urls import SINK_URL_FORMS, SinkConfigError, SinkTarget, parse_sink_url, redact

__all__ = [
    "SINK_URL_FORMS", "Sink", "SinkConfigError", "SinkSet", "SinkSettings", "default_spool_dir",
    "open_sink", "open_sinks", "parse_sink_url", "redact", "undelivered",
]  # fmt: skip

log = get_logger("etwsensor.sinks")


def _transport(target: SinkTarget, settings: SinkSettings) -> Transport:
    # Network transports are imported when a network sink is opened (httpx, ssl): not for stdout/file.
    from etwsensor.sinks.http import HecTransport, WebhookTransport
    from etwsensor.sinks.relp import RelpTransport
    from etwsensor.sinks.syslog import SyslogTransport
    from etwsensor.sinks.tls import client_context

    if target.kind == "syslog":
        tls = client_context(settings, target.display) if target.tls else None
        if target.relp:
            return RelpTransport(target.host, target.port, tls, settings)
        return SyslogTransport(target.host, target.port, tls, settings)
    if target.kind == "hec":
        return HecTransport(target, settings)
    return WebhookTransport(target, settings)


def open_sink(url: str, settings: SinkSettings | None = None, spool_dir: Path | None = None) -> Sink:
    """Open one sink. ``spool_dir`` (else ``settings.spool_dir``, else the user's state dir) holds one
    sub-directory per network sink. Raises ``SinkConfigError`` (one line) when it cannot be used."""
    settings = settings or SinkSettings()
    target = parse_sink_url(url)
    if target.kind == "stdout":
        return StdoutSink()
    if target.kind == "file":
        assert target.path is not None
        return FileSink(target.path, settings)
    transport = _transport(target, settings)  # no connection yet: a down receiver is not a config error
    root = spool_dir or settings.spool_dir or default_spool_dir()
    try:
        spool = Spool(root / target.spool_name, settings.spool_max_bytes, settings.spool_segment_bytes)
    except SpoolError as exc:
        transport.finish(0)
        raise SinkConfigError(f"sink {target.display}: {exc}") from None
    return SpooledSink(target.display, transport, spool, settings)


class SinkSet:
    """Several sinks fed the same alerts. Each network sink has its own worker and spool, so a slow or
    dead one never holds the others up; a sink that raises anyway is logged and skipped."""

    def __init__(self, sinks: list[Sink]) -> None:
        self.sinks = sinks
        self.name = ", ".join(s.name for s in sinks)

    def __iter__(self) -> Iterator[Sink]:
        return iter(self.sinks)

    def __len__(self) -> int:
        return len(self.sinks)

    def send(self, alert: Mapping[str, Any]) -> None:
        for sink in self.sinks:
            try:
                sink.send(alert)
            except Exception:
                log.exception("sink failed", sink=sink.name)

    def flush(self) -> None:
        for sink in self.sinks:
            try:
                sink.flush()
            except Exception:
                log.exception("sink flush failed", sink=sink.name)

    def close(self) -> None:
        """Close every sink; network sinks use their ``close_timeout`` in parallel, not one after another."""
        for sink in self.sinks:
            begin = getattr(getattr(sink, "inner", sink), "begin_close", None)
            if begin is not None:
                begin()
        for sink in self.sinks:
            try:
                sink.close()
            except Exception:
                log.exception("sink close failed", sink=sink.name)

    def state(self) -> dict[str, Any]:
        """Totals over all sinks, and each sink's own state under ``sinks``."""
        states = [sink.state() for sink in self.sinks]
        total = empty_state(self.name)
        for key in ("delivered", "spooled", "pending", "dropped", "corrupt", "lost", "dead_letters"):
            total[key] = sum(int(s.get(key) or 0) for s in states)
        total["down"] = any(s["down"] for s in states)
        total["last_error"] = next((s["last_error"] for s in states if s["last_error"]), None)
        total["sinks"] = states
        return total


def open_sinks(
    urls: Iterable[str],
    settings: SinkSettings | None = None,
    spool_dir: Path | None = None,
    alert_format: str = "etwsensor",
) -> SinkSet:
    """Open every sink or none: all URLs are checked first, and a sink that fails to open closes the rest.
    Each URL may end in ``#format=ecs|ocsf|etwsensor``; ``alert_format`` is the default."""
    specs = [split_format(url, alert_format) for url in (list(urls) or ["stdout"])]
    seen: set[str] = set()
    for url, _ in specs:
        key = parse_sink_url(url).url.strip()
        if key in seen:
            raise SinkConfigError(f"sink {redact(key)!r} is given twice")
        seen.add(key)
    opened: list[Sink] = []
    try:
        for url, fmt in specs:
            opened.append(with_format(open_sink(url, settings, spool_dir), fmt))
    except SinkConfigError:
        SinkSet(opened).close()
        raise
    return SinkSet(opened)
