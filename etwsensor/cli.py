"""The ``etwsensor`` command line. stdout carries only what a command promises; humans read stderr.

Exit codes: the table in ``etwsensor.exitcodes`` (shown by ``etwsensor --help``).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from etwsensor import __version__, exitcodes
from etwsensor.lazy_commands import LazyGroup
from etwsensor.logging import configure as configure_logging

if TYPE_CHECKING:
    from rich.console import Console

    from etwsensor.config import Settings
    from etwsensor.decode.schema import ProviderDef
    from etwsensor.rules import RuleSet
    from etwsensor.rules.reload import RuleReloader

EXIT_DAMAGED = exitcodes.DAMAGED_INPUT

_TRUSTED_ROOTS = "PEM file of root certificates signatures may also chain to (with --files-from)."
app = typer.Typer(
    name="etwsensor",
    help="ETW → Defender for Endpoint tables → KQL detections → JSON alerts.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    epilog=exitcodes.help_text(),
    context_settings={"help_option_names": ["-h", "--help"]},
)


@cache
def _out() -> Console:
    """The command's promised output (tables); rich is imported only by the commands that print them.
    Piped, it is as wide as the rows need (rich would cut every cell at 80 columns with "…")."""
    from rich.console import Console

    if sys.stdout.isatty():
        return Console(soft_wrap=True, highlight=False)
    return Console(soft_wrap=True, highlight=False, width=100_000)


def say(message: str) -> None:
    """One line for the human on stderr: errors, damage, summaries."""
    typer.echo(message, err=True)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"etwsensor {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logs on stderr."),
) -> None:
    """Replay recorded ETW traces or trace live, normalize to Defender tables, detect with KQL."""
    configure_logging(verbose)


# --- providers ---------------------------------------------------------------------------------------------

providers_app = typer.Typer(
    help="The ETW providers etwsensor decodes (providers/*.yaml).", no_args_is_help=False
)
app.add_typer(providers_app, name="providers")


class Commands(LazyGroup):
    """The subcommands whose modules are imported only when they run (or their help is asked for)."""

    lazy = {  # noqa: RUF012 - read-only table
        "rules": ("etwsensor.rules.cli:rules_app", "The rule engine: list, check, explain, test, coverage."),
        "normalize": ("etwsensor.normalize.cli:normalize_command", "A trace's rows of the Defender tables."),
        "trace": ("etwsensor.sources.live.cli:trace_command", "Trace this Windows host live, or --plan."),
        "service": ("etwsensor.service.cli:service_app", "Run etwsensor as a Windows service."),
        "hunt": ("etwsensor.hunt.cli:hunt_command", "Any KQL query over recorded rows (DuckDB)."),
        "export": ("etwsensor.hunt.cli:export_command", "Rows as a Hive-partitioned Parquet dataset."),
        "schema": ("etwsensor.hunt.cli:schema_command", "The Defender tables' schema (text, JSON, Kusto)."),
        "sinks": ("etwsensor.sinks.cli:sinks_app", "The alert sinks: re-send dead letters."),
    }


app.info.cls = Commands


def _providers_or_exit() -> tuple[ProviderDef, ...]:
    from etwsensor.decode.schema import ProviderFileError, load_providers

    try:
        return load_providers()
    except ProviderFileError as exc:
        say(f"error: {exc}")
        raise typer.Exit(2) from exc


@providers_app.callback(invoke_without_command=True)
def providers_list(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="One JSON object on stdout."),
) -> None:
    """List every provider: name, GUID, kind (manifest/classic) and its events."""
    if ctx.invoked_subcommand is not None:
        return
    provs = _providers_or_exit()
    if as_json:
        doc = [
            {
                "name": p.name,
                "guid": p.guid,
                "kind": p.kind,
                "events": [
                    {"key": e.key, "name": e.name, "versions": [v.version for v in e.versions]}
                    for e in p.events
                ],
            }
            for p in provs
        ]
        typer.echo(json.dumps({"providers": doc}, indent=2))
        return
    width = max(len(p.name) for p in provs)
    for p in provs:
        key = "id" if p.kind == "manifest" else "opcode"
        typer.echo(f"{p.name:<{width}}  {{{p.guid}}}  {p.kind:<8}  {len(p.events)} events by {key}")
        typer.echo("    " + ", ".join(f"{e.key} {e.name}" for e in p.events))


@providers_app.command("show")
def providers_show(
    name: str = typer.Argument(..., help="Provider name or GUID."),
    as_json: bool = typer.Option(False, "--json", help="The definition as JSON on stdout."),
) -> None:
    """Print one provider's events, versions and fields (type, width, encoding)."""
    from etwsensor.decode.schema import find_provider

    _providers_or_exit()
    p = find_provider(name)
    if p is None:
        say(f"error: no provider {name!r}; `etwsensor providers` lists them")
        raise typer.Exit(2)
    if as_json:
        typer.echo(p.model_dump_json(indent=2))
        return
    _out().print(f"{p.name} {{{p.guid}}} ({p.kind})")
    masks = p.keywords or p.enable_flags
    if masks:
        label = "keywords" if p.keywords else "enable flags"
        _out().print(f"{label}: " + ", ".join(f"{k}=0x{v:x}" for k, v in masks.items()))
    key = "id" if p.kind == "manifest" else "opcode"
    for e in p.events:
        kw = f"  [{' '.join(e.keywords)}]" if e.keywords else ""
        _out().print(f"\n{key} {e.key} {e.name}{kw}")
        for v in e.versions:
            fields = ", ".join(f"{f.name}:{f.type}" + (f"[{f.count}]" if f.count else "") for f in v.fields)
            _out().print(f"  v{v.version}: {fields or '(no fields)'}")


