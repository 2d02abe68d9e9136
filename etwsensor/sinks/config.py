"""Per-sink options. The main config nests one ``SinkSettings``; every field has a working default."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

MiB = 1024 * 1024

# RFC 5424 §6.2.1 facility codes, by the names syslog.conf uses.
SYSLOG_FACILITIES: dict[str, int] = {
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6, "news": 7,
    "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11, "ntp": 12, "audit": 13, "alert": 14, "clock": 15,
    "local0": 16, "local1": 17, "local2": 18, "local3": 19, "local4": 20, "local5": 21, "local6": 22,
    "local7": 23,
}  # fmt: skip

SyslogFacility = Literal[
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv", "ftp",
    "ntp", "audit", "alert", "clock", "local0", "local1", "local2", "local3", "local4", "local5", "local6",
    "local7",
]  # fmt: skip


class SinkSettings(BaseModel):
    """Options of one sink. Network options are ignored by stdout/file, file options by the others."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Batching and delivery (syslog, HEC, webhook).
    batch_size: int = Field(default=100, ge=1, le=10_000, description="Most alerts per request / write.")
    batch_interval: float = Field(
        default=0.1, ge=0, le=60, description="Seconds an alert may wait for its batch to fill."
    )
    connect_timeout: float = Field(default=5.0, gt=0, le=300, description="Seconds to open a connection.")
    timeout: float = Field(default=10.0, gt=0, le=600, description="Seconds for one write or HTTP request.")
    retries: int = Field(
        default=3, ge=0, le=100,
        description="Failed attempts in a row before the sink is reported down; it keeps retrying.",
    )  # fmt: skip
    retry_backoff: float = Field(
        default=0.5, ge=0, le=600, description="First wait after a failure (seconds)."
    )
    retry_backoff_max: float = Field(
        default=30.0, ge=0, le=3600, description="Longest wait between attempts."
    )
    close_timeout: float = Field(
        default=5.0,
        ge=0,
        le=600,
        description="How long close() keeps delivering before leaving the rest spooled.",
    )

    # TLS (syslog+tls, hec+https, webhook+https).
    tls_verify: bool = Field(default=True, description="Verify the server certificate and host name.")
    tls_ca_file: Path | None = Field(default=None, description="PEM CA bundle instead of the system store.")
    tls_cert_file: Path | None = Field(default=None, description="PEM client certificate (mutual TLS).")
    tls_key_file: Path | None = Field(default=None, description="PEM key of the client certificate.")

    # HTTP.
    gzip: bool | None = Field(
        default=None, description="gzip request bodies; default: on for HEC, off for webhook."
    )
    hec_token: SecretStr | None = Field(
        default=None, description="Splunk HEC token (sent as 'Splunk TOKEN')."
    )
    hec_index: str | None = Field(
        default=None, description="Splunk index; default: the token's default index."
    )
    hec_source: str = Field(default="etwsensor", description="HEC 'source' field.")
    http_proxy: SecretStr | None = Field(default=None, description="Proxy URL for HEC/webhook requests.")
    http_headers: dict[str, SecretStr] = Field(
        default_factory=dict, description="Extra request headers (e.g. a webhook's Authorization)."
    )

    # Syslog.
    syslog_facility: SyslogFacility = Field(
        default="local0", description="RFC 5424 facility of every message."
    )
    syslog_confirm_window: float = Field(
        default=2.0, ge=0, le=600,
        description="TCP syslog has no acknowledgements: a sent alert leaves the spool once the "
        "connection stayed up this long after it; a broken connection re-sends it (a duplicate). "
        "0: it leaves the spool once written (an alert in flight when the receiver dies is lost).",
    )  # fmt: skip

    # file:PATH rotation.
    max_bytes: int = Field(default=100 * MiB, ge=0, description="Rotate the file past this size; 0: never.")
    backups: int = Field(default=5, ge=1, le=1000, description="Rotated files kept (PATH.1 … PATH.N).")

    # Durable spool of the network sinks.
    spool_dir: Path | None = Field(
        default=None, description="Spool root; default: the user's state directory."
    )
    spool_max_bytes: int = Field(
        default=256 * MiB,
        ge=4096,
        description="Undelivered bytes kept per sink; past it new alerts are dropped.",
    )
    spool_segment_bytes: int = Field(default=4 * MiB, ge=4096, description="Size of one spool segment file.")


def default_spool_dir() -> Path:
    """Where spools live when neither the caller nor the settings say: the platform's per-user state dir."""
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "etwsensor" / "spool"
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "etwsensor" / "spool"
