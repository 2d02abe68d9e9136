"""The one handling of invalid UTF-16 in every input: a lone surrogate becomes U+FFFD.

ETW strings are UTF-16LE; the .etl decoder and live tracing decode them with ``errors="replace"``,
so an unpaired surrogate half arrives as U+FFFD. JSON inputs (recordings, row files) can spell
one as ``"\\ud800"``; ``clean_strings`` gives those the same U+FFFD, so a rule sees the same text
whatever the input kind, and regex, ``contains`` and the alert JSON all agree on it.
"""

from __future__ import annotations

import re
from typing import Any

REPLACEMENT = "\ufffd"
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(text: str) -> str:
    """``text`` with every lone surrogate replaced by U+FFFD (a JSON-decoded valid pair is already one
    character, so whatever surrogate is left is unpaired)."""
    if text.isascii():
        return text
    return _LONE_SURROGATE.sub(REPLACEMENT, text)


def clean_strings(value: Any) -> Any:
    """``clean_text`` over every string (keys included) of a decoded JSON value."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_text(k): clean_strings(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clean_strings(v) for v in value]
    return value