# --- inspect / convert ---------------------------------------------------------------------------------


@app.command("inspect")
def inspect(
    file: Path = typer.Argument(..., help=".etl file or recording (.jsonl, .jsonl.zst)."),
    as_json: bool = typer.Option(False, "--json", help="Exactly one JSON object on stdout."),
) -> None:
    """Read a trace and count its events per provider, event and version."""
    from etwsensor.sources import SourceOpenError, open_source

    try:
        src = open_source(file)
    except SourceOpenError as exc:
        say(f"error: {exc}")
        raise typer.Exit(2) from exc
    from etwsensor.progress import counting

    interrupted = False
    try:
        for _ in counting(src.events(), "reading"):
            pass
    except KeyboardInterrupt:  # Ctrl-C: the counts so far, then exit 130
        interrupted = True
    doc = src.stats.as_json()
    if interrupted:
        doc["interrupted"] = True
    damage = src.damage
    if as_json:
        typer.echo(json.dumps(doc))
    else:
        from rich.table import Table

        table = Table("provider", "event", "version", "count", "decode errors", "undecoded", box=None)
        for row in doc["by_event"]:
            key = f"id {row['id']}" if row["id"] is not None else f"opcode {row['opcode']}"
            table.add_row(
                row["provider"],
                f"{key} {row['name']}".strip(),
                str(row["version"]),
                str(row["count"]),
                str(row["decode_errors"]),
                str(row["undecoded"]),
            )
        _out().print(table)
        _out().print(
            f"events {doc['events']}  decode errors {doc['decode_errors']}  "
            f"undecoded {doc['undecoded']}  other {doc['other']}"
        )
    for d in damage:
        say(f"damaged: {d}")
    if interrupted:
        say("interrupted (Ctrl-C): the counts above are the events read so far")
        raise typer.Exit(exitcodes.INTERRUPTED)
    if damage:
        raise typer.Exit(EXIT_DAMAGED)


