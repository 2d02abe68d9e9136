"""Configuration: one TOML file, environment variables override it (ETWSENSOR_…, nested with "__").

    [rules]
    paths = ["./rules"]            # files or folders of .kql / Sentinel .yaml rules
    builtin = true

    [output]
    sinks = ["stdout", "syslog+tls://siem.example:6514"]

    [suppression]
    window_seconds = 600
    key_columns = ["InitiatingProcessFolderPath", "FolderPath", "RegistryKey"]

    [performance]
    max_cpu_percent = 25           # share of one core; above it the lowest-value events are shed

    [[allowlist]]
    rule = "*"
    column = "InitiatingProcessFolderPath"
    operator = "endswith"
    value = "\\nvda.exe"

Secrets (a HEC token) belong in the environment: ETWSENSOR_SINK__HEC_TOKEN=… . `etwsensor config show`
prints the effective configuration with secrets masked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from etwsensor.alerts.allowlist import AllowEntry
from etwsensor.alerts.formats import AlertFormat
from etwsensor.errors import validation_reason
from etwsensor.sinks.config import SinkSettings


class ConfigError(ValueError):
    """An invalid configuration: names the file, the key and the reason."""


class RulesConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    paths: list[Path] = Field(default_factory=list, description="rule files or folders")
    builtin: bool = Field(default=True, description="load the built-in rule pack")


class OutputConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sinks: list[str] = Field(default_factory=lambda: ["stdout"], description="sink URLs")
    format: AlertFormat = Field(
        default="etwsensor", description="format of sinks whose URL has no #format= (etwsensor|ecs|ocsf)"
    )
    heartbeat_seconds: float | None = Field(
        default=None,
        ge=0,
        description="seconds between heartbeat records (0: none; unset: trace 60, replay 0)",
    )


class RuleSuppression(BaseModel):
    model_config = ConfigDict(extra="forbid")

    window_seconds: float | None = Field(default=None, ge=0)
    key_columns: list[str] | None = None


class SuppressionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    window_seconds: float = Field(default=600, ge=0, description="0 turns suppression off")
    key_columns: list[str] = Field(
        default_factory=lambda: ["InitiatingProcessFolderPath", "FolderPath", "RegistryKey"]
    )
    rules: dict[str, RuleSuppression] = Field(default_factory=dict, description="per rule id")


class EnrichConfig(BaseModel):
    """Image facts (docs/enrich.md): hashes, size, version resource and signature of every image."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=True, description="live tracing computes image facts")
    wait_ms: float = Field(default=10, ge=0, le=1000, description="longest wait of one event's rows")
    max_mb_per_second: float = Field(default=32, ge=0, description="read/hash rate limit (0: none)")
    max_file_size_mb: float = Field(default=64, gt=0, description="larger files: size only")
    trusted_roots: Path | None = Field(
        default=None, description="PEM file of roots signatures may also chain to (--trusted-roots wins)"
    )


class PerformanceConfig(BaseModel):
    """The CPU ceiling (docs/performance.md, "CPU ceiling"): unset, nothing is ever shed."""

    model_config = ConfigDict(extra="forbid")

    max_cpu_percent: float | None = Field(
        default=None, gt=0, le=6400,
        description="share of one core (percent) over a 5 s window above which the lowest-value events "
        "are shed, counted and reported (--max-cpu wins)",
    )  # fmt: skip


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ETWSENSOR_", env_nested_delimiter="__", extra="forbid")

    rules: RulesConfig = Field(default_factory=RulesConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    sink: SinkSettings = Field(default_factory=SinkSettings)
    suppression: SuppressionConfig = Field(default_factory=SuppressionConfig)
    allowlist: list[AllowEntry] = Field(default_factory=list)
    device_map: str | None = Field(default=None, description='JSON file or "C:=\\Device\\HarddiskVolume3;…"')
    enrich: EnrichConfig = Field(default_factory=EnrichConfig)
    performance: PerformanceConfig = Field(default_factory=PerformanceConfig)


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Defaults < TOML file < environment < explicit overrides (the command line)."""
    if path is not None and not path.is_file():
        raise ConfigError(f"{path}: no such config file")

    class _FromFile(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
            if path is not None:
                sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
            return tuple(sources)

    try:
        settings = _FromFile(**overrides)
    except ValidationError as exc:
        raise ConfigError(f"{path or 'environment'}: {validation_reason(exc)}") from exc
    except (ValueError, OSError) as exc:  # TOML syntax errors, unreadable file
        raise ConfigError(f"{path}: {exc}") from exc
    return settings


def effective_config(settings: Settings) -> dict[str, Any]:
    """The configuration as `config show` prints it: JSON-ready, secrets masked (sink URLs too)."""
    from etwsensor.sinks.urls import redact

    doc = settings.model_dump(mode="json")
    doc["output"]["sinks"] = [redact(url) for url in settings.output.sinks]
    for key in ("sink_headers", "sink_header_files"):
        doc["sink"][key] = {redact(url): value for url, value in doc["sink"][key].items()}
    return doc
