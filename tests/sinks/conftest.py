"""Fixtures of the sink tests (defined in kit.py with the helpers the tests import)."""

from tests.sinks.kit import http_server, rsyslog, tls_files

__all__ = ["http_server", "rsyslog", "tls_files"]
