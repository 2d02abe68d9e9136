"""Suite-wide set-up."""

from __future__ import annotations

import signal

import pytest


def pytest_configure(config: pytest.Config) -> None:
    # A suite started with `&` from a non-interactive shell inherits SIGINT ignored, and so would every
    # command a test starts: the Ctrl-C tests (a real SIGINT to a child, or raised in-process by the live
    # tests) would then see nothing. Ctrl-C handling is what they test, so give the suite Python's default.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
