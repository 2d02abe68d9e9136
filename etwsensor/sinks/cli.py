"""``etwsensor sinks …``: the alert sinks' own maintenance. ``sinks resend DEAD_LETTERS --to URL`` sends the
alerts of a dead-letter file (``<spool_dir>/<sink>/dead-letters.ndjson``) again, as they were formatted the
first time, through a sink of the same kind as ``replay``'s: spooled, retried, counted. The file is read
whole before anything is sent and never changed; alerts the receiver refuses again are dead-lettered again
by the sink (a line is added to that sink's own dead-letter file).
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from etwsensor import exitcodes

sinks_app = typer.Typer(
    help="The alert sinks: re-send dead letters.", no_args_is_help=True, add_completion=False
)


def _say(message: str) -> None:
    typer.echo(message, err=True)


def read_dead_letters(path: Path) -> tuple[list[bytes], list[tuple[int, str]]]:
    """(each line's alert as the JSON bytes first sent, (line number, why) of lines that hold none)."""
    alerts: list[bytes] = []
    bad: list[tuple[int, str]] = []
    with path.open("rb") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
                bad.append((number, "not a JSON line"))
                continue
            alert = record.get("alert") if isinstance(record, dict) else None
            if not isinstance(alert, dict):
                bad.append((number, 'no "alert" object'))
                continue
            alerts.append(json.dumps(alert, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
    return alerts, bad


@sinks_app.command("resend")
def resend(
    dead_letters: Path = typer.Argument(..., help="A dead-letter file (dead-letters.ndjson beside a spool)."),
    to: str = typer.Option(..., "--to", help="Sink URL to send them to (settings from --config)."),
    config: Path | None = typer.Option(None, "--config", help="TOML configuration file (sink settings)."),
    json_summary: bool = typer.Option(
        False, "--json-summary", help="The summary as one JSON object on stdout."
    ),
) -> None:
    """Send the alerts of a dead-letter file again (e.g. once the receiver's field mapping is fixed)."""
    from etwsensor.config import ConfigError, load_settings
    from etwsensor.sinks import SinkConfigError, open_sinks, undelivered

    if not dead_letters.is_file():
        _say(f"error: {dead_letters}: no such file")
        raise typer.Exit(exitcodes.USAGE)
    try:
        settings = load_settings(config)
    except ConfigError as exc:
        _say(f"error: config: {exc}")
        raise typer.Exit(exitcodes.USAGE) from exc
    try:
        alerts, bad = read_dead_letters(dead_letters)
    except OSError as exc:
        _say(f"error: {dead_letters}: {exc.strerror or exc}")
        raise typer.Exit(exitcodes.USAGE) from exc
    try:
        sinks = open_sinks([to], settings.sink)  # no --format: the alerts are sent as first formatted
    except SinkConfigError as exc:
        _say(f"error: {exc}")
        raise typer.Exit(exitcodes.USAGE) from exc
    try:
        for raw in alerts:
            sinks.send(json.loads(raw))
    finally:
        sinks.close()
    (state,) = [s.state() for s in sinks.sinks]
    doc = {"file": str(dead_letters), "alerts": len(alerts), "bad_lines": len(bad), "sink": state}
    if json_summary:
        typer.echo(json.dumps(doc))
    for number, why in bad[:20]:
        _say(f"{dead_letters}: line {number}: {why}")
    _say(f"resent {len(alerts)} alert(s) from {dead_letters} to {state['sink']}: "
         f"delivered {state['delivered']}, dead-lettered again {state.get('dead_letters', 0)}, "
         f"still spooled {state['pending']}, lost {state.get('lost', 0)}; "
         "the file is left as it was")  # fmt: skip
    code = exitcodes.worst(
        exitcodes.DAMAGED_INPUT if bad else exitcodes.OK,
        exitcodes.UNDELIVERED if undelivered(state) else exitcodes.OK,
    )
    if code:
        raise typer.Exit(code)
