"""HTTP sinks: Splunk HEC (event format) and a generic JSON webhook, one POST per batch.

HEC: a body of concatenated event objects
``{"time": epoch, "host": ..., "source": ..., "sourcetype": "etwsensor:alert", "event": alert}``
with ``Authorization: Splunk TOKEN``. Webhook: a JSON array of alerts. A 2xx answer means
delivered; anything else (or no answer) is retried, honouring ``Retry-After``.
"""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from etwsensor import __version__
from etwsensor.sinks.base import DeliveryError, Outgoing, Transport
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


class HttpTransport(Transport):
    """POSTs batches to one endpoint; subclasses shape the body."""

    default_gzip = False

    def __init__(self, target: SinkTarget, settings: SinkSettings, headers: dict[str, str]) -> None:
        self._endpoint = target.endpoint
        self._name = target.display
        self._gzip = self.default_gzip if settings.gzip is None else settings.gzip
        headers = {
            "User-Agent": f"etwsensor/{__version__}",
            **headers,
            **{k: v.get_secret_value() for k, v in settings.http_headers.items()},
        }
        if self._gzip:
            headers["Content-Encoding"] = "gzip"
        verify = client_context(settings, target.display) if target.tls else False
        proxy = (
            settings.http_proxy.get_secret_value() if settings.http_proxy else None
        )  # may hold credentials
        self._client = httpx.Client(
            headers=headers, verify=verify, follow_redirects=False, proxy=proxy,
            trust_env=False,  # explicit settings only: no proxy or CA from whatever the environment holds
            timeout=httpx.Timeout(settings.timeout, connect=settings.connect_timeout),
        )  # fmt: skip

    def body(self, batch: list[Outgoing]) -> bytes:
        raise NotImplementedError

    def deliver(self, batch: list[Outgoing]) -> None:
        body = self.body(batch)
        if self._gzip:
            body = gzip.compress(body, compresslevel=6, mtime=0)  # no timestamp: same batch, same bytes
        try:
            response = self._client.post(self._endpoint, content=body)
        except httpx.HTTPError as exc:  # connect, TLS, timeout, protocol: no answer
            raise DeliveryError(f"{self._name}: {type(exc).__name__}: {exc}") from None
        if not response.is_success:
            # The first line helps (HEC: {"text":"Invalid token","code":4}); it never echoes the token.
            text = response.text.strip().splitlines()[0][:200] if response.text.strip() else ""
            raise DeliveryError(
                f"{self._name}: HTTP {response.status_code} {text}".rstrip(), _retry_after(response)
            )

    def finish(self, timeout: float) -> bool:
        self._client.close()
        return True


class HecTransport(HttpTransport):
    default_gzip = True  # HEC accepts Content-Encoding: gzip

    def __init__(self, target: SinkTarget, settings: SinkSettings) -> None:
        if settings.hec_token is None or not settings.hec_token.get_secret_value():
            raise SinkConfigError(f"sink {target.display}: HEC needs a token (sink setting hec_token)")
        token = settings.hec_token.get_secret_value()
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