@app.command("convert")
def convert(
    file: Path = typer.Argument(..., help=".etl file or recording to read."),
    output: Path = typer.Option(..., "--output", "-o", help="Recording to write: .jsonl or .jsonl.zst."),
) -> None:
    """Convert an .etl file or a recording into a recording (compressed when OUT ends in .zst)."""
    from etwsensor.sources import SourceOpenError, open_source
    from etwsensor.sources.recording import write_recording

    if not output.name.endswith((".jsonl", ".jsonl.zst")):
        say(f"error: {output}: the output must end in .jsonl or .jsonl.zst")
        raise typer.Exit(2)
    try:
        src = open_source(file)
    except SourceOpenError as exc:
        say(f"error: {exc}")
        raise typer.Exit(2) from exc
    from etwsensor.progress import counting

    try:
        n = write_recording(output, src.header, counting(src.events(), "converting"))
    except KeyboardInterrupt:  # the recording is written under a temporary name: nothing is left
        say(f"interrupted (Ctrl-C) after {src.stats.totals()['events']:,} events read: {output} not written")
        raise typer.Exit(exitcodes.INTERRUPTED) from None
    totals = src.stats.totals()
    say(
        f"wrote {n} events to {output} (read {totals['events']}; other providers skipped: {totals['other']}; "
        f"decode errors kept raw: {totals['decode_errors']}; undecoded kept raw: {totals['undecoded']})"
    )
    for d in src.damage:
        say(f"damaged: {d}")
    if src.damage:
        raise typer.Exit(EXIT_DAMAGED)


# --- replay / baseline / config ----------------------------------------------------------------------------


def _settings_or_exit(config: Path | None, **overrides: Any) -> Settings:
    from etwsensor.config import ConfigError, load_settings

    try:
        return load_settings(config, **overrides)
    except ConfigError as exc:
        say(f"error: config: {exc}")
        raise typer.Exit(2) from exc


SKIP_BAD_RULES_HELP = exitcodes.SKIP_BAD_RULES_HELP


def _load_rules(paths: list[Path], builtin: bool, skip_bad_rules: bool = False) -> tuple[RuleSet, int]:
    """The rule set, and the exit code its loading calls for: ``RULE_ERRORS`` when a rule the user
    asked for failed to load (reported now; the others run) unless ``skip_bad_rules``. A path that
    does not exist is a usage error: exit now."""
    from etwsensor.rules import RuleSet

    missing = [p for p in paths if not Path(p).exists()]
    for p in missing:
        say(f"error: --rules {p}: no such file or folder")
    if missing:
        raise typer.Exit(exitcodes.USAGE)
    ruleset, failures = RuleSet.load(paths, builtin=builtin)
    others = [f for f in failures if not f.applicable]  # Sigma rules for telemetry etwsensor lacks
    failures = [f for f in failures if f.applicable]
    for f in failures:  # a broken rule is reported and skipped; the others run
        say(f"rule skipped: {f}")
    if others:
        say(f"{len(others)} Sigma rule(s) for log sources etwsensor does not produce were not loaded "
            "(`etwsensor rules check` lists them)")  # fmt: skip
    if not ruleset.rules:
        say("error: no rules to run (every rule failed to load, or --no-builtin without --rules)")
        raise typer.Exit(exitcodes.USAGE)
    if failures and not skip_bad_rules:
        say(f"{len(failures)} rule(s) failed to load: the run exits {exitcodes.RULE_ERRORS} "
            "(--skip-bad-rules to accept)")  # fmt: skip
        return ruleset, exitcodes.RULE_ERRORS
    return ruleset, exitcodes.OK


def _check_allowlist(settings: Settings, ruleset: RuleSet) -> None:
    """An allowlist entry naming a column no table or rule has is a configuration error."""
    from etwsensor.alerts.allowlist import unknown_columns

    problems = unknown_columns(settings.allowlist, (c for r in ruleset.rules for c in r.columns))
    for problem in problems:
        say(f"error: config: {problem}")
    if problems:
        raise typer.Exit(exitcodes.USAGE)


