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
    hec_token_file: Path | None = Field(
        default=None, description="File holding the HEC token (e.g. a container secret); wins over hec_token."
    )
    hec_index: str | None = Field(
        default=None, description="Splunk index; default: the token's default index."
    )
    hec_source: str = Field(default="etwsensor", description="HEC 'source' field.")
    http_proxy: SecretStr | None = Field(default=None, description="Proxy URL for HEC/webhook requests.")
    http_proxy_file: Path | None = Field(default=None, description="File holding the proxy URL.")
    http_headers: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Extra request headers of every webhook sink (never HEC's; never replacing a sink's "
        "own Authorization). Per sink: sink_headers.",
    )
    sink_headers: dict[str, dict[str, SecretStr]] = Field(
        default_factory=dict,
        description="Request headers of one HTTP sink, keyed by its URL as given on --sink / [output].",
    )
    sink_header_files: dict[str, dict[str, Path]] = Field(
        default_factory=dict, description="As sink_headers, each value read from a file."
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
    memory_max_alerts: int = Field(
        default=10_000, ge=0, le=10_000_000,
        description="Alerts the spool refuses (full disk, or spool_max_bytes reached) are held in memory "
        "and sent from there while the receiver is up; past this many they are lost (counted).",
    )  # fmt: skip

    def secret(self, name: Literal["hec_token", "http_proxy"]) -> str | None:
        """A secret setting's value: from ``NAME_file`` when set (trailing newline dropped), else NAME."""
        path: Path | None = getattr(self, f"{name}_file")
        if path is not None:
            return _read_secret(path, f"{name}_file")
        value: SecretStr | None = getattr(self, name)
        return value.get_secret_value() if value is not None else None

    def headers_for(self, url: str, kind: str) -> dict[str, str]:
        """The extra headers of one HTTP sink: ``http_headers`` (webhooks only), then its own entry of
        ``sink_headers`` / ``sink_header_files`` (by its URL as written, without ``#format=``)."""
        headers = {k: v.get_secret_value() for k, v in self.http_headers.items()} if kind == "webhook" else {}
        key = url.split("#", 1)[0].strip()
        own = self.sink_headers.get(key) or self.sink_headers.get(url.strip()) or {}
        headers.update({k: v.get_secret_value() for k, v in own.items()})
        files = self.sink_header_files.get(key) or self.sink_header_files.get(url.strip()) or {}
        headers.update({k: _read_secret(p, f"sink_header_files {k}") for k, p in files.items()})
        return headers


def _read_secret(path: Path, setting: str) -> str:
    from etwsensor.sinks.urls import SinkConfigError

    try:
        return path.read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise SinkConfigError(f"{setting}: cannot read {path}: {reason}") from None


def default_spool_dir() -> Path:
    """Where spools live when neither the caller nor the settings say: the platform's per-user state dir."""
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "etwsensor" / "spool"
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "etwsensor" / "spool"
