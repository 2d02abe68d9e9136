#!/usr/bin/env python3
"""CPU of an idle `trace`: the live loop with the built-in pack on a host that sends no events.

    python scripts/bench.py idle [--seconds S] [--max-cpu PCT]

Runs ``etwsensor.sources.live.cli.run_live`` as ``trace`` does, with the simulated advapi32 of the tests
(tests/live/simadvapi.py) in place of Windows and no event ever emitted, heartbeats every 60 s, for S
seconds. Reports the CPU of the whole process per second of wall time and the part of it spent in
etwsensor's own threads (worker, main thread, watchdog, heartbeat, host facts): the simulated consumers
(``etw-*`` threads running the simulator's ProcessTrace, which polls its condition every 50 ms) are what
Windows' ProcessTrace does in the kernel, so they are measured apart and left out. Linux: per-thread CPU
from /proc/self/task/<tid>/stat. On Windows the workflow's burst step measures the real process.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(Path(__file__).parent)]


def thread_cpu() -> dict[int, float]:
    """CPU seconds (user + system) of each thread of this process, by native id."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, float] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return out


def main() -> None:
    from etwsensor.config import load_settings
    from etwsensor.rules import RuleSet
    from etwsensor.sources.live import cli as live_cli
    from etwsensor.sources.live.lifecycle import EtwSessions
    from etwsensor.sources.live.plan import plan_for_rules
    from tests.live.fakes import FakeHost
    from tests.live.simadvapi import SimulatedAdvapi32

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--max-cpu", type=float, default=None, help="with a CPU ceiling (its idle checks)")
    args = ap.parse_args()
    ruleset, _ = RuleSet.load([], builtin=True)
    plan = plan_for_rules(ruleset)
    sim = SimulatedAdvapi32()
    consumers: list[int] = []

    def make(p: object, callback: object) -> EtwSessions:
        return EtwSessions(p, callback, sim, cpus=2, version=(10, 0, 26100))  # type: ignore[arg-type]

    taken: list[tuple[float, float, dict[int, float]]] = []

    def measure() -> None:  # from 3 s after the start (sessions running) for --seconds, before the stop
        time.sleep(3.0)
        consumers.extend(t.native_id or 0 for t in threading.enumerate() if t.name.startswith("etw-"))
        taken.append((time.perf_counter(), time.process_time(), thread_cpu()))
        time.sleep(args.seconds)
        taken.append((time.perf_counter(), time.process_time(), thread_cpu()))

    threading.Thread(target=measure, daemon=True).start()
    options = live_cli.LiveOptions(heartbeat_seconds=60.0, max_cpu_percent=args.max_cpu)
    devnull = open(os.devnull, "w")  # noqa: SIM115 - the summary is not what is measured
    stderr, sys.stderr = sys.stderr, devnull
    try:
        live_cli.run_live(plan, ruleset, load_settings(None), ["file:/dev/null"], None, args.seconds + 4.0,
                          True, FakeHost(), make, None, options)  # fmt: skip
    finally:
        sys.stderr = stderr
    (w0, c0, t0), (w1, c1, t1) = taken
    wall, cpu = w1 - w0, c1 - c0
    consumer_cpu = sum(t1.get(t, 0.0) - t0.get(t, 0.0) for t in consumers)
    print(json.dumps({
        "bench": "idle", "seconds": round(wall, 1), "rules": len(ruleset.rules),
        "process_cpu_percent": round(100 * cpu / wall, 2),
        "simulated_consumers_cpu_percent": round(100 * consumer_cpu / wall, 2),
        "etwsensor_cpu_percent": round(100 * (cpu - consumer_cpu) / wall, 2),
        "load_average": os.getloadavg(),
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
