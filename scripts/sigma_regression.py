#!/usr/bin/env python3
"""SigmaHQ regression cases through the EVTX input: does the KQL conversion of each folder's rule alert
on the folder's EVTX? A dev tool: it reads a checkout of SigmaHQ/sigma (its ``regression_data``, DRL 1.1)
and the SigmaHQ rules converted to KQL (``../shared/data/kql/sigma-converted-microsoft-xdr``); neither is
part of this repository.

    python scripts/sigma_regression.py SIGMA_CHECKOUT [--kql DIR] [--json]

For every ``regression_data/**/<rule file stem>/<id>.evtx``: the rule ``<rule file stem>.kql`` is loaded
alone and run over the rows ``etwsensor replay`` makes of the EVTX (the clock is the newest row time, as
in replay). A case is a hit when the rule matches at least one row. Misses are listed with why: no
converted rule (the backend could not convert it, or its log source has no Defender table), the rule
does not compile here, the EVTX gives no row of the rule's table (its events are not mapped), or rows
but no match. Rates are per rule category (the stem's log-source prefix).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_KQL = ROOT.parent / "shared" / "data" / "kql" / "sigma-converted-microsoft-xdr"
_CATEGORIES = [
    "proc_creation",
    "proc_access",
    "image_load",
    "file_event",
    "file_delete",
    "file_rename",
    "file_change",
    "registry_set",
    "registry_add",
    "registry_delete",
    "registry_event",
    "create_remote_thread",
    "net_connection",
    "dns_query",
    "pipe_created",
    "driver_load",
    "create_stream_hash",
    "raw_access_thread",
    "sysmon",
    "posh_ps",
    "posh_pm",
    "win_security",
    "win_system",
    "win",
]
_CATEGORY = re.compile("^(" + "|".join(_CATEGORIES) + ")")


def category(stem: str) -> str:
    m = _CATEGORY.match(stem)
    return m.group(1) if m else stem.split("_", 1)[0]


def sysmon_registry_form(row: dict[str, Any]) -> dict[str, Any]:
    """A registry row as pySigma's Kusto backend assumes it (TargetObject in RegistryKey, Sysmon's Details
    text in RegistryValueData), for the diagnostic --sysmon-registry-form: what the converted registry
    rules would match if Defender wrote rows that way (it does not)."""
    row = dict(row)
    name = row.get("RegistryValueName")
    if row.get("ActionType") == "RegistryValueSet":
        row["RegistryKey"] = f"{row['RegistryKey']}\\{name or '(Default)'}"
        data, kind = row.get("RegistryValueData", ""), row.get("RegistryValueType")
        if kind == "Dword" and data:
            row["RegistryValueData"] = f"DWORD (0x{int(data):08x})"
        elif kind == "QWord" and data:
            row["RegistryValueData"] = f"QWORD (0x{int(data) >> 32:08x}-0x{int(data) & 0xFFFFFFFF:08x})"
        elif kind == "Binary":
            row["RegistryValueData"] = "Binary Data"
    elif row.get("ActionType") == "RegistryValueDeleted":
        row["RegistryKey"] = (
            f"{row['PreviousRegistryKey']}\\{row.get('PreviousRegistryValueName') or '(Default)'}"
        )
    elif row.get("ActionType") == "RegistryKeyDeleted":
        row["RegistryKey"] = row.get("PreviousRegistryKey", "")
    return row


def run_case(rule_path: Path, evtx: Path, registry_form: bool = False) -> tuple[str, dict[str, Any]]:
    from etwsensor.normalize import iter_rows
    from etwsensor.rules import RuleSet

    ruleset, failures = RuleSet.load([rule_path], builtin=False)
    if failures or not ruleset.rules:
        return "miss: rule does not compile", {"error": str(failures[0]) if failures else "no rule"}
    tables = {t for r in ruleset.rules for t in r.tables}
    clock: datetime | None = None
    rows: Counter[str] = Counter()
    matches = 0
    for table, row in iter_rows(evtx):
        rows[table] += 1
        if registry_form and table == "DeviceRegistryEvents":
            row = sysmon_registry_form(row)
        ts = row.get("Timestamp")
        if isinstance(ts, datetime) and (clock is None or ts > clock):
            clock = ts
        matches += len(ruleset.evaluate(table, row, clock))
    info = {"rows": dict(rows), "tables": sorted(tables), "matches": matches}
    if matches:
        return "hit", info
    if not any(rows[t] for t in tables):
        return "miss: no row of the rule's table", info
    return "miss: rows, no match", info


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sigma", type=Path, help="a checkout of SigmaHQ/sigma (with regression_data)")
    ap.add_argument("--kql", type=Path, default=DEFAULT_KQL, help="the rules converted to KQL, one .kql each")
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout")
    ap.add_argument(
        "--sysmon-registry-form",
        action="store_true",
        help="diagnostic: registry rows rewritten to the backend's Sysmon-shaped assumption",
    )
    args = ap.parse_args()
    cases = sorted((args.sigma / "regression_data").rglob("*.evtx"))
    per_category: dict[str, Counter[str]] = defaultdict(Counter)
    results: list[dict[str, Any]] = []
    for evtx in cases:
        stem = evtx.parent.name
        rule = args.kql / f"{stem}.kql"
        if not rule.is_file():
            outcome, info = "miss: no converted rule", {}
        else:
            try:
                outcome, info = run_case(rule, evtx, args.sysmon_registry_form)
            except Exception as exc:  # a case that breaks the tool is a miss with its reason
                outcome, info = "miss: error", {"error": repr(exc)}
        cat = category(stem)
        per_category[cat][outcome] += 1
        results.append(
            {"case": str(evtx.relative_to(args.sigma)), "category": cat, "outcome": outcome, **info}
        )
    rates = {
        cat: {"cases": sum(c.values()), "hits": c["hit"], "rate": round(c["hit"] / sum(c.values()), 3),
              "outcomes": dict(c)}
        for cat, c in sorted(per_category.items())
    }  # fmt: skip
    with_rule = [r for r in results if r["outcome"] != "miss: no converted rule"]
    doc = {
        "cases": len(results),
        "hits": sum(r["outcome"] == "hit" for r in results),
        "cases_with_a_converted_rule": len(with_rule),
        "hits_of_those": sum(r["outcome"] == "hit" for r in with_rule),
        "per_category": rates,
        "misses": [r for r in results if r["outcome"] != "hit"],
    }
    if args.json:
        json.dump(doc, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        print(f"{doc['hits']}/{doc['cases']} cases hit; with a converted rule: "
              f"{doc['hits_of_those']}/{doc['cases_with_a_converted_rule']}")  # fmt: skip
        for cat, r in rates.items():
            print(f"  {cat:<24} {r['hits']:>4}/{r['cases']:<4} {r['rate']:.0%}  {r['outcomes']}")
        for m in doc["misses"]:
            print(f"  MISS {m['case']}: {m['outcome']} {m.get('rows', '')} {m.get('error', '')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
