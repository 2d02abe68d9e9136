#!/usr/bin/env python3
"""Side by side, in one run, on the same rows: etwsensor, Zircolite and the duckdb-kql batch engine.

    python scripts/bench.py compare --sigma DIR [--rounds N] [--repeat N]
        [--zircolite DIR --zircolite-python PY]

Input: one EVTX made of the chunks of the real Sysmon/Security test files (tests/data/windows) ``--rounds``
times (``bench.py evtx``'s file, bench-data/, git-ignored). Each engine runs in its own process pinned to
one core (``taskset -c 0``) and is measured from outside (``os.wait4``): wall seconds, CPU seconds (user +
system) and peak RSS, and events/s = the EVTX's records / wall.

* etwsensor: ``etwsensor replay FILE.evtx --rules DIR --no-builtin`` (SigmaHQ rules converted to KQL;
  alerts to no sink), once to fill the rule cache, then timed; and the built-in pack the same way.
* Zircolite (a checkout of wagga40/Zircolite outside this repository, its requirements in their own venv):
  ``zircolite.py --evtx FILE --ruleset rules/rules_windows_sysmon_high.json`` (SigmaHQ rules as SQL over
  SQLite; not the same rule set: Zircolite ships its own conversion).
* duckdb-kql batch: the rows etwsensor makes of the EVTX loaded into an in-memory DuckDB (one thread),
  then every rule of ``DIR`` translated by duckdb-kql to SQL and run over them (``compare-duckdb`` below,
  the phases timed apart). The same rules and the same rows as etwsensor's run: a batch engine's cost
  against the streaming one.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))


def measured(cmd: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``cmd`` pinned to core 0; its wall and CPU seconds, peak RSS and output tail."""
    pin = ["taskset", "-c", "0"] if shutil.which("taskset") else []
    with tempfile.TemporaryFile() as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen([*pin, *cmd], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        tail = out.read()[-262144:].decode("utf-8", "replace")
    return {
        "exit": proc.returncode,
        "wall_s": round(wall, 2),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),  # Linux: KiB
        "output_tail": tail,
    }


def best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in runs if r["exit"] in (0, 1)] or runs  # etwsensor exits 1 when a rule did not load
    return {**min(ok, key=lambda r: r["wall_s"]), "wall_s_each_run": [r["wall_s"] for r in runs]}


def etwsensor_runs(evtx: Path, sigma: Path | None, repeat: int, cache: Path) -> dict[str, Any]:
    env = {**os.environ, "ETWSENSOR_CACHE_DIR": str(cache)}
    exe = [sys.executable, "-m", "etwsensor", "replay", str(evtx), "--sink", "file:/dev/null",
           "--json-summary"]  # fmt: skip
    from etwsensor.rules import RuleSet

    packs: dict[str, list[str]] = {"builtin": []}
    counts = {"builtin": len(RuleSet.load([], builtin=True)[0].rules)}
    if sigma is not None:
        packs["sigma"] = ["--rules", str(sigma), "--no-builtin", "--skip-bad-rules"]
        counts["sigma"] = len(list(sigma.glob("*.kql")))
    out: dict[str, Any] = {}
    for name, extra in packs.items():
        measured([*exe, *extra], env=env)  # fills the rule cache: the timed runs load warm
        runs = [measured([*exe, *extra], env=env) for _ in range(repeat)]
        result = best(runs)
        summary = json.loads(result.pop("output_tail").strip().splitlines()[-1])
        result.update(
            events=summary["events"],
            alerts=summary["alerts"],
            matches=sum(summary["matched_by_rule"].values()),
        )  # before suppression, as the others
        result["rules"] = counts[name]
        out[name] = result
    return out


def zircolite_runs(checkout: Path, python: str, evtx: Path, repeat: int) -> dict[str, Any]:
    ruleset = checkout / "rules" / "rules_windows_sysmon_high.json"
    runs = []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [python, "zircolite.py", "--evtx", str(evtx), "--ruleset", str(ruleset), "-q", "--nolog",
                   "-o", str(Path(tmp) / "detected.json")]  # fmt: skip
            runs.append(measured(cmd, cwd=checkout))
            try:  # a list of {title, count, matches} per rule that matched
                found = json.loads((Path(tmp) / "detected.json").read_text("utf-8"))
                runs[-1]["matches"] = sum(int(r.get("count", len(r.get("matches", [])))) for r in found)
            except (OSError, ValueError, TypeError, AttributeError):  # no file when nothing matched
                none = re.search(r"Detections\s+None", runs[-1]["output_tail"])
                runs[-1]["matches"] = 0 if none else None
    result = best(runs)
    tail = result.pop("output_tail")
    own = re.search(r"Duration\s+([0-9.]+)s", tail)
    result["own_duration_s"] = float(own.group(1)) if own else None
    result["rules"] = len(json.loads(ruleset.read_text("utf-8")))
    if result["exit"] != 0:
        result["error"] = tail[-700:]
    return result


