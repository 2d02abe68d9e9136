"""``etwsensor trace``: live tracing on Windows, and ``trace --plan`` anywhere.

Live: session callback → bounded queue → worker thread (decode → normalize → detect → sinks, and the
recording with ``--record``); the main thread runs the watchdog every ``POLL_SECONDS`` until
``--duration`` or Ctrl-C, then stops the sessions, drains the queue and prints the replay summary.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import typer

from etwsensor.exitcodes import SKIP_BAD_RULES_HELP
from etwsensor.sources.live.callback import RecordCallback
from etwsensor.sources.live.enrich import HostApi
from etwsensor.sources.live.health import SessionStats
from etwsensor.sources.live.plan import PlanError, TracePlan, plan_for_rules

POLL_SECONDS = 2.0
QUEUE_CAPACITY = 262_144  # records (a few seconds of a busy host): a burst waits, a flood is dropped+counted


def _say(message: str) -> None:
    typer.echo(message, err=True)


def plan_text(plan: TracePlan) -> str:
    """The plan for a human: sessions, providers, masks, ids, filters."""
    lines: list[str] = []
    for s in plan.sessions:
        flags = f"  enable flags: {', '.join(s.enable_flags)} (0x{s.flags_mask:x})" if s.enable_flags else ""
        lines.append(f"session {s.name} ({s.kind}){flags}")
        for p in s.providers:
            lines.append(f"  {p.name} {{{p.guid}}} keywords 0x{p.keywords:x}"
                         + (" + rundown (capture state)" if p.capture_state else ""))  # fmt: skip
            for c in p.classes:
                lines.append(f"    class {c.name} {{{c.guid}}} opcodes {', '.join(map(str, c.opcodes))}")
            if p.event_ids:
                lines.append(f"    event ids: {', '.join(map(str, p.event_ids))}")
            for f in p.filters:
                if f.purpose:
                    lines.append(f"    filter: type 0x{f.type:x} value {f.value}: {f.purpose}")
    for table, actions in sorted(plan.tables.items()):
        lines.append(f"table {table}: {', '.join(sorted(actions)) or '(none)'}")
    return "\n".join(lines) + "\n"


def trace_command(
    plan_only: bool = typer.Option(False, "--plan", help="Print the sessions it would start, start nothing."),
    as_json: bool = typer.Option(False, "--json", help="With --plan: the plan as one JSON object."),
    logman: bool = typer.Option(False, "--logman", help="With --plan: WPR/logman commands for the plan."),
    duration: float | None = typer.Option(None, "--duration", min=0.1, help="Stop after S seconds."),
    record: Path | None = typer.Option(None, "--record", help="Also write a recording (.jsonl/.jsonl.zst)."),
    rules: list[Path] = typer.Option([], "--rules", help="Rule files or folders (repeatable)."),
    no_builtin: bool = typer.Option(False, "--no-builtin", help="Do not load the built-in rule pack."),
    sink: list[str] = typer.Option([], "--sink", help="Sink URL (repeatable); default: stdout."),
    config: Path | None = typer.Option(None, "--config", help="TOML configuration file."),
    classic_fallback: bool = typer.Option(
        False, "--classic-fallback", help="Also enable the classic Registry/FileIo classes (unfiltered)."
    ),
    json_summary: bool = typer.Option(False, "--json-summary", help="The closing summary as JSON on stderr."),
    skip_bad_rules: bool = typer.Option(False, "--skip-bad-rules", help=SKIP_BAD_RULES_HELP),
) -> None:
    """Trace this Windows host live (administrator), or show the plan with --plan (any OS)."""
    from etwsensor.cli import _load_rules, _settings_or_exit

    if (as_json or logman) and not plan_only:
        _say("error: --json and --logman go with --plan")
        raise typer.Exit(2)
    settings = _settings_or_exit(config)
    ruleset, rules_code = _load_rules(
        [*settings.rules.paths, *rules], settings.rules.builtin and not no_builtin, skip_bad_rules
    )
    instance = None if plan_only else str(os.getpid())
    try:
        plan = plan_for_rules(ruleset, classic_fallback=classic_fallback, instance=instance)
    except PlanError as exc:
        _say(f"error: {exc}")
        raise typer.Exit(2) from exc
    if plan_only:
        if as_json:
            typer.echo(json.dumps(plan.as_json(), indent=2))
        elif logman:
            from etwsensor.sources.live.collect import render

            typer.echo(render(plan), nl=False)
        else:
            typer.echo(plan_text(plan), nl=False)
        raise typer.Exit(rules_code)
    if sys.platform != "win32":
        _say(f"error: live tracing needs Windows (this is {sys.platform}); `trace --plan` shows what it "
             "would start, `trace --plan --logman` how to capture an .etl for replay")  # fmt: skip
        raise typer.Exit(2)
    from etwsensor.sources.live.session import is_elevated

    if not is_elevated():
        _say("error: live tracing needs an elevated (administrator) prompt")
        raise typer.Exit(2)
    from etwsensor.sources.live.enrich import WindowsHostApi
    from etwsensor.sources.live.session import EtwSessions

    run_live(plan, ruleset, settings, sink, record, duration, json_summary, WindowsHostApi(), EtwSessions)
    raise typer.Exit(rules_code)


class LiveSessions(Protocol):
    """What the live loop needs from the sessions (session.EtwSessions; a fake in the tests)."""

    on_consumer_end: Callable[[str], None] | None

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def query(self, name: str) -> SessionStats | None: ...

    def restart(self, name: str) -> bool: ...


def run_live(
    plan: TracePlan,
    ruleset: Any,
    settings: Any,
    sink_urls: list[str],
    record: Path | None,
    duration: float | None,
    json_summary: bool,
    host: HostApi,
    make_sessions: Callable[[TracePlan, RecordCallback], LiveSessions],
) -> None:
    """Trace until ``duration`` or Ctrl-C; the Windows parts come in as ``host`` and ``make_sessions``."""
    from etwsensor.alerts.allowlist import Allowlist
    from etwsensor.decode import Decoder
    from etwsensor.normalize import Normalizer
    from etwsensor.pipeline import Detector, suppressor_from
    from etwsensor.sinks import SinkConfigError, open_sinks
    from etwsensor.sources.live.callback import RecordQueue
    from etwsensor.sources.live.enrich import DeviceMapWatch, live_header, pointer_size
    from etwsensor.sources.live.health import Watchdog
    from etwsensor.sources.live.runner import LiveLoop
    from etwsensor.sources.live.session import LiveError
    from etwsensor.sources.recording import RecordingWriter

    header = live_header(host, pointer_size())
    sup = settings.suppression
    per_rule = {k: (v.window_seconds, v.key_columns) for k, v in sup.rules.items()}
    suppressor = suppressor_from(sup.window_seconds, sup.key_columns, per_rule)
    source = "live:" + ",".join(plan.session_names())
    detector = Detector(ruleset, source, Allowlist(settings.allowlist), suppressor)
    try:
        sinks = open_sinks(sink_urls or settings.output.sinks, settings.sink)
    except SinkConfigError as exc:
        _say(f"error: {exc}")
        raise typer.Exit(2) from exc
    recorder = RecordingWriter(record, header) if record is not None else None
    records = RecordQueue(QUEUE_CAPACITY)
    decoder = Decoder()  # providers/, the tamper watch's Kernel-EventTracing included
    normalizer = Normalizer(header, device_map=settings.device_map, gates=ruleset.row_gates())
    loop = LiveLoop(records, decoder, normalizer, detector, [sinks], recorder)
    sessions = make_sessions(plan, RecordCallback(records))
    host_ids = (header.host.name, header.host.device_id)
    watchdog = Watchdog(sessions, plan.session_names(), loop.send, host=host_ids)
    loop.watchdog = watchdog
    sessions.on_consumer_end = watchdog.consumer_returned
    volumes = DeviceMapWatch(host, header.device_map)
    worker = threading.Thread(target=loop.run, name="etwsensor-worker", daemon=True)
    worker.start()
    try:
        sessions.start()
    except LiveError as exc:
        sessions.stop()  # the ones that did start
        loop.stop()
        worker.join()
        if recorder is not None:
            recorder.close()
        sinks.close()
        _say(f"error: {exc}")
        raise typer.Exit(2) from exc
    _say(f"tracing: sessions {', '.join(plan.session_names())}; Ctrl-C to stop")
    deadline = time.monotonic() + duration if duration else None
    try:
        while deadline is None or time.monotonic() < deadline:
            left = POLL_SECONDS if deadline is None else deadline - time.monotonic()
            time.sleep(max(0.0, min(POLL_SECONDS, left)))
            watchdog.poll()
            watchdog.queue_drops(records.dropped)
            for ev in volumes.changes():
                loop.on_event(ev)
    except KeyboardInterrupt:
        _say("stopping (Ctrl-C)")
    finally:
        watchdog.shutdown()  # our own stops raise SessionStop events too
        sessions.stop()
        loop.stop()
        worker.join()
        summary = loop.finish()
        if recorder is not None:
            recorder.close()
        sinks.close()
    summary.sinks = {getattr(sinks, "name", "sinks"): sinks.state()}
    doc = summary.as_json()
    doc["live"] = {"queue": records.stats(), "health": watchdog.state(), "worker_errors": loop.errors}
    if recorder is not None:
        _say(f"recorded {recorder.events} events to {record}")
    print_summary(doc, json_summary)


def print_summary(doc: dict[str, Any], as_json: bool) -> None:
    """The closing summary on stderr: replay's counts plus the live queue and session health."""
    if as_json:
        _say(json.dumps(doc))
        return
    rows = ", ".join(f"{t} {n:,}" for t, n in doc["rows"].items()) or "none"
    _say(f"traced {doc['events']:,} events; rows: {rows}")
    _say(f"alerts: {doc['alerts']:,}")
    for rule_id, n in sorted(doc["alerts_by_rule"].items()):
        _say(f"  {n:>6,}  {rule_id}")
    queue, health = doc["live"]["queue"], doc["live"]["health"]
    offered, dropped, high = queue["offered"], queue["dropped"], queue["high_water"]
    _say(f"queue: {offered:,} records, {dropped:,} dropped, high water {high:,}")
    for name, state in health["sessions"].items():
        _say(f"session {name}: restarts {state['restarts']}, lost {state['lost']}")
    _say(f"decode errors {doc['decode_errors']:,}, undecoded {doc['undecoded']:,}")
    for name, state in doc["sinks"].items():
        _say(f"sink {name}: {json.dumps(state)}")
    for d in doc["damage"]:
        _say(f"damaged: {d}")
