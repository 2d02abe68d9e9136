"""KQL coverage: `rules check`, `rules coverage` and `hunt` over the shared corpora → docs/kql-coverage.md.

    python scripts/kql_coverage.py [--root ../shared/data/kql] [--out docs/kql-coverage.md]

A dev tool (it reads ../shared beside the checkout; tests do not). For each corpus: how many queries
compile as streaming rules, and the failures grouped by reason, with example files. For the hunting corpus
also: how many run with `etwsensor hunt` (duckdb-kql over DuckDB) on the demo trace's rows, counted over the
queries that read only tables etwsensor produces. The compiled-IR cache makes reruns fast. When no corpus is
found the document is left as it is. `rules coverage` says which rules can fire on each input. With
--sigma (a SigmaHQ checkout, not part of the repository): its Windows rules loaded as YAML, the
native-vs-converted differential, and its regression cases (scripts/sigma_yaml_regression.py).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import yaml

from etwsensor.rules import RuleSet
from etwsensor.rules.coverage import coverage, profiles
from etwsensor.rules.errors import RuleFailure
from etwsensor.tables import schemas

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sigma_yaml_regression

SOURCES = ("etw", "etl", "evtx", "rows")

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
    m = re.match(r"converted KQL \d+:\d+: (.*)", message)
    if m:
        return "the converted KQL: " + reason(m.group(1))
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
    LOADED[folder.name] = (rs, failures)
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


LOADED: dict[str, tuple[RuleSet, list[RuleFailure]]] = {}


def fire_section(title: str, rs: RuleSet, failures: list[RuleFailure], categories: bool) -> list[str]:
    """`rules coverage` of one rule set on every input: verdicts, the columns that matter most."""
    lines = ["", f"## {title}: which rules can fire", ""]
    lines += ["| input | rules judged | ok | degraded | cannot fire | not loaded (other reasons) |"]
    lines += ["|---|---|---|---|---|---|"]
    summaries = {}
    for source in SOURCES:
        summary = coverage(rs.rules, failures, profiles()[source]).summary()
        summaries[source] = summary
        lines.append(
            f"| {source} | {summary['rules']} | {summary['ok']} | {summary['degraded']} | "
            f"{summary['cannot_fire']} | {summary['not_loaded']} |"
        )
    lines += ["", "Inputs: " + "; ".join(f"**{s}**: {profiles()[s].description}" for s in SOURCES) + "."]
    for source in ("etl", "etw"):
        columns = summaries[source]["per_missing_column"][:12]
        if not columns:
            continue
        lines += ["", f"Columns **{source}** never fills, by the rules they stop (first: what would"]
        lines += ["most raise coverage):", "", "| column | cannot fire | degraded |", "|---|---|---|"]
        lines += [f"| {c['column']} | {c['cannot_fire']} | {c['degraded']} |" for c in columns]
        for entry in summaries[source]["per_missing_table"][:8]:
            lines.append(f"| table {entry['table']} (not produced) | {entry['cannot_fire']} | |")
        for entry in summaries[source]["per_missing_action_type"]:
            lines.append(f"| ActionType {entry['action_type']} (not produced) | {entry['cannot_fire']} | |")
    if categories:
        lines += ["", "Per Sigma category (etl / etw: ok, degraded, cannot fire):", ""]
        lines += ["| category | etl | etw |", "|---|---|---|"]
        for cat, v in summaries["etl"]["per_category"].items():
            w = summaries["etw"]["per_category"][cat]
            lines.append(
                f"| {cat} | {v['ok']} / {v['degraded']} / {v['cannot_fire']} | "
                f"{w['ok']} / {w['degraded']} / {w['cannot_fire']} |"
            )
    return lines


def differential(sigma: Path, corpus: Path) -> Counter[str]:
    """The native conversion of each rule of the shared converted corpus against the corpus's KQL."""
    from etwsensor.rules.sigma import SigmaFailure, convert_text

    out: Counter[str] = Counter()
    index_file = corpus / "index.json"
    index = json.loads(index_file.read_text("utf-8")) if index_file.is_file() else []
    for entry in index:
        path = sigma / entry["sigma_path"]
        if not path.is_file():
            out["rule not in this checkout"] += 1
            continue
        text = path.read_text("utf-8")
        kql = (corpus / entry["kql_file"]).read_text("utf-8").splitlines()
        ref = "\n".join(line for line in kql if not line.startswith("//")).strip()
        try:
            native = convert_text(text, yaml.safe_load(text)).kql.strip()
        except SigmaFailure as exc:
            out[f"not loaded natively ({exc.reason})"] += 1
            continue
        registry = str(entry.get("category", "")).startswith("registry")
        kind = "registry rules" if registry else "other rules"
        out[f"{kind}: {'the same KQL' if native == ref else 'different KQL'}"] += 1
    return out


