"""``etwsensor normalize FILE``: the rows a recording, .etl file or row file gives, as NDJSON.

stdout carries only the rows (one JSON object each, ``"$table"`` first, then every column of the
table in Defender's order), or with ``--json-summary`` one summary object instead:
``{"events", "rows": {TABLE: {ACTIONTYPE: N}}, "unresolved": {TABLE: N}, "decode_errors",
"caches": {...}, ...}``. The human summary goes to stderr. Exit 2 on a usage error or an
unreadable input, 3 when the input was damaged (what could be read was still normalized).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import typer

from etwsensor import exitcodes
from etwsensor.normalize.models import full_row
from etwsensor.normalize.normalizer import Normalizer, TableRow
from etwsensor.normalize.paths import DeviceMapError, parse_device_map
from etwsensor.progress import counting
from etwsensor.tables import TABLE_NAMES

EXIT_USAGE = exitcodes.USAGE
EXIT_DAMAGED = exitcodes.DAMAGED_INPUT


def _say(message: str) -> None:
    typer.echo(message, err=True)


def _tables(requested: list[str] | None) -> frozenset[str]:
    if not requested:
        return frozenset(TABLE_NAMES)
    by_lower = {name.lower(): name for name in TABLE_NAMES}
    chosen = set()
    for name in requested:
        table = by_lower.get(name.lower())
        if table is None:
            _say(f"error: --table {name!r} is not one of {', '.join(TABLE_NAMES)}")
            raise typer.Exit(EXIT_USAGE)
        chosen.add(table)
    return frozenset(chosen)


def _event_rows(normalizer: Normalizer, events: Iterable[Any]) -> Iterator[TableRow]:
    process = normalizer.process
    for event in events:
        rows = process(event)
        if rows:
            yield from rows
    yield from normalizer.flush()


def _writer() -> Callable[[str, dict[str, Any]], None]:
    from etwsensor.sources.rowfile import TABLE_KEY, row_to_json

    write = sys.stdout.write
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode

    def emit(table: str, row: dict[str, Any]) -> None:
        out = {TABLE_KEY: table}
        out.update(row_to_json(full_row(table, row)))
        write(dumps(out) + "\n")

    return emit


def _human_summary(summary: dict[str, Any], damage: int) -> str:
    lines = [f"{summary['events']} events, decode errors {summary['decode_errors']}, damage {damage}"]
    for table, actions in sorted(summary["rows"].items()):
        counts = ", ".join(f"{action} {n}" for action, n in sorted(actions.items()))
        unresolved = summary["unresolved"].get(table, 0)
        lines.append(f"  {table}: {counts} (unresolved {unresolved})")
    if not summary["rows"]:
        lines.append("  no rows")
    return "\n".join(lines)


def _add_windows_counts(summary: dict[str, Any], source: Any) -> None:
    """Windows event logs: events per provider and id (those no table takes were counted, not built)."""
    from etwsensor.sources.windows_events import WindowsEventSource

    if not isinstance(source, WindowsEventSource):
        return
    summary["events"] += source.skipped
    per_provider: dict[str, dict[str, int]] = {}
    for c in source.stats.by_event.values():
        label = f"{c.id} {c.name}"
        per_provider.setdefault(c.provider, {})[label] = (
            per_provider.get(c.provider, {}).get(label, 0) + c.count
        )
    summary["source_events"] = per_provider
    summary["unmapped_events"] = {
        f"{c.provider} {c.id} {c.name}": c.count for c in source.stats.by_event.values() if not c.known
    }


def normalize_command(
    file: Path = typer.Argument(
        ...,
        help="A recording (.jsonl[.zst]), .etl, .evtx, Windows event JSON (Winlogbeat/ECS, flat Sysmon), "
        "a row file (.ndjson) or a Defender export (.csv, .json).",
    ),
    table: list[str] | None = typer.Option(
        None, "--table", "-t", help="Only rows of this table (repeatable), e.g. DeviceProcessEvents."
    ),
    device_map: str | None = typer.Option(
        None,
        "--device-map",
        help="NT device → drive, overriding the trace: 'C:=\\Device\\HarddiskVolume3;D:=…' or a JSON file.",
    ),
    json_summary: bool = typer.Option(
        False, "--json-summary", help="Print one JSON summary object on stdout instead of the rows."
    ),
    files_from: str | None = typer.Option(
        None, "--files-from", help='Collected files for hashes/version/signatures: DIR or "C:=DIR;D:=DIR2".'
    ),
    device_name: str | None = typer.Option(
        None, "--device-name", help="DeviceName of the rows (wins over the input's); DeviceId derived from it"
    ),
    trusted_roots: Path | None = typer.Option(
        None, "--trusted-roots", help="PEM file of roots signatures may also chain to (with --files-from)."
    ),
) -> None:
    """Normalize FILE into Defender table rows (NDJSON on stdout, summary on stderr)."""
    from etwsensor.enrich import Enricher, FilesFromError, offline_enricher
    from etwsensor.enrich.trust import TrustError
    from etwsensor.sources import SourceOpenError, open_source, source_kind

    tables = _tables(table)
    facts: Enricher | None = None
    if trusted_roots is not None:
        from etwsensor.enrich.trust import read_trusted_roots

        try:
            read_trusted_roots(trusted_roots)
        except TrustError as exc:
            _say(f"error: {exc}")
            raise typer.Exit(EXIT_USAGE) from exc
    if files_from is not None:
        try:
            facts = offline_enricher(files_from, trusted_roots=trusted_roots)
        except (FilesFromError, TrustError) as exc:
            _say(f"error: {exc}")
            raise typer.Exit(EXIT_USAGE) from exc
    pinned: dict[str, str] | None = None
    if device_map is not None:
        try:
            pinned = parse_device_map(device_map)
        except DeviceMapError as exc:
            _say(f"error: --device-map: {exc}")
            raise typer.Exit(EXIT_USAGE) from exc
    try:
        kind = source_kind(file)
    except SourceOpenError as exc:
        _say(f"error: {exc}")
        raise typer.Exit(EXIT_USAGE) from exc

    normalizer: Normalizer | None = None
    damage = 0
    if kind == "rows":
        from etwsensor.sources.rowfile import read_row_file

        if not file.is_file():
            _say(f"error: {file}: no such file")
            raise typer.Exit(EXIT_USAGE)
        row_file = read_row_file(file)
        rows: Iterable[TableRow] = counting(row_file, "normalizing", "rows")
    else:
        try:
            source = open_source(file, host_name=device_name)
        except SourceOpenError as exc:
            _say(f"error: {exc}")
            raise typer.Exit(EXIT_USAGE) from exc
        from etwsensor.enrich.device import named_header

        header = named_header(source.header, device_name)
        normalizer = Normalizer(header, device_map=pinned, facts=facts)
        rows = _event_rows(normalizer, counting(source.events(), "normalizing"))

    counts: dict[str, dict[str, int]] = {}
    emit = None if json_summary else _writer()
    interrupted = False
    try:
        for name, row in rows:
            if name not in tables:
                continue
            if emit is not None:
                emit(name, row)
            per_table = counts.setdefault(name, {})
            action = str(row.get("ActionType", ""))
            per_table[action] = per_table.get(action, 0) + 1
    except BrokenPipeError:  # e.g. `| head`: the reader has what it wanted
        sys.stderr.close()
        raise typer.Exit(0) from None
    except KeyboardInterrupt:  # Ctrl-C: the summary of the rows so far, then exit 130
        interrupted = True

    if normalizer is not None:
        summary = normalizer.stats()
        damage = len(source.damage)
        summary["unresolved"] = {t: n for t, n in summary["unresolved"].items() if t in tables}
        summary["input_kind"] = kind
        _add_windows_counts(summary, source)
        for d in source.damage[:20]:
            _say(f"damaged: {d}")
    else:
        damage = row_file.bad
        summary = {"events": 0, "unresolved": {}, "decode_errors": row_file.bad, "caches": {}}
        summary["input_kind"] = row_file.kind
        if row_file.dropped_columns:
            summary["dropped_columns"] = dict(row_file.dropped_columns)
        for number, reason in row_file.bad_lines[:20]:
            _say(f"{file}: line {number}: {reason}")
    summary["rows"] = counts
    summary["damage"] = damage
    if interrupted:
        summary["interrupted"] = True
    if json_summary:
        typer.echo(json.dumps(summary, ensure_ascii=False, default=str))
    _say(_human_summary(summary, damage))
    if normalizer is not None:
        for sample in normalizer.error_samples:
            _say(f"skipped malformed event: {sample}")
    if interrupted:
        _say("interrupted (Ctrl-C): the counts above are the rows so far")
        raise typer.Exit(exitcodes.INTERRUPTED)
    if damage:
        raise typer.Exit(EXIT_DAMAGED)