def _parse_now(now: str | None) -> datetime | None:
    if now is None:
        return None
    from etwsensor.sources.recording import parse_time

    try:
        return parse_time(now)
    except ValueError as exc:
        say(f"error: --now {now!r} is not an ISO-8601 time")
        raise typer.Exit(2) from exc


def _check_inputs(files: list[Path]) -> None:
    for f in files:
        if not f.is_file():
            say(f"error: {f}: no such file")
            raise typer.Exit(2)


@app.command("replay")
def replay_command(
    files: list[Path] = typer.Argument(
        ..., help=".etl files, recordings (.jsonl, .jsonl.zst), row files (.ndjson)."
    ),
    rules: list[Path] = typer.Option([], "--rules", help="Rule files or folders (repeatable)."),
    no_builtin: bool = typer.Option(False, "--no-builtin", help="Do not load the built-in rule pack."),
    sink: list[str] = typer.Option([], "--sink", help="Sink URL (repeatable); default: stdout."),
    alert_format: str | None = typer.Option(
        None, "--format", help="Alert format: etwsensor, ecs or ocsf (per sink: URL#format=ecs)."
    ),
    heartbeat_seconds: float | None = typer.Option(
        None, "--heartbeat", min=0, help="Seconds between heartbeat records on the sinks (default: none)."
    ),
    config: Path | None = typer.Option(None, "--config", help="TOML configuration file."),
    device_map: str | None = typer.Option(
        None, "--device-map", help='JSON file or "C:=\\Device\\HarddiskVolume3;…".'
    ),
    now: str | None = typer.Option(None, "--now", help="Pin the stream clock for now()/ago() (ISO-8601)."),
    json_summary: bool = typer.Option(
        False, "--json-summary", help="The closing summary as one JSON object on stderr."
    ),
    skip_bad_rules: bool = typer.Option(False, "--skip-bad-rules", help=SKIP_BAD_RULES_HELP),
    files_from: str | None = typer.Option(
        None, "--files-from", help='Collected files for hashes/version/signatures: DIR or "C:=DIR;D:=DIR2".'
    ),
    device_name: str | None = typer.Option(
        None, "--device-name", help="DeviceName of the rows (wins over the input's); DeviceId derived from it"
    ),
    trusted_roots: Path | None = typer.Option(None, "--trusted-roots", help=_TRUSTED_ROOTS),
    reload: bool = typer.Option(
        False, "--reload", help="Watch rule folders and the config file (and SIGHUP); reload between rows."
    ),
    rate: float | None = typer.Option(
        None, "--rate", min=1, help="At most N events/s (a live host's pace); the summary's timing: CPU %."
    ),
    max_cpu: float | None = typer.Option(
        None, "--max-cpu", min=0.1, help="CPU ceiling, % of one core: above it low-value events are shed."
    ),
) -> None:
    """Replay traces through the normalizer and the rules; alerts go to the sinks (stdout by default)."""
    from etwsensor.alerts.allowlist import Allowlist
    from etwsensor.pipeline import Detector, replay, suppressor_from
    from etwsensor.sinks import SinkConfigError, open_sinks, undelivered

    _check_inputs(files)
    _check_files_from(files_from)
    settings = _settings_or_exit(config)
    trusted_roots = trusted_roots or settings.enrich.trusted_roots
    _check_trusted_roots(trusted_roots)
    pinned = _parse_now(now)
    ruleset, rules_code = _load_rules(
        [*settings.rules.paths, *rules], settings.rules.builtin and not no_builtin, skip_bad_rules
    )
    _check_allowlist(settings, ruleset)
    sup = settings.suppression
    suppressor = suppressor_from(
        sup.window_seconds,
        sup.key_columns,
        {k: (v.window_seconds, v.key_columns) for k, v in sup.rules.items()},
    )
    detector = Detector(ruleset, str(files[0]), Allowlist(settings.allowlist), suppressor)
    try:
        fmt = alert_format or settings.output.format
        sinks = open_sinks(sink or settings.output.sinks, settings.sink, None, fmt)
    except SinkConfigError as exc:
        say(f"error: {exc}")
        raise typer.Exit(2) from exc
    beat_every = heartbeat_seconds if heartbeat_seconds is not None else settings.output.heartbeat_seconds
    heartbeat = None
    if beat_every:
        from etwsensor.heartbeat import Heartbeat

        heartbeat = Heartbeat(sinks.send, beat_every, ", ".join(map(str, files)))
    reloader = _reloader(config, rules, not no_builtin, skip_bad_rules) if reload else None
    from etwsensor import budget as cpu

    ceiling = max_cpu if max_cpu is not None else settings.performance.max_cpu_percent
    clocks = cpu.SYSTEM_CLOCKS
    budget = cpu.budget_for(ceiling, ruleset, sinks.send, "replay", clocks=clocks) if ceiling else None
    try:
        with _progress() as progress:
            summary = replay(
                files,
                detector,
                [sinks],
                device_map or settings.device_map,
                pinned,
                progress,
                heartbeat,
                files_from=files_from,
                reloader=reloader,
                rate=rate,
                device_name=device_name,
                budget=budget,
                clocks=clocks,
                trusted_roots=trusted_roots,
            )
    finally:
        if reloader is not None:
            reloader.stop()
        sinks.close()  # delivers what it can; the rest stays spooled for the next run
    summary.sinks = {s.name: s.state() for s in sinks.sinks}
    _print_summary(summary.as_json(), json_summary, {r.id: r.name for r in ruleset.rules})
    code = exitcodes.worst(
        rules_code,
        exitcodes.DAMAGED_INPUT if summary.damage else exitcodes.OK,
        exitcodes.UNDELIVERED if any(undelivered(s) for s in summary.sinks.values()) else exitcodes.OK,
        exitcodes.INTERRUPTED if summary.interrupted else exitcodes.OK,
    )
    if code:
        raise typer.Exit(code)


