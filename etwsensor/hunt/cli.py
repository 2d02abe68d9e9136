"""``etwsensor hunt``, ``etwsensor export`` and ``etwsensor schema``: hunting over what was recorded.

``hunt QUERY|FILE.kql INPUT...`` loads the rows of the inputs (``.etl``, recordings, row files, Parquet
datasets written by ``export``) into an embedded DuckDB database and runs the KQL query on them. stdout
carries only the result; load counts and errors go to stderr. Exit 0; 1 when the query cannot run
(``FILE:LINE:COL: message``); 2 on usage errors or unreadable inputs; 3 when an input was damaged
(what could be read was still loaded and queried).
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path

import typer

from etwsensor.exitcodes import DAMAGED_INPUT as EXIT_DAMAGED
from etwsensor.exitcodes import INTERRUPTED
from etwsensor.exitcodes import RULE_ERRORS as EXIT_QUERY  # the query cannot run: a failed check
from etwsensor.exitcodes import USAGE as EXIT_USAGE


def _say(message: str) -> None:
    typer.echo(message, err=True)


def _time(option: str, value: str | None) -> datetime | None:
    if value is None:
        return None
    from etwsensor.sources.recording import parse_time

    try:
        return parse_time(value)
    except ValueError as exc:
        _say(f"error: {option} {value!r} is not an ISO-8601 time")
        raise typer.Exit(EXIT_USAGE) from exc


def _query_text(query: str) -> tuple[str, str]:
    """(text, name used in error positions): a .kql file's contents, stdin for '-', else the text itself."""
    if query == "-":
        return sys.stdin.read(), "<stdin>"
    path = Path(query)
    if query.lower().endswith(".kql") or ("\n" not in query and path.is_file()):
        try:
            return path.read_text(encoding="utf-8"), query
        except (OSError, UnicodeDecodeError) as exc:
            _say(f"error: {query}: cannot read the query: {exc}")
            raise typer.Exit(EXIT_USAGE) from exc
    return query, "<query>"


def _split_inputs(inputs: list[Path]) -> tuple[list[Path], list[Path]]:
    """(files to load, Parquet dataset directories); exits 2 naming an input that is neither."""
    from etwsensor.hunt.dataset import is_dataset

    files: list[Path] = []
    datasets: list[Path] = []
    for p in inputs:
        if p.is_dir():
            if not is_dataset(p):
                _say(f"error: {p}: a directory, but not an export dataset (no table=… folders)")
                raise typer.Exit(EXIT_USAGE)
            datasets.append(p)
        elif p.is_file():
            files.append(p)
        else:
            _say(f"error: {p}: no such file or directory")
            raise typer.Exit(EXIT_USAGE)
    return files, datasets


