#!/usr/bin/env python3
"""Start-up time of the etwsensor CLI, wall clock, best of N fresh processes (one core):

    python scripts/bench.py startup [--repeat 10]

* `python -c pass` — the interpreter alone, the floor;
* `etwsensor --version`;
* `etwsensor replay SIX.jsonl` — a 6-event recording (the demo's first events) with the built-in pack and a
  warm rule cache (one run first fills it), alerts to /dev/null.

etwsensor's bytecode is compiled first (as pip does when it installs the wheel): a checkout run with
PYTHONDONTWRITEBYTECODE=1 would otherwise compile every etwsensor module from source at each start.

Prints JSON with each figure, the machine calibration (bench_rules.calibration_ns) taken before the runs and
the load average after them.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import zstandard

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "demo.jsonl.zst"
sys.path.insert(0, str(Path(__file__).parent))


def best_ms(argv: list[str], repeat: int, cpu: dict[str, float] | None = None) -> float:
    """Best wall time of ``repeat`` runs; with ``cpu``, also the best CPU time (user + system) in
    ``cpu["ms"]``, which a busy machine inflates less than the wall time."""
    best = best_cpu = float("inf")
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        best = min(best, time.perf_counter() - t0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        used = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
        best_cpu = min(best_cpu, used)
    if cpu is not None:
        cpu["ms"] = round(best_cpu * 1000, 1)
    return round(best * 1000, 1)


def main() -> None:
    from bench_rules import calibration_ns

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=10)
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # children inherit: one core
    compileall.compile_dir(ROOT / "etwsensor", quiet=1)
    with tempfile.TemporaryDirectory() as tmp:
        six = Path(tmp) / "six.jsonl"
        lines = zstandard.ZstdDecompressor().stream_reader(DEMO.open("rb")).read().split(b"\n")
        six.write_bytes(b"\n".join(lines[:7]) + b"\n")  # header + 6 events
        replay = [sys.executable, "-m", "etwsensor", "replay", str(six)]
        subprocess.run(replay, capture_output=True, check=False)  # fill the rule cache: a warm start
        calibration = calibration_ns()
        cpu: dict[str, float] = {}
        doc = {
            "bench": "startup",
            "calibration_ns": round(calibration),
            "python_pass_ms": best_ms([sys.executable, "-c", "pass"], args.repeat),
            "version_ms": best_ms([sys.executable, "-m", "etwsensor", "--version"], args.repeat),
            "replay_6_events_ms": best_ms(replay, args.repeat, cpu),
            "replay_6_events_cpu_ms": cpu["ms"],
            "load_average": round(os.getloadavg()[0], 2),
            "repeat": args.repeat,
        }
    json.dump(doc, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
