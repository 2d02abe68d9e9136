"""``etwsensor service install|uninstall|start|stop|reload|status|run``: etwsensor as a Windows service."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from etwsensor import exitcodes

service_app = typer.Typer(
    help="Run etwsensor as a Windows service (the `trace` pipeline from a config file, with hot reload "
    "and heartbeats). Windows only; administrator.",
    no_args_is_help=True,
)


def _windows_only() -> None:
    if sys.platform != "win32":
        typer.echo(f"error: the etwsensor service is Windows only (this is {sys.platform}); "
                   "`etwsensor trace --plan` shows what it would trace", err=True)  # fmt: skip
        raise typer.Exit(exitcodes.USAGE)


def _checked_config(config: Path) -> Path:
    from etwsensor.config import ConfigError, load_settings

    path = config.resolve()
    try:
        load_settings(path)
    except ConfigError as exc:
        typer.echo(f"error: config: {exc}", err=True)
        raise typer.Exit(exitcodes.USAGE) from exc
    return path


def _run(action: str) -> None:
    from etwsensor.service import scm

    try:
        getattr(scm, action)()
    except scm.ServiceError as exc:
        typer.echo(f"error: service {exc}", err=True)
        raise typer.Exit(exitcodes.USAGE) from exc


@service_app.command("install")
def install(config: Path = typer.Option(..., "--config", help="TOML config the service runs with.")) -> None:
    """Register the service (automatic start, restart on failure with backoff, Event Log source)."""
    path = _checked_config(config)  # a broken config is refused here, not at the first boot
    _windows_only()
    from etwsensor.service import scm

    try:
        scm.install(path, sys.executable)
    except scm.ServiceError as exc:
        typer.echo(f"error: service {exc}", err=True)
        raise typer.Exit(exitcodes.USAGE) from exc
    typer.echo(f"installed service {scm.SERVICE_NAME} with {path}; logs in {scm.log_dir()}", err=True)


@service_app.command("uninstall")
def uninstall() -> None:
    """Remove the service (stop it first)."""
    _windows_only()
    _run("uninstall")


@service_app.command("start")
def start() -> None:
    """Start the service and wait until it runs."""
    _windows_only()
    _run("start")


@service_app.command("stop")
def stop() -> None:
    """Stop the service; its ETW sessions stop with it."""
    _windows_only()
    _run("stop")


@service_app.command("reload")
def reload() -> None:
    """Reload the rules and the config file now (a service control code; SIGHUP's counterpart)."""
    _windows_only()
    _run("reload")


@service_app.command("status")
def status() -> None:
    """Print the service's state (running, stopped, …)."""
    _windows_only()
    from etwsensor.service import scm

    try:
        typer.echo(scm.status())
    except scm.ServiceError as exc:
        typer.echo(f"error: service {exc}", err=True)
        raise typer.Exit(exitcodes.USAGE) from exc


@service_app.command("run", hidden=True)
def run(config: Path = typer.Option(..., "--config")) -> None:
    """What the service manager starts; not for interactive use."""
    _windows_only()
    from etwsensor.service.windows import host

    host(config)
