"""``etwsensor rules …``: list, check, explain and test KQL detection rules.

stdout carries only the promised machine output (JSON, NDJSON, FILE:LINE:COL lines for
``check``); everything meant for a human goes to stderr.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import typer

from etwsensor import exitcodes
from etwsensor.rules.errors import RuleFailure
from etwsensor.rules.ruleset import Rule, RuleSet, load_rule_file

rules_app = typer.Typer(
    help="KQL detection rules: list, check, explain, test.", no_args_is_help=True, add_completion=False
)


def _err(message: str) -> None:
    typer.echo(message, err=True)


def _resolve(rule_ref: str, extra: list[Path] | None = None) -> Rule:
    """A rule by id (built-in pack and ``extra`` paths) or by path to a rule file."""
    path = Path(rule_ref)
    if path.is_file():
        rs, _ = RuleSet.load([], builtin=False)
        rule, failure = load_rule_file(path, rs.clock)
        if failure is not None:
            _err(str(failure))
            raise typer.Exit(exitcodes.RULE_ERRORS)
        assert rule is not None
        return rule
    rs, _failures = RuleSet.load(extra or [], builtin=True)
    found = rs.get(rule_ref)
    if found is None:
        _err(f"no rule with id {rule_ref!r} (and no such file); see `etwsensor rules list`")
        raise typer.Exit(exitcodes.USAGE)
    return found


@rules_app.command("list")
def list_rules(
    paths: list[Path] = typer.Argument(
        None, help="Extra rule files or folders (the built-in pack is always listed)."
    ),
    as_json: bool = typer.Option(False, "--json", help="One JSON array on stdout."),
) -> None:
    """List the loaded rules: id, name, severity, techniques, tables, source."""
    rs, failures = RuleSet.load(paths or [], builtin=True)
    for f in failures:
        _err(str(f))
    if as_json:
        typer.echo(json.dumps([r.summary() for r in rs.rules], ensure_ascii=False))
        return
    for r in rs.rules:
        typer.echo(
            f"{r.id}\t{r.severity}\t{','.join(r.techniques)}\t{','.join(r.tables)}\t{r.name}\t{r.source}"
        )


@rules_app.command("check")
def check(
    paths: list[Path] = typer.Argument(..., help="Rule files (.yaml, .yml, .kql) or folders of them."),
    as_json: bool = typer.Option(
        False, "--json", help='One object on stdout: {"compiled": N, "failed": [...]}.'
    ),
) -> None:
    """Compile rules; print every failure as FILE:LINE:COL: message. Exit 1 when any fails."""
    missing = [p for p in paths if not p.exists()]
    failures: list[RuleFailure] = [RuleFailure(str(p), 1, 1, "no such file or folder") for p in missing]
    rs, load_failures = RuleSet.load([p for p in paths if p.exists()], builtin=False)
    failures.extend(load_failures)
    if as_json:
        typer.echo(json.dumps({"compiled": len(rs.rules), "failed": [f.as_json() for f in failures]}))
    else:
        for f in failures:
            typer.echo(str(f))
        _err(f"{len(rs.rules)} compiled, {len(failures)} failed")
    if missing:
        raise typer.Exit(exitcodes.USAGE)
    if failures:
        raise typer.Exit(exitcodes.RULE_ERRORS)


@rules_app.command("explain")
def explain(
    rule_ref: str = typer.Argument(..., metavar="RULE", help="Rule id or path to a rule file."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object on stdout."),
) -> None:
    """Show what a rule reads: tables, columns, output columns and prefilters."""
    rule = _resolve(rule_ref)
    assert rule.plan is not None
    branches: list[dict[str, Any]] = [
        {
            "table": b.table,
            # Every group must be satisfied; within a group, one needle.
            "prefilter": [
                [
                    {"column": c, "literal": n, "match": "equals" if exact else "contains"}
                    for c, n, exact in sorted(g)
                ]
                for g in b.needle_groups
            ],
            "filters": len(b.filters),  # where conjuncts tested on the input row
            "stages": len(b.stages),  # everything after them (extend, project, union alignment...)
        }
        for b in rule.plan.branches
    ]
    info: dict[str, Any] = {
        "id": rule.id,
        "name": rule.name,
        "source": rule.source,
        "tables": list(rule.tables),
        "columns_read": {t: sorted(c) for t, c in rule.plan.columns_read.items()},
        "output_columns": list(rule.plan.columns),
        "branches": branches,
        "format": rule.format,
        "query": rule.query,
    }
    if as_json:
        typer.echo(json.dumps(info, ensure_ascii=False))
        return
    typer.echo(f"{rule.id}  {rule.name}  ({rule.source})")
    for t in rule.tables:
        typer.echo(f"  reads {t}: {', '.join(sorted(rule.plan.columns_read.get(t, ())))}")
    typer.echo(f"  output: {', '.join(rule.plan.columns)}")
    for b in branches:
        pre = b["prefilter"]
        shown = (
            " and ".join(
                "(" + " or ".join(f"{n['column']} {n['match']} {n['literal']!r}" for n in group) + ")"
                for group in pre
            )
            or "none (runs on every row)"
        )
        typer.echo(f"  branch {b['table']}: {b['filters']} filters, {b['stages']} stages; prefilter: {shown}")
    if rule.format == "sigma":  # the KQL etwsensor wrote for it: what runs, and what runs in Defender
        typer.echo("  KQL (converted from Sigma):")
        for line in rule.query.splitlines():
            typer.echo(f"    {line}")


def _parse_now(text: str | None) -> datetime | None:
    if text is None:
        return None
    from etwsensor.rules.scalars import parse_datetime

    parsed = parse_datetime(text)
    if parsed is None:
        _err(f"--now: not an ISO-8601 time: {text!r}")
        raise typer.Exit(exitcodes.USAGE)
    return parsed


@rules_app.command("test")
def test_rule(
    rule_ref: str = typer.Argument(..., metavar="RULE", help="Rule id or path to a rule file."),
    file: Path = typer.Argument(
        ...,
        help="Row file (.ndjson, Defender export .csv/.json), recording, .etl, .evtx or Windows event JSON.",
    ),
    now: str | None = typer.Option(
        None, "--now", help="Pin now()/ago() (ISO-8601); default: newest row time."
    ),
    device_map: str | None = typer.Option(None, "--device-map", help="NT device → drive map for .etl input."),
) -> None:
    """Run one rule over a file and print its matching projected rows as NDJSON."""
    from etwsensor.sources.rowfile import read_row_file, row_to_json

    rule = _resolve(rule_ref)
    if not file.is_file():
        _err(f"{file}: no such file")
        raise typer.Exit(exitcodes.USAGE)
    pinned = _parse_now(now)
    assert rule.plan is not None
    rs = RuleSet([rule], rule.plan.clock)
    from etwsensor.normalize import is_row_file

    rows: Iterable[tuple[str, dict[str, Any]]]
    reader = None
    if is_row_file(file):
        reader = read_row_file(file)
        rows = reader
    else:
        try:
            from etwsensor.normalize import iter_rows
        except ImportError:
            _err(
                "reading recordings and .etl files needs etwsensor.normalize.iter_rows, "
                "which is not available yet"
            )
            raise typer.Exit(exitcodes.USAGE) from None
        from etwsensor.sources import SourceOpenError, open_source

        try:  # an input that is not a trace at all is a usage error, found before any work
            open_source(file)
        except SourceOpenError as exc:
            _err(str(exc))
            raise typer.Exit(exitcodes.USAGE) from exc
        rows = iter_rows(file, device_map)
    # Replay clock: the newest event time seen so far, unless --now pins it.
    clock: datetime | None = pinned
    count = matched = 0
    interrupted = False
    out = sys.stdout
    from etwsensor.progress import counting

    try:
        for table, row in counting(rows, "testing", "rows"):
            count += 1
            if pinned is None:
                ts = row.get("Timestamp")
                if isinstance(ts, datetime) and (clock is None or ts > clock):
                    clock = ts
            for m in rs.evaluate(table, row, clock):
                out.write(json.dumps(row_to_json(m.row), ensure_ascii=False, default=str) + "\n")
                matched += 1
        for m in rs.flush():  # stateful rules: the windows still open at the end of the input
            out.write(json.dumps(row_to_json(m.row), ensure_ascii=False, default=str) + "\n")
            matched += 1
    except KeyboardInterrupt:  # Ctrl-C: the counts so far, then exit 130
        interrupted = True
    out.flush()
    bad = 0
    if reader is not None:
        for number, reason in reader.bad_lines:
            _err(f"{file}:{number}: skipped: {reason}")
        bad = reader.bad
    so_far = " (interrupted, Ctrl-C: the rows so far)" if interrupted else ""
    _err(f"{count} rows, {matched} matches, {bad} bad lines{so_far}")
    if interrupted:
        raise typer.Exit(exitcodes.INTERRUPTED)
    if bad:
        raise typer.Exit(exitcodes.DAMAGED_INPUT)  # damaged input: what could be read was still processed


@rules_app.command("coverage")
def coverage_command(
    paths: list[Path] = typer.Argument(None, help="Rule files or folders (with the built-in pack)."),
    source: str = typer.Option(
        "etw",
        "--source",
        help="The input: etw (live, or replay with the files' image facts), etl (replay without them), "
        "evtx (Sysmon logs), rows (Defender row files).",
    ),
    no_builtin: bool = typer.Option(False, "--no-builtin", help="Leave the built-in pack out."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object on stdout: rules and summary."),
) -> None:
    """Which rules can fire on an input: ok, degraded or cannot fire, with the columns it never fills."""
    from etwsensor.rules.coverage import coverage, profiles

    known = profiles()
    if source not in known:
        _err(f"--source: one of {', '.join(known)}")
        raise typer.Exit(exitcodes.USAGE)
    missing = [p for p in paths or [] if not p.exists()]
    if missing:
        _err(f"{missing[0]}: no such file or folder")
        raise typer.Exit(exitcodes.USAGE)
    rs, failures = RuleSet.load(paths or [], builtin=not no_builtin)
    report = coverage(rs.rules, failures, known[source])
    summary = report.summary()
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "summary": summary,
                    "rules": [r.as_json() for r in report.rules],
                    "not_loaded": [f.as_json() for f in report.not_loaded],
                },
                ensure_ascii=False,
            )
        )
        return
    for r in report.rules:
        why = ", ".join(r.killing_columns or r.missing_tables or r.missing_action_types or r.missing_columns)
        typer.echo(f"{r.verdict}\t{r.id}\t{r.category}\t{r.name}\t{why}")
    typer.echo(
        f"# source {source}: {summary['rules']} rules: {summary['ok']} ok, {summary['degraded']} degraded, "
        f"{summary['cannot_fire']} cannot fire; {summary['not_loaded']} not loaded"
    )
    typer.echo("# per category: ok / degraded / cannot fire")
    for category, counts in summary["per_category"].items():
        typer.echo(f"#   {category}\t{counts['ok']}\t{counts['degraded']}\t{counts['cannot_fire']}")
    typer.echo("# per missing column: rules that cannot fire / degraded because of it")
    for entry in summary["per_missing_column"]:
        typer.echo(f"#   {entry['column']}\t{entry['cannot_fire']}\t{entry['degraded']}")
    for entry in summary["per_missing_table"]:
        typer.echo(f"#   table {entry['table']} not produced\t{entry['cannot_fire']}")
    for entry in summary["per_missing_action_type"]:
        typer.echo(f"#   ActionType {entry['action_type']} not produced\t{entry['cannot_fire']}")
