"""Logging: structlog to stderr, JSON lines when stderr is not a terminal. Never on stdout."""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # structlog is imported when something logs: `etwsensor --version` never does
    import structlog

from etwsensor.redact import log_processor


def configure(verbose: bool = False) -> None:
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


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    import structlog

    return structlog.get_logger(name)  # type: ignore[no-any-return]


def configure_file(path: str, max_bytes: int = 10 << 20, backups: int = 5, verbose: bool = False) -> None:
    """JSON lines into a size-rotated file (PATH, PATH.1 … PATH.<backups>): for the Windows service, which
    has no console. Other handlers (the Event Log) may be added to the ``etwsensor`` stdlib logger."""
    from logging.handlers import RotatingFileHandler

    import structlog

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