def duckdb_runs(evtx: Path, sigma: Path, repeat: int) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__)), "compare-duckdb", str(evtx), str(sigma)]
    runs = [measured(cmd) for _ in range(repeat)]
    result = best(runs)
    tail = result.pop("output_tail")
    result.update(json.loads(tail.strip().splitlines()[-1]))
    return result


def duckdb_worker(evtx: Path, sigma: Path) -> None:
    """One batch run: load the rows, translate every rule, run every rule; phases timed apart."""
    from etwsensor.hunt.query import HuntQueryError, translate
    from etwsensor.hunt.store import connect, load_inputs, newest_time

    sys.setrecursionlimit(20_000)  # duckdb-kql walks a long `or` chain recursively
    con = connect(None)
    con.execute("SET threads = 1")
    t0 = time.process_time()
    report = load_inputs(con, [evtx])
    t1 = time.process_time()
    now = newest_time(con)
    translated: list[tuple[str, dict[str, object]]] = []
    failed = 0
    for path in sorted(sigma.glob("*.kql")):
        try:
            translated.append(translate(con, path.read_text("utf-8"), now))
        except (HuntQueryError, RecursionError):  # the thousand-term `or` chains: counted
            failed += 1
    t2 = time.process_time()
    hits = errors = 0
    for sql, params in translated:
        try:
            got = con.execute(f"SELECT count(*) FROM ({sql})", params or None).fetchone()
            hits += int(got[0]) if got else 0
        except Exception:  # a rule DuckDB cannot run on these rows: counted
            errors += 1
    t3 = time.process_time()
    print(json.dumps({"events": report.events, "rows": sum(report.rows.values()), "rules": len(translated),
                      "rules_not_translated": failed, "rules_failed_to_run": errors, "matches": hits,
                      "cpu_load_rows_s": round(t1 - t0, 2), "cpu_translate_s": round(t2 - t1, 2),
                      "cpu_execute_s": round(t3 - t2, 2)}))  # fmt: skip


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "compare-duckdb":
        duckdb_worker(Path(sys.argv[2]), Path(sys.argv[3]))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sigma", type=Path, default=None, help="SigmaHQ rules converted to KQL (a folder)")
    ap.add_argument("--rounds", type=int, default=200, help="copies of the test chunks in the EVTX")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--zircolite", type=Path, default=None, help="a Zircolite checkout")
    ap.add_argument("--zircolite-python", default=sys.executable, help="Zircolite's venv Python")
    ap.add_argument("--skip", action="append", default=[], choices=["etwsensor", "zircolite", "duckdb"])
    args = ap.parse_args()
    from bench import bench_evtx_file
    from bench_rules import calibration_ns

    evtx = ROOT / "bench-data" / f"sysmon-{args.rounds}.evtx"
    mix = bench_evtx_file(evtx, args.rounds)
    records = sum(mix.values())
    result: dict[str, Any] = {"bench": "compare", "file": str(evtx.relative_to(ROOT)), "records": records,
                              "load_average_before": os.getloadavg(),
                              "calibration_ns_before": calibration_ns()}  # fmt: skip
    with tempfile.TemporaryDirectory() as cache:
        if "etwsensor" not in args.skip:
            result["etwsensor"] = etwsensor_runs(evtx, args.sigma, args.repeat, Path(cache))
    if args.zircolite is not None and "zircolite" not in args.skip:
        result["zircolite"] = zircolite_runs(args.zircolite, args.zircolite_python, evtx, args.repeat)
    if args.sigma is not None and "duckdb" not in args.skip:
        result["duckdb_kql"] = duckdb_runs(evtx, args.sigma, args.repeat)
    engines = {f"etwsensor ({k})": v for k, v in result.get("etwsensor", {}).items()}
    engines.update({k: result[k] for k in ("zircolite", "duckdb_kql") if k in result})
    for doc in engines.values():
        if doc.get("wall_s"):
            doc["events_per_s"] = round(records / doc["wall_s"])
        if doc.get("cpu_s"):
            doc["events_per_cpu_s"] = round(records / doc["cpu_s"])
    header = "| engine | rules | events/s (wall) | events/CPU s | wall s | CPU s | peak RSS MiB | matches |"
    print(header, file=sys.stderr)
    print("|---|---|---|---|---|---|---|---|", file=sys.stderr)
    for name, doc in engines.items():
        cells = [name, *(doc.get(k) for k in ("rules", "events_per_s", "events_per_cpu_s", "wall_s", "cpu_s",
                                                "peak_rss_mib", "matches"))]  # fmt: skip
        print("| " + " | ".join(map(str, cells)) + " |", file=sys.stderr)
    result["load_average_after"] = os.getloadavg()
    result["calibration_ns_after"] = calibration_ns()
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
