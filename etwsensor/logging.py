"""Logging: structlog to stderr, JSON lines when stderr is not a terminal. Never on stdout.

structlog (which brings rich) is imported when something first logs: a run that logs nothing, like a
short replay, never pays for it. ``configure`` is then applied at that moment.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    import structlog

from etwsensor.redact import log_processor

_pending: list[bool] = []  # the verbose flag of a configure() that waits for the first log line


def configure(verbose: bool = False) -> None:
    """Log to stderr; applied now if structlog is loaded, else when the first logger is used."""
    _pending[:] = [verbose]
    if "structlog" in sys.modules:
        _structlog()


def _structlog() -> Any:
    import structlog

    if _pending:
        _apply(_pending.pop())
    return structlog


def _apply(verbose: bool) -> None:
    import structlog

    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,  # tracebacks as text, so the next step can scrub them
        log_processor,  # no secret in any log line
    ]
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer() if sys.stderr.isatty() else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG if verbose else logging.INFO),
        # sys.stderr as it is when a line is written, not when logging was set up: tests and embedders
        # swap it, and a logger bound to a closed stream would kill the thread that logs.
        logger_factory=lambda *_: structlog.PrintLogger(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


class _Deferred:
    """A logger that imports (and configures) structlog on its first use."""

    __slots__ = ("_logger", "_name")

    def __init__(self, name: str) -> None:
        self._name = name
        self._logger: Any = None

    def __getattr__(self, attr: str) -> Any:
        if self._logger is None:
            self._logger = _structlog().get_logger(self._name)
        return getattr(self._logger, attr)


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    if "structlog" in sys.modules:
        return _structlog().get_logger(name)  # type: ignore[no-any-return]
    return cast("structlog.typing.FilteringBoundLogger", _Deferred(name))


def configure_file(path: str, max_bytes: int = 10 << 20, backups: int = 5, verbose: bool = False) -> None:
    """JSON lines into a size-rotated file (PATH, PATH.1 … PATH.<backups>): for the Windows service, which
    has no console. Other handlers (the Event Log) may be added to the ``etwsensor`` stdlib logger."""
    from logging.handlers import RotatingFileHandler

    import structlog

    _pending.clear()  # this configuration wins over a deferred configure()

    handler = RotatingFileHandler(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("etwsensor")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG if verbose else logging.INFO),
        logger_factory=lambda *_: structlog.stdlib.LoggerFactory()("etwsensor"),
        cache_logger_on_first_use=False,
    )
