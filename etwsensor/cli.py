"""The ``etwsensor`` command line. stdout carries only what a command promises; humans read stderr.

Exit codes: 0 done; 1 a check failed (e.g. a rule does not compile); 2 usage or environment error;
3 an input was damaged (what could be read was still processed).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from etwsensor import __version__
from etwsensor.decode.schema import ProviderDef, ProviderFileError, find_provider, load_providers
from etwsensor.logging import configure as configure_logging

EXIT_DAMAGED = 3

app = typer.Typer(
    name="etwsensor",
    help="ETW → Defender for Endpoint tables → KQL detections → JSON alerts.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
out = Console(soft_wrap=True, highlight=False)  # the command's promised output (tables)


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


def _providers_or_exit() -> tuple[ProviderDef, ...]:
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
    _providers_or_exit()
    p = find_provider(name)
    if p is None:
        say(f"error: no provider {name!r}; `etwsensor providers` lists them")
        raise typer.Exit(2)
    if as_json:
        typer.echo(p.model_dump_json(indent=2))
        return
    out.print(f"{p.name} {{{p.guid}}} ({p.kind})")
    masks = p.keywords or p.enable_flags
    if masks:
        label = "keywords" if p.keywords else "enable flags"
        out.print(f"{label}: " + ", ".join(f"{k}=0x{v:x}" for k, v in masks.items()))
    key = "id" if p.kind == "manifest" else "opcode"
    for e in p.events:
        kw = f"  [{' '.join(e.keywords)}]" if e.keywords else ""
        out.print(f"\n{key} {e.key} {e.name}{kw}")
        for v in e.versions:
            fields = ", ".join(f"{f.name}:{f.type}" + (f"[{f.count}]" if f.count else "") for f in v.fields)
            out.print(f"  v{v.version}: {fields or '(no fields)'}")


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
    for _ in src.events():
        pass
    doc = src.stats.as_json()
    damage = src.damage
    if as_json:
        typer.echo(json.dumps(doc))
    else:
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
        out.print(table)
        out.print(
            f"events {doc['events']}  decode errors {doc['decode_errors']}  "
            f"undecoded {doc['undecoded']}  other {doc['other']}"
        )
    for d in damage:
        say(f"damaged: {d}")
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
    n = write_recording(output, src.header, src.events())
    totals = src.stats.totals()
    say(
        f"wrote {n} events to {output} (read {totals['events']}; other providers skipped: {totals['other']}; "
        f"decode errors kept raw: {totals['decode_errors']}; undecoded kept raw: {totals['undecoded']})"
    )
    for d in src.damage:
        say(f"damaged: {d}")
    if src.damage:
        raise typer.Exit(EXIT_DAMAGED)


def main() -> None:
    try:
        app()
    except BrokenPipeError:  # `etwsensor … | head` is normal use
        sys.stderr.close()


if __name__ == "__main__":
    main()
