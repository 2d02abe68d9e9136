"""Turning library exceptions into the one-line reasons users read."""

from __future__ import annotations

from pydantic import ValidationError


def validation_reason(exc: ValidationError) -> str:
    """ "loc: message; loc: message" instead of pydantic's multi-line report with URLs."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or '(top)'}: {e['msg']}" for e in exc.errors())
