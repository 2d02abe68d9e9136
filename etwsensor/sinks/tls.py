"""TLS client settings of syslog+tls and the https sinks: verification on unless switched off, loudly."""

from __future__ import annotations

import ssl

from etwsensor.logging import get_logger
from etwsensor.sinks.config import SinkSettings
from etwsensor.sinks.urls import SinkConfigError

log = get_logger("etwsensor.sinks")


def client_context(settings: SinkSettings, sink_name: str) -> ssl.SSLContext:
    try:
        ctx = ssl.create_default_context(cafile=str(settings.tls_ca_file) if settings.tls_ca_file else None)
        if settings.tls_cert_file:
            ctx.load_cert_chain(
                str(settings.tls_cert_file), str(settings.tls_key_file) if settings.tls_key_file else None
            )
    except (OSError, ssl.SSLError) as exc:  # missing file, bad PEM, key not matching the certificate
        raise SinkConfigError(f"sink {sink_name}: TLS files: {exc.strerror or exc}") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if not settings.tls_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        log.warning(
            "TLS certificate verification is OFF: anyone on the network path can read and forge these alerts",
            sink=sink_name,
        )
    return ctx
