#!/usr/bin/env python3
"""Start-up time of the etwsensor CLI, wall clock, best of N fresh processes (one core):

    python scripts/bench.py startup [--repeat 10]

* `python -c pass` — the interpreter alone, the floor;
* `etwsensor --version`;
* `etwsensor replay SIX.jsonl` — a 6-event recording (the demo's first events) with the built-in pack and a
  warm rule cache (one run first fills it), alerts to /dev/null.

Prints JSON with each figure and the machine calibration (bench_rules.calibration_ns) taken before the runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import zstandard

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "demo.jsonl.zst"
sys.path.insert(0, str(Path(__file__).parent))


def best_ms(argv: list[str], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        best = min(best, time.perf_counter() - t0)
    return round(best * 1000, 1)


def main() -> None:
    from bench_rules import calibration_ns

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=10)
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # children inherit: one core
    with tempfile.TemporaryDirectory() as tmp:
        six = Path(tmp) / "six.jsonl"
        lines = zstandard.ZstdDecompressor().stream_reader(DEMO.open("rb")).read().split(b"\n")
        six.write_bytes(b"\n".join(lines[:7]) + b"\n")  # header + 6 events
        replay = [sys.executable, "-m", "etwsensor", "replay", str(six)]
        subprocess.run(replay, capture_output=True, check=False)  # fill the rule cache: a warm start
        calibration = calibration_ns()
        doc = {
            "bench": "startup",
            "calibration_ns": round(calibration),
            "python_pass_ms": best_ms([sys.executable, "-c", "pass"], args.repeat),
            "version_ms": best_ms([sys.executable, "-m", "etwsensor", "--version"], args.repeat),
            "replay_6_events_ms": best_ms(replay, args.repeat),
            "repeat": args.repeat,
        }
    json.dump(doc, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