def sigma_section(sigma: Path, corpus: Path) -> list[str]:
    """A SigmaHQ checkout's Windows rules loaded as YAML, and its regression cases."""
    folder = sigma / "rules" / "windows"
    t = time.perf_counter()
    rs, failures = RuleSet.load([folder], builtin=False)
    secs = time.perf_counter() - t
    total = len(rs.rules) + len(failures)
    groups: dict[str, int] = defaultdict(int)
    for f in failures:
        m = re.match(r"Sigma rule not converted \(([^)]+)\)", f.message)
        groups[m.group(1) if m else reason(f.message)] += 1
    lines = [
        "",
        "## SigmaHQ Windows rules as YAML (native loader)",
        "",
        f"`etwsensor rules check sigma/rules/windows`: {total} rule files, {len(rs.rules)} loaded, "
        f"{len(failures)} not ({secs:.1f} s with the caches as they were).",
        "",
        "| count | not loaded because |",
        "|---|---|",
    ]
    lines += [f"| {n} | {k} |" for k, n in sorted(groups.items(), key=lambda kv: -kv[1])]
    lines += fire_section("SigmaHQ Windows rules (YAML)", rs, failures, categories=True)
    diff = differential(sigma, corpus)
    lines += [
        "",
        "**Native path against the earlier conversions.** The shared corpus's rules converted again by",
        "the native loader (etwsensor's pipeline) and compared with the corpus's KQL (stock pipeline):",
        "",
        "| rules | count |",
        "|---|---|",
        *[f"| {k} | {n} |" for k, n in sorted(diff.items())],
        "",
        "Identical KQL is identical IR and the same matches; the registry rules differ by design (the",
        "registry decisions in docs/rules.md), and the regression cases below show which fire.",
    ]
    per, misses = sigma_yaml_regression.run(sigma, corpus)
    lines += [
        "",
        "## SigmaHQ regression cases",
        "",
        "`python scripts/sigma_yaml_regression.py sigma --corpus ../shared/data/kql/sigma-converted-"
        "microsoft-xdr`: each case's Sysmon EVTX log read by etwsensor's EVTX input (the rows "
        "`etwsensor replay case.evtx` evaluates), the case's rule loaded natively (*alerts*) and, where "
        "the shared corpus has it, as the stock conversion (*stock alerts*). The EVTX input writes registry "
        "rows in Defender's form (key and value name apart, `HKEY_LOCAL_MACHINE\\…`, DWORD data in "
        "decimal): the registry figures check the pipeline against that form, not against Defender itself.",
        "",
        *sigma_yaml_regression.table(per),
        "",
        "Cases that did not alert or whose rule did not load:",
        "",
    ]
    lines += [f"* `{m['rule']}` ({m['category']}): {m['why']}" for m in misses]
    return lines


def render(
    results: dict[str, tuple[int, list[RuleFailure], float]],
    root: Path,
    hunted: list[HuntOutcome] | None = None,
) -> str:
    lines = [
        "# KQL coverage of the rule compiler",
        "",
        "Generated by `python scripts/kql_coverage.py --sigma PATH/TO/sigma` (runs `etwsensor rules check`",
        "and `etwsensor rules coverage` over `../shared/data/kql/{corpus}`, `etwsensor hunt` over the",
        "hunting corpus, and the Sigma loader over a SigmaHQ checkout). Do not edit by hand.",
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
    for name in results:
        rs, failures = LOADED[name]
        lines += fire_section(name, rs, failures, categories=False)
    if SIGMA is not None:
        lines += sigma_section(SIGMA, root / "sigma-converted-microsoft-xdr")
    return "\n".join(lines) + "\n"


SIGMA: Path | None = None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    shared_kql = Path(__file__).resolve().parents[2] / "shared" / "data" / "kql"
    ap.add_argument("--root", type=Path, default=shared_kql)
    ap.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "kql-coverage.md"
    )
    ap.add_argument("--sigma", type=Path, help="a SigmaHQ checkout: its Windows rules and regression cases")
    args = ap.parse_args()
    global SIGMA
    SIGMA = args.sigma
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
