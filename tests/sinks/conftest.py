"""Fixtures of the sink tests (defined in kit.py with the helpers the tests import)."""

from tests.sinks.kit import http_server, https_receiver, rsyslog, tls_files

__all__ = ["http_server", "https_receiver", "rsyslog", "tls_files"]
