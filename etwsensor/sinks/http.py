"""HTTP sinks: Splunk HEC (event format) and a generic JSON webhook, one POST per batch.

HEC: a body of concatenated event objects
``{"time": epoch, "host": ..., "source": ..., "sourcetype": "etwsensor:alert", "event": alert}``
with ``Authorization: Splunk TOKEN``. Webhook: a JSON array of alerts.

Answers: 2xx delivered. 408, 425, 429, 5xx and no answer at all: retried with backoff, honouring
``Retry-After``. 400, 413, 422: the data is refused (``Rejected``: the batch is split to isolate the
alerts refused, which go to the dead-letter file). 401, 403, 404, a redirect or any other answer: the
sender is refused (``Refused``: the sink stops, its alerts stay spooled).
"""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from etwsensor import __version__
from etwsensor.redact import register, scrub
from etwsensor.sinks.base import DeliveryError, Outgoing, Refused, Rejected, Transport
from etwsensor.sinks.config import SinkSettings
from etwsensor.sinks.tls import client_context
from etwsensor.sinks.urls import SinkConfigError, SinkTarget

HEC_SOURCETYPE = "etwsensor:alert"


def epoch_seconds(value: Any) -> float | None:
    """An ISO timestamp as Unix seconds (HEC's ``time``), or None when it is not one."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return round(moment.timestamp(), 6)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return None


RETRIED = frozenset({408, 425, 429})  # and every 5xx
REJECTED = frozenset({400, 413, 422})


def _checked_header(sink: str, name: str, value: str) -> str:
    """A header value fit to send; SinkConfigError naming the header (never the value) otherwise."""
    if any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in value) or not value.isascii():
        raise SinkConfigError(f"sink {sink}: header {name!r} holds a control or non-ASCII character")
    if not name or not all(c.isalnum() or c in "-_!#$%&'*+.^`|~" for c in name):
        raise SinkConfigError(f"sink {sink}: {name!r} is not a valid header name")
    return value


def _proxy(settings: SinkSettings, sink: str) -> str | None:
    """The proxy URL (it may hold credentials: registered as a secret); SinkConfigError if unusable."""
    value = settings.secret("http_proxy")
    if value is None:
        return None
    register(value)
    try:
        url = httpx.URL(value)
        register(url.password)
        if url.scheme not in ("http", "https", "socks5", "socks5h") or not url.host:
            raise ValueError("scheme must be http, https or socks5, with a host")
        httpx.Proxy(url)
    except (ValueError, TypeError, httpx.InvalidURL) as exc:
        reason = scrub(str(exc)) if str(exc) else type(exc).__name__
        raise SinkConfigError(f"sink {sink}: http_proxy is not a usable proxy URL ({reason})") from None
    return value


class HttpTransport(Transport):
    """POSTs batches to one endpoint; subclasses shape the body."""

    default_gzip = False

    def __init__(self, target: SinkTarget, settings: SinkSettings, headers: dict[str, str]) -> None:
        self._endpoint = target.endpoint
        self._name = target.display
        self._gzip = self.default_gzip if settings.gzip is None else settings.gzip
        own = {**headers}
        extra = settings.headers_for(target.url, target.kind)  # this sink's; never its own auth
        register(*extra.values())
        merged = {"User-Agent": f"etwsensor/{__version__}"}
        for name, value in {**extra, **own}.items():
            merged[name] = _checked_header(self._name, name, value)
        if self._gzip:
            merged["Content-Encoding"] = "gzip"
        verify = client_context(settings, target.display) if target.tls else False
        proxy = _proxy(settings, target.display)
        try:
            self._client = httpx.Client(
                headers=merged, verify=verify, follow_redirects=False, proxy=proxy,
                trust_env=False,  # explicit settings only: no proxy or CA from whatever the environment holds
                timeout=httpx.Timeout(settings.timeout, connect=settings.connect_timeout),
            )  # fmt: skip
        except (ValueError, TypeError, httpx.HTTPError) as exc:
            raise SinkConfigError(f"sink {self._name}: {scrub(str(exc)) or type(exc).__name__}") from None

    def body(self, batch: list[Outgoing]) -> bytes:
        raise NotImplementedError

    def deliver(self, batch: list[Outgoing]) -> None:
        body = self.body(batch)
        if self._gzip:
            body = gzip.compress(body, compresslevel=6, mtime=0)  # no timestamp: same batch, same bytes
        try:
            response = self._client.post(self._endpoint, content=body)
        except httpx.HTTPError as exc:  # connect, TLS, timeout, protocol: no answer
            raise DeliveryError(f"{self._name}: {type(exc).__name__}: {scrub(str(exc))}") from None
        status = response.status_code
        if response.is_success:
            return
        # The first line helps (HEC: {"text":"Invalid token","code":4}); secrets are masked anyway.
        first = response.text.strip().splitlines()[0][:200] if response.text.strip() else ""
        reason = scrub(f"{self._name}: HTTP {status} {first}".rstrip())
        if status in RETRIED or status >= 500:
            raise DeliveryError(reason, _retry_after(response))
        if status in REJECTED:
            raise Rejected(reason)
        hint = {401: "check the token", 403: "check the token's permissions", 404: "check the URL"}
        raise Refused(f"{reason} ({hint.get(status, 'check the sink settings')})")

    def finish(self, timeout: float) -> bool:
        self._client.close()
        return True


class HecTransport(HttpTransport):
    default_gzip = True  # HEC accepts Content-Encoding: gzip

    def __init__(self, target: SinkTarget, settings: SinkSettings) -> None:
        token = settings.secret("hec_token")
        if not token:
            raise SinkConfigError(
                f"sink {target.display}: HEC needs a token (sink setting hec_token or hec_token_file)"
            )
        register(token)
        self._fields: dict[str, Any] = {"source": settings.hec_source, "sourcetype": HEC_SOURCETYPE}
        if settings.hec_index:
            self._fields["index"] = settings.hec_index
        super().__init__(target, settings, {"Authorization": f"Splunk {token}"})

    def body(self, batch: list[Outgoing]) -> bytes:
        events: list[bytes] = []
        for item in batch:
            host = item.alert.get("host")
            envelope: dict[str, Any] = {}
            when = epoch_seconds(item.alert.get("time"))
            if when is not None:  # else HEC stamps the arrival time
                envelope["time"] = when
            if isinstance(host, dict) and host.get("name"):
                envelope["host"] = str(host["name"])
            envelope.update(self._fields)
            head = json.dumps(envelope, separators=(",", ":")).encode()
            events.append(head[:-1] + b',"event":' + item.raw + b"}")  # the alert's bytes, not re-encoded
        return b"\n".join(events)


class WebhookTransport(HttpTransport):
    def __init__(self, target: SinkTarget, settings: SinkSettings) -> None:
        super().__init__(target, settings, {"Content-Type": "application/json"})

    def body(self, batch: list[Outgoing]) -> bytes:
        return b"[" + b",".join(item.raw for item in batch) + b"]"
