"""Per-sink alert formats: ``URL#format=ecs`` (or ``ocsf``, ``etwsensor``) and the wrapper applying it.

The fragment never reaches the network (HTTP clients do not send fragments; file and syslog URLs have
none), so it is a safe place for an etwsensor-side option. A sink without one uses the run's default
(``--format``, else ``[output] format``, else etwsensor's own schema).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from etwsensor.alerts.formats import ALERT_FORMATS, Formatter, formatter
from etwsensor.sinks.base import Sink
from etwsensor.sinks.urls import SinkConfigError

_MARK = "#format="


def split_format(url: str, default: str = "etwsensor") -> tuple[str, str]:
    """``(url without the fragment, format)``; SinkConfigError for an unknown format."""
    base, sep, name = url.rpartition(_MARK)
    if not sep:
        base, name = url, default
    name = name.strip().lower()
    if name not in ALERT_FORMATS:
        raise SinkConfigError(f"unknown alert format {name!r} (expected one of: {', '.join(ALERT_FORMATS)})")
    return base, name


class FormattedSink:
    """A sink that receives every alert already turned into another format's document."""

    def __init__(self, inner: Sink, fmt: str, to_doc: Formatter) -> None:
        self.inner = inner
        self.format = fmt
        self.name = f"{inner.name} ({fmt})"
        self._to_doc = to_doc

    def send(self, alert: Mapping[str, Any]) -> None:
        self.inner.send(self._to_doc(dict(alert)))

    def flush(self) -> None:
        self.inner.flush()

    def close(self) -> None:
        self.inner.close()

    def state(self) -> dict[str, Any]:
        state = self.inner.state()
        state["format"] = self.format
        return state


def with_format(sink: Sink, fmt: str) -> Sink:
    to_doc = formatter(fmt)
    return sink if to_doc is None else FormattedSink(sink, fmt, to_doc)
