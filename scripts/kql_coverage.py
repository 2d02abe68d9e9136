"""KQL coverage: run `rules check` and `hunt` over the shared corpora and write docs/kql-coverage.md.

    python scripts/kql_coverage.py [--root ../shared/data/kql] [--out docs/kql-coverage.md]

A dev tool (it reads ../shared beside the checkout; tests do not). For each corpus: how many queries
compile as streaming rules, and the failures grouped by reason, with example files. For the hunting corpus
also: how many run with `etwsensor hunt` (duckdb-kql over DuckDB) on the demo trace's rows, counted over the
queries that read only tables etwsensor produces. The compiled-IR cache makes reruns fast. When no corpus is
found the document is left as it is.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from etwsensor.rules import RuleSet
from etwsensor.rules.errors import RuleFailure
from etwsensor.tables import schemas

DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo.jsonl.zst"
HUNT_CORPUS = "m365d-hunting-queries"
# The Advanced Hunting tables a query may name (Microsoft 365 Defender's schema reference): a query is in
# scope for `hunt` when every table it names is one etwsensor produces.
AH_TABLE = re.compile(
    r"\b(Device\w*Events|DeviceInfo|DeviceNetworkInfo|DeviceFileCertificateInfo|DeviceTvm\w+|"
    r"DeviceBaseline\w+|AlertInfo|AlertEvidence|Email(?:Events|AttachmentInfo|UrlInfo|PostDeliveryEvents)|"
    r"Identity(?:Info|LogonEvents|QueryEvents|DirectoryEvents)|CloudAppEvents|AAD\w+Beta|UrlClickEvents|"
    r"Behavior(?:Info|Entities))\b"
)

CORPORA = {
    "sigma-converted-microsoft-xdr": "SigmaHQ rules converted by pySigma-backend-kusto (DRL 1.1)",
    "m365d-hunting-queries": "Microsoft 365 Defender hunting queries (MIT)",
}


# Failures that are facts about the corpus, not gaps of the compiler: explained under the table.
KNOWN = {
    "proc_creation_win_rar_susp_greedy_compression.kql": (
        'the converter wrote the string literal `":\\*."`; `\\*` is not a KQL escape (only `\\\\`, `\\"`, '
        "`\\'`, `\\t`, `\\n` … are), so Microsoft's Kql.g4 grammar rejects the query "
        "(the Kusto docs list only those escapes; not checked against a live Kusto). "
        'The Sigma rule needs `@":\\*."` or `":\\\\*."`.'
    ),
}


def reason(message: str) -> str:
    """Group key: the kind of failure, with the name it is about when that is what differs."""
    if message.startswith("unknown column"):
        return "unknown column (not in the Defender schema of the table)"
    m = re.match(r"unknown table '([^']+)'", message)
    if m:
        return f"unknown table '{m.group(1)}' (not one of the four Device* tables)"
    if message.startswith("syntax error") and "a rule holds one query" in message:
        return "several queries in one file (syntax error where the second starts)"
    if message.startswith("syntax error"):
        return "syntax error (Kql.g4 grammar)"
    m = re.match(r"unknown or unsupported function '([^']+)'", message)
    if m:
        return f"unsupported function '{m.group(1)}'"
    return re.split(r" \(|: ", message, maxsplit=1)[0]


def check(folder: Path) -> tuple[int, list[RuleFailure], float]:
    t = time.perf_counter()
    rs, failures = RuleSet.load([folder], builtin=False)
    # Duplicate ids are a property of the corpus, not of the KQL: count those rules as compiled.
    dup = [f for f in failures if f.message.startswith("duplicate rule id")]
    real = [f for f in failures if f not in dup]
    return len(rs.rules) + len(dup), real, time.perf_counter() - t


@dataclass
class HuntOutcome:
    file: str
    status: str  # ran | failed | other tables
    reason: str = ""
    where: str = ""
    rows: int = 0
    tables: tuple[str, ...] = ()


def _hunt_reason(kind: str, message: str) -> str:
    if kind == "syntax" and re.search(r"input '(Device\w+|let)' expecting \{<EOF>, ';'\}", message):
        return "several queries in one file (syntax error where the second starts)"
    if kind == "syntax":
        return "syntax error (duckdb-kql's Kql.g4 grammar)"
    m = re.match(r"not supported by the hunt engine \(duckdb-kql\): (.+?)(?: \(|$)", message)
    if m:
        return f"not translated by duckdb-kql 1.1.2: {m.group(1)}"
    return f"{kind}: {message[:80]}"


def hunt(folder: Path) -> tuple[list[HuntOutcome], float]:
    """Every query of the corpus through `hunt` on the demo rows (the same functions the command uses)."""
    import duckdb

    from etwsensor.hunt.query import HuntQueryError, run, translate_error
    from etwsensor.hunt.store import connect, load_inputs, newest_time

    t = time.perf_counter()
    con = connect()
    load_inputs(con, [DEMO])
    now = newest_time(con)
    ours = set(schemas())
    out: list[HuntOutcome] = []
    for path in sorted(folder.glob("*.kql")):
        text = path.read_text(encoding="utf-8")
        code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("//"))
        named = tuple(sorted(set(AH_TABLE.findall(code))))
        if not set(named) <= ours:
            out.append(
                HuntOutcome(path.name, "other tables", tables=tuple(n for n in named if n not in ours))
            )
            continue
        try:
            rows = len(run(con, text, now).cursor.fetchall())
        except HuntQueryError as exc:
            where = f"{path.name}:{exc.line}:{exc.column}" if exc.line else path.name
            out.append(HuntOutcome(path.name, "failed", _hunt_reason(exc.kind, exc.message), where))
            continue
        except duckdb.Error as exc:
            err = translate_error(text, exc)
            out.append(HuntOutcome(path.name, "failed", _hunt_reason(err.kind, err.message), path.name))
            continue
        out.append(HuntOutcome(path.name, "ran", rows=rows))
    return out, time.perf_counter() - t


def render_hunt(outcomes: list[HuntOutcome]) -> list[str]:
    ran = [o for o in outcomes if o.status == "ran"]
    failed = [o for o in outcomes if o.status == "failed"]
    other = [o for o in outcomes if o.status == "other tables"]
    scope = len(ran) + len(failed)
    pct = 100.0 * len(ran) / scope if scope else 0.0
    lines = [
        "",
        f"## {HUNT_CORPUS}: `etwsensor hunt`",
        "",
        "Each query run by `etwsensor hunt` (duckdb-kql 1.1.2 over DuckDB) on the rows of the demo trace",
        "(`examples/demo.jsonl.zst`). In scope: the queries that name only tables etwsensor produces",
        f"({', '.join(schemas())}); the others need tables no ETW sensor can fill.",
        "",
        "| queries | over etwsensor's tables | ran | % of those | failed | returned rows on the demo |"
        " other tables |",
        "|---|---|---|---|---|---|---|",
        f"| {len(outcomes)} | {scope} | {len(ran)} | {pct:.1f} | {len(failed)} |"
        f" {sum(1 for o in ran if o.rows)} | {len(other)} |",
        "",
        "Failures by reason:",
        "",
        "| count | reason | examples |",
        "|---|---|---|",
    ]
    groups: dict[str, list[HuntOutcome]] = defaultdict(list)
    for o in failed:
        groups[o.reason].append(o)
    for key, items in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        examples = "; ".join(f"`{o.where}`" for o in items[:3])
        lines.append(f"| {len(items)} | {key.replace('|', '/')} | {examples} |")
    if not failed:
        lines.append("| 0 | | |")
    needed: dict[str, int] = defaultdict(int)
    for o in other:
        for t in o.tables:
            needed[t] += 1
    lines += ["", "Tables the out-of-scope queries need (queries per table):", ""]
    lines.append(", ".join(f"{t} {n}" for t, n in sorted(needed.items(), key=lambda kv: (-kv[1], kv[0]))))
    return lines


def render(
    results: dict[str, tuple[int, list[RuleFailure], float]],
    root: Path,
    hunted: list[HuntOutcome] | None = None,
) -> str:
    lines = [
        "# KQL coverage of the rule compiler",
        "",
        "Generated by `python scripts/kql_coverage.py` (runs `etwsensor rules check` over",
        "`../shared/data/kql/{corpus}`, and `etwsensor hunt` over the hunting corpus). Do not edit by hand.",
        "",
        "| corpus | queries | compiled | % | failed |",
        "|---|---|---|---|---|",
    ]
    for name, (ok, failed, _secs) in results.items():
        total = ok + len(failed)
        pct = 100.0 * ok / total if total else 0.0
        lines.append(f"| {name} | {total} | {ok} | {pct:.1f} | {len(failed)} |")
    for name, (_ok, failed, _secs) in results.items():
        lines += ["", f"## {name}: failures by reason", "", f"{CORPORA.get(name, '')}", ""]
        if not failed:
            lines.append("None.")
            continue
        groups: dict[str, list[RuleFailure]] = defaultdict(list)
        for f in failed:
            groups[reason(f.message)].append(f)
        known = [f for f in failed if Path(f.file).name in KNOWN]
        for f in known:
            lines += [f"`{Path(f.file).name}`: {KNOWN[Path(f.file).name]}", ""]
        lines += ["| count | reason | examples |", "|---|---|---|"]
        for key, items in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
            examples = "; ".join(f"`{Path(f.file).name}:{f.line}:{f.col}`" for f in items[:3])
            lines.append(f"| {len(items)} | {key.replace('|', '/')} | {examples} |")
    if hunted is not None:
        lines += render_hunt(hunted)
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    shared_kql = Path(__file__).resolve().parents[2] / "shared" / "data" / "kql"
    ap.add_argument("--root", type=Path, default=shared_kql)
    ap.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "kql-coverage.md"
    )
    args = ap.parse_args()
    results: dict[str, tuple[int, list[RuleFailure], float]] = {}
    missing = [name for name in CORPORA if not (args.root / name).is_dir()]
    if missing:  # a partial table would silently replace the tracked one
        print(f"error: corpora not found under {args.root}: {', '.join(missing)}; "
              f"{args.out} left as it is (--root names where they are)", file=sys.stderr)  # fmt: skip
        return 2
    for name in CORPORA:
        folder = args.root / name
        if folder.is_dir():
            results[name] = check(folder)
            ok, failed, secs = results[name]
            print(f"{name}: {ok} compiled, {len(failed)} failed ({secs:.1f}s)", file=sys.stderr)
    if not results:
        print(f"error: no corpus under {args.root}; {args.out} left as it is", file=sys.stderr)
        return 2
    hunted = None
    if (args.root / HUNT_CORPUS).is_dir():
        hunted, secs = hunt(args.root / HUNT_CORPUS)
        ran = sum(1 for o in hunted if o.status == "ran")
        scope = sum(1 for o in hunted if o.status != "other tables")
        print(f"{HUNT_CORPUS} hunt: {ran} of {scope} in scope ran ({secs:.1f}s)", file=sys.stderr)
    args.out.write_text(render(results, args.root, hunted), encoding="utf-8")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