def hunt_command(
    query: str = typer.Argument(..., help="KQL text, a .kql file, or - for stdin."),
    inputs: list[Path] = typer.Argument(
        None, help=".etl files, recordings, row files (.ndjson), export dataset directories."
    ),
    db: Path | None = typer.Option(
        None,
        "--db",
        help="Keep the rows in this DuckDB file and add to it (an input already in it is skipped).",
    ),
    fmt: str | None = typer.Option(
        None,
        "--format",
        "-f",
        help="table | ndjson | csv | parquet (default: table on a terminal, else ndjson).",
    ),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Write the result here (parquet needs it)."
    ),
    now: str | None = typer.Option(
        None, "--now", help="What now()/ago() read (default: the newest row time)."
    ),
    since: str | None = typer.Option(
        None, "--since", help="Only rows from this time on (prunes date partitions)."
    ),
    until: str | None = typer.Option(
        None, "--until", help="Only rows up to this time (prunes date partitions)."
    ),
    device: list[str] = typer.Option(
        [], "--device", help="Only rows of this DeviceName (repeatable; prunes)."
    ),
    device_map: str | None = typer.Option(None, "--device-map", help="As for replay."),
    limit: int = typer.Option(200, "--limit", min=1, help="Rows shown in the terminal table."),
    threads: int | None = typer.Option(None, "--threads", min=1, help="DuckDB threads (default: all cores)."),
    show_sql: bool = typer.Option(
        False,
        "--sql",
        help="Print the DuckDB SQL the query translates to and run nothing (no inputs needed).",
    ),
) -> None:
    """Run an Advanced Hunting query (KQL) over recorded rows in an embedded DuckDB database."""
    from etwsensor.hunt import output as out
    from etwsensor.hunt.dataset import Partitions, attach_datasets
    from etwsensor.hunt.query import HuntQueryError, run, translate, translate_error
    from etwsensor.hunt.store import LoadReport, connect, load_inputs, newest_time

    text, where = _query_text(query)
    if show_sql:
        try:
            sql, _params = translate(connect(), text, _time("--now", now))
        except HuntQueryError as exc:
            _report_query_error(where, exc)
            raise typer.Exit(EXIT_QUERY) from exc
        typer.echo(sql)
        return
    chosen = fmt or ("table" if output is None and sys.stdout.isatty() else "ndjson")
    if chosen not in out.FORMATS:
        _say(f"error: --format {chosen!r} is not one of {', '.join(out.FORMATS)}")
        raise typer.Exit(EXIT_USAGE)
    if chosen == "parquet" and output is None:
        _say("error: --format parquet needs --output FILE.parquet")
        raise typer.Exit(EXIT_USAGE)
    if not inputs and db is None:
        _say("error: nothing to hunt over: give inputs, or --db with a database that holds rows")
        raise typer.Exit(EXIT_USAGE)
    files, datasets = _split_inputs(list(inputs or []))
    pinned = _time("--now", now)
    parts = Partitions(_time("--since", since), _time("--until", until), frozenset(d.lower() for d in device))

    import duckdb

    try:
        con = connect(db)
    except duckdb.Error as exc:
        _say(f"error: --db {db}: {str(exc).splitlines()[0]}")
        raise typer.Exit(EXIT_USAGE) from exc
    if threads is not None:
        con.execute(f"SET threads={threads}")
    report = LoadReport()
    try:
        load_inputs(con, files, device_map, report=report)
    except KeyboardInterrupt:  # Ctrl-C: what the whole inputs loaded, then exit 130 (no query runs)
        so_far = ", ".join(f"{t} {n:,}" for t, n in sorted(report.rows.items())) or "none"
        in_db = f"; they stay in {db}, the interrupted input was rolled back" if db is not None else ""
        _say(f"interrupted (Ctrl-C) while loading: {len(report.loaded)} whole input(s) loaded, "
             f"rows {so_far}{in_db}; no query was run")  # fmt: skip
        raise typer.Exit(INTERRUPTED) from None
    for skipped in report.skipped:
        _say(f"{skipped}: already in {db}, not loaded again")
    loaded = ", ".join(f"{t} {n:,}" for t, n in sorted(report.rows.items())) or "none"
    _say(f"loaded {len(files) - len(report.skipped)} input(s): rows {loaded}")
    if datasets:
        kept = attach_datasets(con, datasets, parts)
        _say(f"datasets: {sum(kept.values())} Parquet file(s) after partition pruning")
    elif parts.since or parts.until or parts.devices:
        attach_datasets(con, [], parts)
    for d in report.damage:
        _say(f"damaged: {d}")

    clock = pinned or newest_time(con)
    try:
        rel = run(con, text, clock)
        if chosen == "table":
            n = out.print_table(rel, limit)
        elif chosen == "parquet":
            assert output is not None
            n = out.write_parquet(con, rel, output)
        elif output is not None:
            with output.open("w", encoding="utf-8", newline="") as fh:
                n = out.write_ndjson(rel, fh) if chosen == "ndjson" else out.write_csv(rel, fh)
        else:
            n = out.write_ndjson(rel, sys.stdout) if chosen == "ndjson" else out.write_csv(rel, sys.stdout)
    except HuntQueryError as exc:
        _report_query_error(where, exc)
        raise typer.Exit(EXIT_QUERY) from exc
    except duckdb.Error as exc:  # raised while the result is computed
        _report_query_error(where, translate_error(text, exc))
        raise typer.Exit(EXIT_QUERY) from exc
    except BrokenPipeError:
        sys.stderr.close()
        raise typer.Exit(0) from None
    _say(f"{n:,} row(s); now() = {clock.isoformat() if clock else 'the wall clock (no rows)'}")
    if report.damage:
        raise typer.Exit(EXIT_DAMAGED)