def _check_files_from(spec: str | None) -> None:
    if spec is None:
        return
    from etwsensor.enrich import FilesFromError, parse_files_from

    try:
        parse_files_from(spec)
    except FilesFromError as exc:
        say(f"error: {exc}")
        raise typer.Exit(2) from exc


def _check_trusted_roots(path: Path | None) -> None:
    if path is None:
        return
    from etwsensor.enrich.trust import TrustError, read_trusted_roots

    try:
        read_trusted_roots(path)
    except TrustError as exc:
        say(f"error: {exc}")
        raise typer.Exit(2) from exc


def _reloader(config: Path | None, rules: list[Path], builtin: bool, skip_bad_rules: bool) -> RuleReloader:
    """A started watcher over the rule paths and the config file; SIGHUP asks it to reload at once.
    Each reload re-reads the config file (rule paths, built-in pack, allowlist) and compiles aside."""
    import signal

    from etwsensor.alerts.allowlist import Allowlist
    from etwsensor.config import load_settings
    from etwsensor.rules import RuleSet
    from etwsensor.rules.reload import ReloadOutcome, RuleReloader

    def compile_rules() -> ReloadOutcome:
        settings = load_settings(config)
        ruleset, failures = RuleSet.load([*settings.rules.paths, *rules], settings.rules.builtin and builtin)
        return ReloadOutcome(ruleset, failures, Allowlist(settings.allowlist))

    first = load_settings(config)
    watched = [*first.rules.paths, *rules, *([config] if config is not None else [])]
    reloader = RuleReloader(watched, compile_rules, accept_partial=skip_bad_rules)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, lambda _sig, _frame: reloader.request())
    reloader.start()
    return reloader


