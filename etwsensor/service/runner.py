"""What the service does between start and stop: the ``trace`` pipeline from a config file, always with
hot reload and heartbeats, until the service is stopped or the system shuts down.

Kept free of pywin32 so it runs, and is tested, anywhere: the Windows parts (host facts, ETW sessions) come in
as arguments, exactly as ``trace`` passes them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from etwsensor import exitcodes
from etwsensor.logging import get_logger

log = get_logger("etwsensor.service")

DEFAULT_HEARTBEAT_SECONDS = 60.0


@dataclass
class ServiceControl:
    """The service's side of the SCM: stop (service stop, system shutdown) and reload (a control code)."""

    stop_event: threading.Event = field(default_factory=threading.Event)
    reload_request: Callable[[], None] | None = None

    def stop(self) -> None:
        self.stop_event.set()

    def reload(self) -> bool:
        """Ask for a rule reload now; False before the pipeline is up."""
        if self.reload_request is None:
            return False
        self.reload_request()
        return True


def run_service(
    config: Path,
    control: ServiceControl,
    host: Any,
    make_sessions: Callable[..., Any],
    session_prefix: str = "etwsensor",
) -> int:
    """Trace with ``config`` until ``control`` says stop; the exit code (``etwsensor.exitcodes``).

    Rules that fail to load are logged and skipped (a service must come up); a config file that cannot
    be read, or no rule at all, is a usage error and the service stops with it (and the SCM's failure
    actions restart it with backoff).
    """
    from etwsensor.config import ConfigError, load_settings
    from etwsensor.rules import RuleSet
    from etwsensor.rules.reload import ReloadOutcome, RuleReloader
    from etwsensor.sources.live.cli import LiveOptions, run_live
    from etwsensor.sources.live.lifecycle import rename_sessions
    from etwsensor.sources.live.plan import PlanError, TracePlan, plan_for_rules

    try:
        settings = load_settings(config)
    except ConfigError as exc:
        log.error("service: the configuration cannot be used", error=str(exc))
        return exitcodes.USAGE
    ruleset, failures = RuleSet.load(settings.rules.paths, builtin=settings.rules.builtin)
    for failure in failures:
        log.warning("service: rule skipped", failure=str(failure))
    if not ruleset.rules:
        log.error("service: no rules to run", config=str(config))
        return exitcodes.USAGE

    def plan_of(rules: Any) -> TracePlan:
        return rename_sessions(plan_for_rules(rules), session_prefix)

    try:
        plan = plan_of(ruleset)
    except PlanError as exc:
        log.error("service: no session plan", error=str(exc))
        return exitcodes.USAGE

    def compile_rules() -> ReloadOutcome:
        fresh = load_settings(config)
        return ReloadOutcome(*RuleSet.load(fresh.rules.paths, builtin=fresh.rules.builtin))

    reloader = RuleReloader([*settings.rules.paths, config], compile_rules, accept_partial=True)
    control.reload_request = reloader.request
    beat = settings.output.heartbeat_seconds
    options = LiveOptions(
        alert_format=settings.output.format,
        heartbeat_seconds=DEFAULT_HEARTBEAT_SECONDS if beat is None else beat,
        reloader=reloader,
        plan_of=plan_of,
        stop_event=control.stop_event,
    )
    reloader.start()
    log.info("service: tracing", config=str(config), sessions=list(plan.session_names()),
             rules=len(ruleset.rules))  # fmt: skip
    import typer

    try:
        code = run_live(plan, ruleset, settings, [], None, None, True, host, make_sessions, None, options)
    except typer.Exit as exc:  # a sink that cannot be opened: said on the log, the SCM sees the code
        code = exc.exit_code
    finally:
        reloader.stop()
        control.reload_request = None
    log.info("service: stopped", exit_code=code)
    return code