def _report_query_error(where: str, exc: object) -> None:
    from etwsensor.hunt.query import HuntQueryError

    if isinstance(exc, HuntQueryError) and exc.line:
        _say(f"{where}:{exc.line}:{exc.column}: {exc.message}")
    else:
        _say(f"{where}: {exc}")


def export_command(
    inputs: list[Path] = typer.Argument(..., help=".etl files, recordings, row files (.ndjson)."),
    output: Path = typer.Option(
        ..., "--output", "-o", help="Dataset directory (created; new parts are added)."
    ),
    device_map: str | None = typer.Option(None, "--device-map", help="As for replay."),
    part_rows: int = typer.Option(
        1_000_000, "--part-rows", min=1, help="Rows held before a set of parts is written (bounds memory)."
    ),
    json_summary: bool = typer.Option(
        False, "--json-summary", help="The summary as one JSON object on stdout."
    ),
) -> None:
    """Write the rows of the inputs as a Hive-partitioned zstd Parquet dataset, one per Defender table."""
    from etwsensor.hunt.dataset import DatasetWriter
    from etwsensor.pipeline import ReplaySummary, input_rows
    from etwsensor.sources import SourceOpenError

    files, datasets = _split_inputs(inputs)
    if datasets:
        _say(f"error: {datasets[0]}: export reads traces and row files, not datasets")
        raise typer.Exit(EXIT_USAGE)
    if output.exists() and not output.is_dir():
        _say(f"error: {output}: exists and is not a directory")
        raise typer.Exit(EXIT_USAGE)
    output.mkdir(parents=True, exist_ok=True)
    writer = DatasetWriter(output, max_rows=part_rows)
    summary = ReplaySummary()
    from etwsensor.progress import counting

    try:
        for path in files:
            summary.inputs.append(str(path))
            try:
                writer.add_all(counting(input_rows(path, device_map, summary), "exporting", "rows"))
            except SourceOpenError as exc:
                summary.damage.append(str(exc))
    except KeyboardInterrupt:  # Ctrl-C: the rows read so far are written as whole parts, then exit 130
        summary.interrupted = True
    writer.close()
    doc = {
        "inputs": summary.inputs,
        "events": summary.events,
        "rows": writer.written,
        "damage": summary.damage,
        "output": str(output),
    }
    if summary.interrupted:
        doc["interrupted"] = True
    if json_summary:
        typer.echo(json.dumps(doc))
    rows = ", ".join(f"{t} {n:,}" for t, n in sorted(writer.written.items())) or "none"
    _say(f"exported {len(files)} input(s) to {output}: rows {rows}")
    for d in summary.damage:
        _say(f"damaged: {d}")
    if summary.interrupted:
        _say(f"interrupted (Ctrl-C): {output} holds the rows read so far, the last input only in part")
        raise typer.Exit(INTERRUPTED)
    if summary.damage:
        raise typer.Exit(EXIT_DAMAGED)


def schema_command(
    kusto: bool = typer.Option(False, "--kusto", help="Kusto (Azure Data Explorer) table creation commands."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object: table → [{name, type}]."),
    table: list[str] = typer.Option([], "--table", "-t", help="Only this table (repeatable)."),
) -> None:
    """The Defender tables etwsensor writes: columns and KQL types (also as Kusto commands)."""
    from etwsensor.tables import schemas

    known = schemas()
    by_lower = {n.lower(): n for n in known}
    names = []
    for wanted in table:
        if wanted.lower() not in by_lower:
            _say(f"error: --table {wanted!r} is not one of {', '.join(known)}")
            raise typer.Exit(EXIT_USAGE)
        names.append(by_lower[wanted.lower()])
    chosen = [known[n] for n in (names or list(known))]
    if kusto and as_json:
        _say("error: --kusto and --json are exclusive")
        raise typer.Exit(EXIT_USAGE)
    if as_json:
        doc = {t.name: [{"name": c.name, "type": c.type} for c in t.columns] for t in chosen}
        typer.echo(json.dumps(doc, indent=2))
        return
    if kusto:
        for t in chosen:
            cols = ", ".join(f"{c.name}:{c.type}" for c in t.columns)
            typer.echo(f".create-merge table {t.name} ({cols})\n")
        return
    for t in chosen:
        typer.echo(t.name)
        for c in t.columns:
            typer.echo(f"  {c.name}: {c.type}")