@contextmanager
def _progress() -> Iterator[Callable[[int, int, int], None] | None]:
    """A live bar on stderr when it is a terminal (events/s, rows, alerts); nothing otherwise."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    started = time.monotonic()
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("replaying")

        def update(events: int, rows: int, alerts: int) -> None:
            rate = events / max(time.monotonic() - started, 1e-6)
            bar.update(
                task, description=f"{events:,} events ({rate:,.0f}/s)  {rows:,} rows  {alerts:,} alerts"
            )

        yield update


def _print_summary(doc: dict[str, Any], as_json: bool, rule_names: dict[str, str]) -> None:
    if as_json:
        say(json.dumps(doc))
        return
    rows = ", ".join(f"{t} {n:,}" for t, n in doc["rows"].items()) or "none"
    say(f"replayed {len(doc['inputs'])} input(s): {doc['events']:,} events; rows: {rows}")
    if doc["rows_skipped"]:
        skipped = ", ".join(f"{t} {n:,}" for t, n in doc["rows_skipped"].items())
        say(f"  of which counted but not built, as no loaded rule can match them: {skipped}")
    say(
        f"alerts: {doc['alerts']:,} (suppressed {sum(doc['suppressed_by_rule'].values()):,}, "
        f"allowlisted {sum(doc['allowlisted_by_rule'].values()):,})"
    )
    for rule_id, n in sorted(doc["alerts_by_rule"].items()):
        say(f"  {n:>6,}  {rule_names.get(rule_id, '')} ({rule_id})")
    for path, kind in doc.get("input_kinds", {}).items():
        say(f"  input {path}: {kind}")
    for provider, counts in doc.get("source_events", {}).items():
        by_id = sorted(counts.items(), key=lambda kv: (len(kv[0].split()[0]), kv[0]))
        say(f"  {provider}: " + ", ".join(f"{k} {n:,}" for k, n in by_id))
    if doc.get("unmapped_events"):
        unmapped = ", ".join(f"{k} {n:,}" for k, n in doc["unmapped_events"].items())
        say(f"  events with no table (counted, not errors): {unmapped}")
    for reason, n in doc.get("events_without_rows", {}).items():
        say(f"  no row for {n:,} event(s): {reason}")
    say(
        f"decode errors {doc['decode_errors']:,}, undecoded {doc['undecoded']:,}, "
        f"unresolved rows {dict(doc['unresolved']) or 0}, rule evaluation errors {doc['rule_errors'] or 0}"
    )
    for name, state in doc["sinks"].items():
        say(f"sink {name}: {json.dumps(state)}")
    timing = doc.get("timing") or {}
    if timing.get("rate_limit"):
        say(f"paced at {timing['rate_limit']:,.0f} events/s: {timing['cpu_seconds']} s CPU in "
            f"{timing['wall_seconds']} s, {timing['cpu_percent']} % of one core")  # fmt: skip
    shed = doc.get("shed") or {}
    if shed:
        kinds = ", ".join(f"{k} {n:,}" for k, n in shed["shed"].items()) or "none"
        say(f"CPU ceiling {shed['max_cpu_percent']:g} % of one core: {shed['shed_total']:,} events shed "
            f"({kinds}); shedding now: {', '.join(shed['shedding']) or 'nothing'}")  # fmt: skip
    for line in _enrich_lines(doc.get("enrich") or {}):
        say(line)
    for d in doc["damage"]:
        say(f"damaged: {d}")
    if doc.get("interrupted"):
        say("interrupted (Ctrl-C): the counts above are the run so far")


def _enrich_lines(enrich: dict[str, Any]) -> list[str]:
    """Image facts per input: where from and how many rows they filled, or why the columns stay empty."""
    lines: list[str] = []
    for path, doc in (enrich.get("inputs") or {}).items():
        for device, drive in (doc.get("inferred_device_map") or {}).items():
            lines.append(f"drive letter inferred for {path}: {device} = {drive} (the system volume: the "
                         "trace maps no volume; --device-map overrides)")  # fmt: skip
        if doc.get("source") is None:
            lines.append(f"image facts for {path}: none; {doc['why']}. Empty: SHA1, SHA256, MD5, FileSize, "
                         "*VersionInfo*, InitiatingProcess hashes, version and signature")  # fmt: skip
            continue
        errors = ", ".join(f"{k} {v}" for k, v in sorted(doc["errors"].items())) or "none"
        lines.append(f"image facts for {path} from {doc['source']}: {doc['facts']:,} files, "
                     f"{doc['rows_filled']:,} rows filled, {doc['rows_without_facts']:,} without; "
                     f"files not usable: {errors}")  # fmt: skip
    return lines


@app.command("baseline")
def baseline_command(
    files: list[Path] = typer.Argument(..., help="Clean recordings or .etl files of normal activity."),
    output: Path = typer.Option(
        ..., "--output", "-o", help="Allowlist TOML to write, for a human to review."
    ),
    rules: list[Path] = typer.Option([], "--rules", help="Rule files or folders (repeatable)."),
    no_builtin: bool = typer.Option(False, "--no-builtin", help="Do not load the built-in rule pack."),
    config: Path | None = typer.Option(None, "--config", help="TOML configuration file."),
    device_map: str | None = typer.Option(None, "--device-map", help="As for replay."),
    now: str | None = typer.Option(None, "--now", help="Pin the stream clock (ISO-8601)."),
    skip_bad_rules: bool = typer.Option(False, "--skip-bad-rules", help=SKIP_BAD_RULES_HELP),
) -> None:
    """Replay clean traces and write the allowlist entries that would silence every alert they raise."""
    from etwsensor.alerts.baseline import allowlist_toml, collect_entries
    from etwsensor.pipeline import Detector, replay, suppressor_from

    _check_inputs(files)
    settings = _settings_or_exit(config)
    pinned = _parse_now(now)
    ruleset, rules_code = _load_rules(
        [*settings.rules.paths, *rules], settings.rules.builtin and not no_builtin, skip_bad_rules
    )
    detector = Detector(ruleset, str(files[0]), suppressor=suppressor_from(0, [], {}))
    collector = collect_entries()
    with _progress() as progress:
        summary = replay(files, detector, [collector], device_map or settings.device_map, pinned, progress)
    entries = collector.entries()
    if summary.interrupted:  # a partial baseline would silently allow less than the user reviewed
        say(f"interrupted (Ctrl-C) after {len(summary.inputs)} input(s), {summary.events:,} events, "
            f"{summary.alerts.total():,} alerts ({len(entries)} entries): {output} not written")  # fmt: skip
    else:
        output.write_text(allowlist_toml(entries, [str(f) for f in files]), encoding="utf-8")
        say(f"wrote {len(entries)} allowlist entries for {summary.alerts.total()} alerts to {output}")
    for d in summary.damage:
        say(f"damaged: {d}")
    code = exitcodes.worst(
        rules_code,
        exitcodes.DAMAGED_INPUT if summary.damage else exitcodes.OK,
        exitcodes.INTERRUPTED if summary.interrupted else exitcodes.OK,
    )
    if code:
        raise typer.Exit(code)


config_app = typer.Typer(help="The configuration etwsensor runs with.", no_args_is_help=True)
app.add_typer(config_app, name="config")


@config_app.command("show")
def config_show(
    config: Path | None = typer.Option(None, "--config", help="TOML configuration file."),
) -> None:
    """Print the effective configuration (file + environment) as JSON, secrets masked."""
    from etwsensor.config import effective_config

    typer.echo(json.dumps(effective_config(_settings_or_exit(config)), indent=2))


def main() -> None:
    try:
        app()
    except BrokenPipeError:  # `etwsensor … | head` is normal use
        _quiet_stdout()
    except KeyboardInterrupt:
        say("interrupted")
        sys.exit(exitcodes.INTERRUPTED)
    finally:
        if getattr(sys.stdout, "closed", False) is False:
            try:
                sys.stdout.flush()
            except BrokenPipeError:  # the reader left: not an error (the exit code stands)
                _quiet_stdout()


def _quiet_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's own flush at exit cannot complain."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    main()
