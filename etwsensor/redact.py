"""Secrets are never printed: every secret a sink is given (tokens, header values, passwords and query
strings of URLs, webhook path keys) is registered here, and every log line, error message and summary
passes through ``scrub`` before anyone sees it."""

from __future__ import annotations

import threading
from collections.abc import Iterable, MutableMapping
from typing import Any

MASK = "***"
_MIN_LENGTH = 4  # shorter strings would mask ordinary words; no real secret is that short
_secrets: set[str] = set()
_lock = threading.Lock()


def register(*values: str | None) -> None:
    """Remember secret values (and their stripped forms) so ``scrub`` masks them wherever they appear."""
    with _lock:
        for value in values:
            if not value:
                continue
            for form in {value, value.strip(), repr(value)[1:-1]}:
                if len(form) >= _MIN_LENGTH:
                    _secrets.add(form)


def registered() -> Iterable[str]:
    with _lock:
        return tuple(_secrets)


def scrub(text: str) -> str:
    """``text`` with every registered secret replaced by ``***`` (longest first)."""
    secrets = registered()
    if not secrets:
        return text
    for secret in sorted(secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def scrub_value(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: scrub_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(scrub_value(v) for v in value)
    return value


def log_processor(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: no log line carries a registered secret (tracebacks included)."""
    if not _secrets:
        return event_dict
    for key, value in list(event_dict.items()):
        event_dict[key] = scrub_value(value)
    return event_dict
