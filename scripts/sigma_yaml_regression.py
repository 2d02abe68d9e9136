#!/usr/bin/env python3
"""Run SigmaHQ's regression cases through etwsensor's Sigma YAML loader, EVTX input and rule engine.

(scripts/sigma_regression.py does the same for the shared corpus's converted KQL; this one loads the
rules as YAML, and compares with that converted KQL with --corpus.)

    python scripts/sigma_yaml_regression.py PATH/TO/sigma [--corpus DIR] [--from-json] [--json]

PATH/TO/sigma is a SigmaHQ checkout (rules*/ and regression_data/). Each regression case is a Sysmon
EVTX log (with the same events as JSON beside it). Its rows come from etwsensor's EVTX input, as
`etwsensor replay case.evtx` makes them (or, with --from-json, from this script's own mapping of the JSON:
Sysmon events 1, 7, 11, 12-14, 23, 26; the registry target split into key and value name, hive prefixes
in Defender's form, DWORD data in decimal); the case's Sigma rule is loaded with etwsensor, and the
cases where it alerts are counted per category. With
``--corpus`` (a folder of the same rules converted by the stock microsoft_xdr pipeline, named like the
rule files), the stock conversion is run on the same rows for comparison.

Neither SigmaHQ's rules nor its regression data are in this repository (their licence allows it, the
project's rules on test data do not): the figures are in docs/kql-coverage.md.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from etwsensor.rules import RuleSet
from etwsensor.tables import schema

HIVES = (
    ("HKLM\\", "HKEY_LOCAL_MACHINE\\"),
    ("HKU\\", "HKEY_CURRENT_USER\\"),
    ("HKCR\\", "HKEY_LOCAL_MACHINE\\SOFTWARE\\Classes\\"),
)
DWORD = re.compile(r"^(DWORD|QWORD) \(0x([0-9a-fA-F]+)(?:-0x([0-9a-fA-F]+))?\)$")


def _events(path: Path) -> list[dict[str, Any]]:
    text, out, pos = path.read_text("utf-8", "replace"), [], 0
    decoder = json.JSONDecoder()
    while pos < len(text):
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            break
        obj, pos = decoder.raw_decode(text, pos)
        out.append(obj)
    return out


def _name(path: str) -> str:
    return path.replace("/", "\\").rsplit("\\", 1)[-1]


def _key(path: str) -> str:
    for short, long in HIVES:
        if path.upper().startswith(short):
            return long + path[len(short) :]
    return path


def _account(user: str) -> tuple[str, str]:
    domain, _, name = user.rpartition("\\")
    return domain, name


def _hashes(text: str) -> dict[str, str]:
    out = {}
    for part in (text or "").split(","):
        algo, _, value = part.partition("=")
        if algo.upper() in ("SHA1", "MD5", "SHA256"):
            out[algo.upper()] = value
    return out


def to_row(event: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """One Sysmon event (as SigmaHQ's JSON has it) → (table, Defender row), or None."""
    system, data = event["Event"]["System"], event["Event"].get("EventData") or {}
    eid = int(system["EventID"])
    ts = datetime.fromisoformat(system["TimeCreated"]["#attributes"]["SystemTime"].replace("Z", "+00:00"))
    common: dict[str, Any] = {
        "Timestamp": ts.astimezone(UTC),
        "DeviceName": system.get("Computer", ""),
        "ReportId": 1,
    }
    image = str(data.get("Image") or "")
    domain, user = _account(str(data.get("User") or ""))
    initiating = {
        "InitiatingProcessFolderPath": image,
        "InitiatingProcessFileName": _name(image),
        "InitiatingProcessId": data.get("ProcessId"),
        "InitiatingProcessAccountName": user,
        "InitiatingProcessAccountDomain": domain,
    }
    if eid == 1:
        table = "DeviceProcessEvents"
        parent = str(data.get("ParentImage") or "")
        pdomain, puser = _account(str(data.get("ParentUser") or ""))
        row = {
            "ActionType": "ProcessCreated",
            "FolderPath": image,
            "FileName": _name(image),
            "ProcessCommandLine": data.get("CommandLine") or "",
            "ProcessId": data.get("ProcessId"),
            "AccountName": user,
            "AccountDomain": domain,
            "ProcessIntegrityLevel": data.get("IntegrityLevel") or "",
            "ProcessVersionInfoOriginalFileName": data.get("OriginalFileName") or "",
            "ProcessVersionInfoFileDescription": data.get("Description") or "",
            "ProcessVersionInfoProductName": data.get("Product") or "",
            "ProcessVersionInfoCompanyName": data.get("Company") or "",
            "ProcessVersionInfoProductVersion": data.get("FileVersion") or "",
            "InitiatingProcessFolderPath": parent,
            "InitiatingProcessFileName": _name(parent),
            "InitiatingProcessCommandLine": data.get("ParentCommandLine") or "",
            "InitiatingProcessId": data.get("ParentProcessId"),
            "InitiatingProcessAccountName": puser,
            "InitiatingProcessAccountDomain": pdomain,
            **_hashes(str(data.get("Hashes") or "")),
        }
    elif eid == 7:
        table = "DeviceImageLoadEvents"
        loaded = str(data.get("ImageLoaded") or "")
        row = {"ActionType": "ImageLoaded", "FolderPath": loaded, "FileName": _name(loaded), **initiating}
        row |= _hashes(str(data.get("Hashes") or ""))
    elif eid in (11, 23, 26):
        table = "DeviceFileEvents"
        target = str(data.get("TargetFilename") or "")
        action = "FileCreated" if eid == 11 else "FileDeleted"
        row = {"ActionType": action, "FolderPath": target, "FileName": _name(target), **initiating}
    elif eid in (12, 13, 14):
        table = "DeviceRegistryEvents"
        target = _key(str(data.get("TargetObject") or ""))
        kind = str(data.get("EventType") or "")
        row = dict(initiating)
        if kind == "SetValue":
            key, _, name = target.rpartition("\\")
            details = str(data.get("Details") or "")
            value_type, value = "String", details
            m = DWORD.match(details)
            if m:
                number = (
                    int(m.group(2), 16)
                    if m.group(3) is None
                    else (int(m.group(2), 16) << 32) | int(m.group(3), 16)
                )
                value_type, value = m.group(1).capitalize(), str(number)
            elif details == "Binary Data":
                value_type, value = "Binary", ""
            row |= {"ActionType": "RegistryValueSet", "RegistryKey": key, "RegistryValueName": name}
            row |= {"RegistryValueData": value, "RegistryValueType": value_type}
        elif kind == "CreateKey":
            row |= {"ActionType": "RegistryKeyCreated", "RegistryKey": target}
        elif kind == "DeleteKey":
            row |= {"ActionType": "RegistryKeyDeleted", "PreviousRegistryKey": target}
        elif kind == "DeleteValue":
            key, _, name = target.rpartition("\\")
            row |= {
                "ActionType": "RegistryValueDeleted",
                "PreviousRegistryKey": key,
                "PreviousRegistryValueName": name,
            }
        elif kind == "RenameKey":
            row |= {"ActionType": "RegistryKeyRenamed", "PreviousRegistryKey": target}
            row["RegistryKey"] = _key(str(data.get("NewName") or ""))
        else:
            return None
    else:
        return None
    full = schema(table).empty_row()
    full.update(common)
    full.update({k: v for k, v in row.items() if v is not None})
    return table, full


def _rules_by_id(root: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for folder in sorted(root.glob("rules*")):
        for path in folder.rglob("*.yml"):
            m = re.search(r"^id:\s*([0-9a-fA-F-]{36})", path.read_text("utf-8", "replace"), re.M)
            if m:
                out[m.group(1).lower()] = path
    return out


def _fires(rules: RuleSet, rows: list[tuple[str, dict[str, Any]]]) -> int:
    return sum(len(rules.evaluate(table, row, row["Timestamp"])) for table, row in rows)


def _evtx_rows(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """The rows etwsensor's own EVTX input makes of a log (what `etwsensor replay X.evtx` evaluates)."""
    from etwsensor.normalize import iter_rows

    return list(iter_rows(path))


def run(
    sigma: Path, corpus: Path | None, from_json: bool = False
) -> tuple[dict[str, Counter[str]], list[dict[str, Any]]]:
    """Per rule category: cases, cases run, cases that alert (and the same for the stock conversion in
    ``corpus``); and every case that did not alert or whose rule did not load, with why."""
    rules = _rules_by_id(sigma)
    per: dict[str, Counter[str]] = {}
    misses: list[dict[str, Any]] = []
    for info_path in sorted((sigma / "regression_data").rglob("info.yml")):
        info = yaml.safe_load(info_path.read_text("utf-8"))
        rule_id = str(info["rule_metadata"][0]["id"]).lower()
        rule_file = rules.get(rule_id)
        category = info_path.parent.parent.name
        if rule_file is not None:
            logsource = (yaml.safe_load(rule_file.read_text("utf-8")) or {}).get("logsource") or {}
            category = str(logsource.get("category") or logsource.get("service") or category)
        c = per.setdefault(category, Counter())
        c["cases"] += 1
        if rule_file is None:
            c["rule not found"] += 1
            continue
        loaded, failures = RuleSet.load([rule_file], builtin=False)
        if failures:
            c["not loaded"] += 1
            misses.append({"rule": rule_file.name, "category": category, "why": failures[0].message})
            continue
        rows = []
        for test in info.get("regression_tests_info") or []:
            evtx_path = sigma / Path(str(test["path"]))
            json_path = evtx_path.with_suffix(".json")
            if not from_json and evtx_path.is_file():
                rows.extend(_evtx_rows(evtx_path))
            elif json_path.is_file():
                rows.extend(r for e in _events(json_path) if (r := to_row(e)) is not None)
        if not rows:
            c["no usable events"] += 1
            continue
        c["run"] += 1
        if _fires(loaded, rows):
            c["alerts"] += 1
        else:
            misses.append({"rule": rule_file.name, "category": category, "why": "no alert"})
        stock = corpus / f"{rule_file.stem}.kql" if corpus else None
        if stock is not None and stock.is_file():
            stock_rules, stock_failures = RuleSet.load([stock], builtin=False)
            if not stock_failures:
                c["stock run"] += 1
                c["stock alerts"] += bool(_fires(stock_rules, rows))
    return per, misses


KEYS = (
    "cases",
    "run",
    "alerts",
    "stock run",
    "stock alerts",
    "not loaded",
    "no usable events",
    "rule not found",
)


def table(per: dict[str, Counter[str]]) -> list[str]:
    lines = ["| category | " + " | ".join(KEYS) + " |", "|---" * (len(KEYS) + 1) + "|"]
    total: Counter[str] = Counter()
    for category, c in sorted(per.items()):
        total.update(c)
        lines.append(f"| {category} | " + " | ".join(str(c[k]) for k in KEYS) + " |")
    lines.append("| **all** | " + " | ".join(str(total[k]) for k in KEYS) + " |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("sigma", type=Path)
    parser.add_argument("--corpus", type=Path, help="the same rules converted by the stock pipeline (.kql)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--from-json", action="store_true", help="rows from SigmaHQ's JSON by this script, not the EVTX input"
    )
    args = parser.parse_args()
    per, misses = run(args.sigma, args.corpus, args.from_json)
    if args.json:
        print(json.dumps({"per_category": per, "misses": misses}, indent=1))
        return 0
    print("\n".join(table(per)))
    for miss in misses:
        print(f"- {miss['rule']}: {miss['why']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
