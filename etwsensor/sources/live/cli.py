"""``etwsensor trace``: live tracing on Windows, and ``trace --plan`` anywhere.

Live: session callback → bounded queue → worker thread (decode → normalize → detect → sinks, and the
recording with ``--record``); the main thread runs the watchdog every ``POLL_SECONDS`` until
``--duration``, Ctrl-C, ``--stop-file`` or every session given up, then stops the sessions (keeping their
last counters), drains the queue and prints the replay summary. Exit codes (etwsensor.exitcodes): 0, also
after Ctrl-C; 1 a rule did not load; 2 cannot start; 3 every session was stopped and could not be
restarted; 4 alerts not delivered.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import typer

from etwsensor import exitcodes
from etwsensor.exitcodes import SKIP_BAD_RULES_HELP
from etwsensor.heartbeat import Heartbeat, PipelineSnapshot, ruleset_version
from etwsensor.sinks.base import undelivered
from etwsensor.sources.live.callback import RecordCallback
from etwsensor.sources.live.enrich import HostApi
from etwsensor.sources.live.health import SessionStats
from etwsensor.sources.live.lifecycle import rename_sessions
from etwsensor.sources.live.plan import PlanError, TracePlan, plan_for_rules

if TYPE_CHECKING:
    from etwsensor.rules.reload import RuleReloader

POLL_SECONDS = 2.0
TICK_SECONDS = 0.25  # how soon the deadline or the stop file is noticed
BACKOFF = (1.0, 60.0)  # seconds before the first retry of a failed restart, and the longest wait
MAX_RESTART_FAILURES = 8  # then the session is given up (about four minutes of retries)
SESSION_PREFIX = re.compile(r"[A-Za-z0-9._-]{1,64}")
EXIT_BLIND = exitcodes.DAMAGED_INPUT  # every session stopped and could not be restarted: the input was lost
PROBE_GRACE_SECONDS = 30.0  # how long the Win32k probe waits for its test hook's event
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
    alert_format: str | None = typer.Option(
        None, "--format", help="Alert format: etwsensor, ecs or ocsf (per sink: URL#format=ecs)."
    ),
    heartbeat_seconds: float | None = typer.Option(
        None, "--heartbeat", min=0, help="Seconds between heartbeat records (default 60; 0: none)."
    ),
    reload: bool = typer.Option(
        False, "--reload", help="Watch rule folders and the config file (and SIGHUP); reload between rows."
    ),
    stop_file: Path | None = typer.Option(
        None, "--stop-file", help="Stop (as Ctrl-C does) when this file appears: for scripts and CI."
    ),
    session_prefix: str = typer.Option(
        "etwsensor", "--session-prefix", help="ETW session names: PREFIX-kernel and PREFIX-providers."
    ),
    export: Path | None = typer.Option(
        None, "--export", help="Also write every row to this Parquet dataset (as `export`), rolled hourly."
    ),
    max_cpu: float | None = typer.Option(
        None, "--max-cpu", min=0.1, help="CPU ceiling, % of one core: above it low-value events are shed."
    ),
    trusted_roots: Path | None = typer.Option(
        None, "--trusted-roots", help="PEM file of extra roots signatures may chain to (config: [enrich])."
    ),
) -> None:
    """Trace this Windows host live (administrator), or show the plan with --plan (any OS)."""
    from etwsensor.cli import _check_trusted_roots, _load_rules, _settings_or_exit

    if (as_json or logman) and not plan_only:
        _say("error: --json and --logman go with --plan")
        raise typer.Exit(2)
    if not SESSION_PREFIX.fullmatch(session_prefix):
        _say("error: --session-prefix takes 1-64 letters, digits, '.', '_' or '-'")
        raise typer.Exit(2)
    settings = _settings_or_exit(config)
    if trusted_roots is not None:
        settings.enrich.trusted_roots = trusted_roots
    _check_trusted_roots(settings.enrich.trusted_roots)
    ruleset, rules_code = _load_rules(
        [*settings.rules.paths, *rules], settings.rules.builtin and not no_builtin, skip_bad_rules
    )
    try:
        plan = rename_sessions(plan_for_rules(ruleset, classic_fallback=classic_fallback), session_prefix)
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
    if stop_file is not None and stop_file.exists():
        _say(f"error: the stop file {stop_file} already exists (the trace would stop at once): remove it")
        raise typer.Exit(exitcodes.USAGE)
    if sys.platform != "win32":
        _say(f"error: live tracing needs Windows (this is {sys.platform}); `trace --plan` shows what it "
             "would start, `trace --plan --logman` how to capture an .etl for replay")  # fmt: skip
        raise typer.Exit(2)
    from etwsensor.sources.live.win32 import is_elevated

    if not is_elevated():
        _say("error: live tracing needs an elevated (administrator) prompt")
        raise typer.Exit(2)
    from etwsensor.cli import _reloader
    from etwsensor.sources.live.enrich import WindowsHostApi
    from etwsensor.sources.live.lifecycle import EtwSessions

    beat = heartbeat_seconds if heartbeat_seconds is not None else settings.output.heartbeat_seconds
    reloader = _reloader(config, rules, not no_builtin, skip_bad_rules) if reload else None

    def plan_of(new_rules: Any) -> TracePlan:
        return rename_sessions(plan_for_rules(new_rules, classic_fallback=classic_fallback), session_prefix)

    every = 60.0 if beat is None else beat
    ceiling = max_cpu if max_cpu is not None else settings.performance.max_cpu_percent
    options = LiveOptions(alert_format or settings.output.format, every, reloader, plan_of, export=export,
                          max_cpu_percent=ceiling)  # fmt: skip
    code = run_live(plan, ruleset, settings, sink, record, duration, json_summary, WindowsHostApi(),
                    EtwSessions, stop_file, options)  # fmt: skip
    raise typer.Exit(exitcodes.worst(code, rules_code))


class LiveSessions(Protocol):
    """What the live loop needs from the sessions: lifecycle.EtwSessions (a simulated advapi32 in tests)."""

    on_consumer_end: Callable[[str], None] | None
    on_final: Callable[[str, SessionStats], None] | None
    warnings: list[str]

    def start(self) -> None: ...

    def stop(self) -> dict[str, SessionStats]: ...

    def query(self, name: str) -> SessionStats | None: ...

    def restart(self, name: str) -> bool: ...


@contextlib.contextmanager
def _ctrl_c_ignored() -> Iterator[None]:
    """During shutdown a second Ctrl-C must not leave a session running: it is ignored until we are done."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def _ctrl_c_deferred() -> Iterator[None]:
    """While sessions start, a Ctrl-C waits for the Win32 call in progress: a handle that call returns is
    never lost to the interrupt, so the stop that follows closes everything. Raised when the block ends."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pressed: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: pressed.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if pressed:
        raise KeyboardInterrupt


@dataclass(frozen=True, slots=True)
class LiveOptions:
    """What a live run sends besides alerts, and how its rules may change while it runs."""

    alert_format: str = "etwsensor"
    heartbeat_seconds: float = 0.0  # 0: no heartbeats
    reloader: RuleReloader | None = None
    plan_of: Callable[[Any], TracePlan] | None = None  # the plan a reloaded rule set would need
    stop_event: threading.Event | None = None  # set by a service stop or system shutdown
    export: Path | None = None  # a Parquet dataset every row is also written to, rolled hourly
    max_cpu_percent: float | None = None  # CPU ceiling (etwsensor.budget): over it low-value events are shed


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
    stop_file: Path | None = None,
    options: LiveOptions = LiveOptions(),
) -> int:
    """Trace until ``duration``, Ctrl-C, ``stop_file`` or every session given up; the exit code.

    The Windows parts come in as ``host`` and ``make_sessions``. Whatever ends the trace, the sessions are
    stopped (their last counters kept), the queue drained and the summary printed.
    """
    from etwsensor.alerts.allowlist import Allowlist
    from etwsensor.decode import Decoder
    from etwsensor.normalize import Normalizer
    from etwsensor.pipeline import Detector, suppressor_from
    from etwsensor.sinks import SinkConfigError, open_sinks
    from etwsensor.sources.live.callback import RecordQueue
    from etwsensor.sources.live.enrich import DeviceMapWatch, live_header
    from etwsensor.sources.live.health import Watchdog
    from etwsensor.sources.live.lifecycle import LiveError
    from etwsensor.sources.live.probe import Win32kProbe, windows_hook_trigger
    from etwsensor.sources.live.runner import LiveLoop
    from etwsensor.sources.recording import RecordingWriter

    header = live_header(host, host.os_pointer_size())
    sup = settings.suppression
    per_rule = {k: (v.window_seconds, v.key_columns) for k, v in sup.rules.items()}
    suppressor = suppressor_from(sup.window_seconds, sup.key_columns, per_rule)
    source = "live:" + ",".join(plan.session_names())
    detector = Detector(ruleset, source, Allowlist(settings.allowlist), suppressor)
    try:
        sinks = open_sinks(sink_urls or settings.output.sinks, settings.sink, None, options.alert_format)
    except SinkConfigError as exc:
        _say(f"error: {exc}")
        raise typer.Exit(2) from exc
    recorder = RecordingWriter(record, header) if record is not None else None
    records = RecordQueue(QUEUE_CAPACITY)
    decoder = Decoder()  # providers/, the tamper watch's Kernel-EventTracing included
    facts, facts_worker = None, None
    if settings.enrich.enabled:  # image facts from this host's files (docs/enrich.md)
        from etwsensor.enrich import live_enricher

        e = settings.enrich
        recording = record is not None
        facts, facts_worker = live_enricher(e.wait_ms, e.max_mb_per_second, e.max_file_size_mb, recording,
                                            e.trusted_roots)  # fmt: skip
    gates = {} if options.export is not None else ruleset.row_gates()  # exporting: every row is built
    normalizer = Normalizer(header, device_map=settings.device_map, gates=gates, facts=facts)
    exporter = None
    if options.export is not None:
        from etwsensor.hunt.dataset import HourlyExport

        exporter = HourlyExport(options.export)
    replan = None
    if options.plan_of is not None:
        plan_of = options.plan_of

        def replan(new_rules: Any) -> dict[str, Any]:
            try:
                wanted = plan_of(new_rules)
            except PlanError as exc:
                return {"replan": True, "plan_error": str(exc)}
            return {"replan": wanted != plan, "sessions": list(wanted.session_names())}

    from etwsensor.normalize.accounts import WELL_KNOWN_SIDS
    from etwsensor.sources.live.hostfacts import HostFacts

    host_facts = HostFacts(host, {*header.sids, *WELL_KNOWN_SIDS})  # tokens and new SIDs' names
    host_ids = (header.host.name, header.host.device_id)
    budget = None
    ceiling = options.max_cpu_percent or settings.performance.max_cpu_percent  # the service: its config
    if ceiling:
        from etwsensor.budget import budget_for

        budget = budget_for(ceiling, ruleset, sinks.send, source, host_ids)
    loop = LiveLoop(records, decoder, normalizer, detector, [sinks], recorder, reloader=options.reloader,
                    replan=replan, exporter=exporter, host_facts=host_facts, budget=budget)  # fmt: skip
    callback = RecordCallback(records)
    sessions = make_sessions(plan, callback)
    watchdog = Watchdog(sessions, plan.session_names(), loop.send, host=host_ids, backoff_first=BACKOFF[0],
                        backoff_max=BACKOFF[1], max_failures=MAX_RESTART_FAILURES)  # fmt: skip
    loop.watchdog = watchdog
    sessions.on_consumer_end = watchdog.consumer_returned
    sessions.on_final = lambda name, stats: watchdog.final({name: stats})
    volumes = DeviceMapWatch(host, header.device_map)
    worker = threading.Thread(target=loop.run, name="etwsensor-worker", daemon=True)
    worker.start()
    trigger = windows_hook_trigger if sys.platform == "win32" else None
    probe = Win32kProbe(plan, loop.send, host=host_ids, trigger=trigger, grace=PROBE_GRACE_SECONDS)
    loop.probe = probe
    failed: LiveError | None = None
    heartbeat: Heartbeat | None = None
    ended = "Ctrl-C"
    try:
        try:
            with _ctrl_c_deferred():
                sessions.start()
        except LiveError as exc:
            failed = exc
        else:
            for warning in sessions.warnings:
                _say(f"warning: {warning}")
            probe.start()
            how = f" or create {stop_file}" if stop_file is not None else ""
            _say(f"tracing: sessions {', '.join(plan.session_names())}; Ctrl-C{how} to stop")
            if options.heartbeat_seconds:
                heartbeat = Heartbeat(loop.send, options.heartbeat_seconds, source)
                heartbeat.start(live_snapshot(loop, records, watchdog, sinks))
            beat = None
            if heartbeat is not None:
                hb = heartbeat

                def beat() -> None:
                    if hb.due():
                        hb.tick(live_snapshot(loop, records, watchdog, sinks))

            ended = _wait(duration, stop_file, watchdog, records, callback, volumes, loop, beat,
                          options.stop_event)  # fmt: skip
    except KeyboardInterrupt:
        ended = "Ctrl-C"
    finally:
        with _ctrl_c_ignored():
            watchdog.shutdown()  # our own stops raise SessionStop events too
            final = sessions.stop()
            watchdog.final(final)
            watchdog.lost_records(callback.lost)
            watchdog.queue_drops(records.dropped)
            loop.stop()
            worker.join()
            summary = loop.finish()
            if heartbeat is not None:  # the last record before stop always goes out
                heartbeat.stop(live_snapshot(loop, records, watchdog, sinks))
            if options.reloader is not None:
                options.reloader.stop()
            if facts_worker is not None:
                facts_worker.close()
            host_facts.close()
            if recorder is not None:
                recorder.close()
            sinks.close()
    if failed is not None:
        _say(f"error: {failed}")
        return exitcodes.USAGE
    _say(f"stopping ({ended})")
    summary.sinks = {s.name: s.state() for s in sinks.sinks}
    doc = summary.as_json()
    doc["live"] = {"queue": records.stats(), "health": watchdog.state(), "worker_errors": loop.errors,
                   "ended": ended, "warnings": list(sessions.warnings),
                   "reorder": {"reordered": loop.reorder.reordered, "late": loop.reorder.late},
                   "bad_records": callback.bad, "host_facts": host_facts.stats()}  # fmt: skip
    if facts is not None:
        doc["enrich"] = {"inputs": {detector.source: {"source": "this host", **facts.stats()}}}
    doc["live"]["win32k"] = probe.state()
    if recorder is not None:
        _say(f"recorded {recorder.events} events to {record}")
    print_summary(doc, json_summary)
    # Ctrl-C is how an unbounded trace ends: not an interruption of work, so not exit 130.
    return exitcodes.worst(
        EXIT_BLIND if watchdog.blind else exitcodes.OK,
        exitcodes.UNDELIVERED if any(undelivered(s) for s in summary.sinks.values()) else exitcodes.OK,
    )


def _wait(
    duration: float | None,
    stop_file: Path | None,
    watchdog: Any,
    records: Any,
    callback: RecordCallback,
    volumes: Any,
    loop: Any,
    beat: Callable[[], None] | None = None,
    stop_event: threading.Event | None = None,
) -> str:
    """The main thread while tracing: watchdog every POLL_SECONDS, heartbeats when due (also while
    the host is quiet); returns why the trace ends."""
    start = time.monotonic()
    deadline = start + duration if duration else None
    next_poll = start + POLL_SECONDS
    while True:
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            return "duration"
        if stop_file is not None and stop_file.exists():
            return "stop file"
        if stop_event is not None and stop_event.is_set():
            return "service stop"
        if watchdog.blind:
            return "every session lost"
        if now >= next_poll:
            next_poll = now + POLL_SECONDS
            watchdog.poll()
            if loop.probe is not None:
                loop.probe.poll()
            watchdog.queue_drops(records.dropped)
            watchdog.lost_records(callback.lost)
            for ev in volumes.changes():
                loop.on_event(ev)
            if beat is not None:
                beat()
        wake = min(next_poll, deadline if deadline is not None else next_poll, now + TICK_SECONDS)
        time.sleep(max(0.0, wake - time.monotonic()))


def live_snapshot(loop: Any, records: Any, watchdog: Any, sinks: Any) -> PipelineSnapshot:
    """The live pipeline's counters for a heartbeat (read from the main thread: plain ints)."""
    from etwsensor.pipeline import sink_states

    by_provider: dict[str, int] = {}
    for entry in list(loop.decoder.stats.by_event.values()):
        by_provider[entry.provider] = by_provider.get(entry.provider, 0) + entry.count
    lost: dict[str, int] = {}
    for session in watchdog.state()["sessions"].values():
        for key, n in session["losses"].items():
            lost[key] = lost.get(key, 0) + n
    ruleset = loop.detector.ruleset
    loss = {
        "events_lost": lost.get("EventsLost", 0),
        "realtime_buffers_lost": lost.get("RealTimeBuffersLost", 0),
        "queue_dropped": records.dropped,
    }
    return PipelineSnapshot(
        events=loop.summary.events, rows=loop.normalizer.sink.report_id,
        alerts=sum(loop.detector.alerts.values()), events_by_provider=by_provider, loss=loss,
        queue_depth=len(records), rules_version=ruleset_version(ruleset.rules),
        rules_count=len(ruleset.rules), rule_errors=sum(ruleset.errors.values()),
        sinks=sink_states([sinks]) if sinks is not None else {},
        stateful=ruleset.state_stats(), shed=dict(loop.budget.shed) if loop.budget is not None else {},
    )  # fmt: skip


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
    win32k = doc["live"].get("win32k", {})
    if win32k.get("status", "not planned") != "not planned":
        why = f" ({win32k['reason']})" if win32k.get("reason") else ""
        _say(f"win32k API audit events: {win32k['status']}, {win32k['events']:,} received{why}")
    _say(f"decode errors {doc['decode_errors']:,}, undecoded {doc['undecoded']:,}")
    shed = doc.get("shed") or {}
    if shed:
        kinds = ", ".join(f"{k} {n:,}" for k, n in shed["shed"].items()) or "none"
        _say(f"CPU ceiling {shed['max_cpu_percent']:g} % of one core: {shed['shed_total']:,} events shed "
             f"({kinds}); shedding at the end: {', '.join(shed['shedding']) or 'nothing'}")  # fmt: skip
    for name, state in doc["sinks"].items():
        _say(f"sink {name}: {json.dumps(state)}")
    for d in doc["damage"]:
        _say(f"damaged: {d}")
