#!/usr/bin/env python3
"""The live path's per-record costs on the real perfview records rebuilt as EVENT_RECORDs (one core):

    python scripts/bench.py live [--repeat N]

* callback: EVENT_RECORD address → RawRecord → bounded queue (what ETW's consumer thread pays per record,
  before the ctypes trampoline, which only Windows can measure);
* reorder: one event through the worker's 2-second ReorderWindow (heap push and pop), events in trace order.
Prints JSON with the machine calibration of bench_rules (ns per dict.get + str.lower: higher = busier).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(Path(__file__).parent)]


def main() -> None:
    from bench_rules import calibration_ns

    from etwsensor.decode import Decoder, load_providers
    from etwsensor.sources.live.callback import RecordCallback, RecordQueue
    from etwsensor.sources.live.runner import ReorderWindow
    from tests.live.records import etl_records, event_record

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    known = {p.guid for p in load_providers()}
    raw = [r for r in etl_records() if r.guid in known]
    lives = [event_record(r) for r in raw]
    addresses = [ctypes.addressof(live.record) for live in lives]
    decoder = Decoder()
    events = [ev for r in raw if (ev := decoder.decode(r)) is not None]
    best_cb = best_re = float("inf")
    for _ in range(args.repeat):
        q = RecordQueue(len(addresses) + 1)
        cb = RecordCallback(q)
        gc.collect()
        t0 = time.perf_counter()
        for a in addresses:
            cb(a, "etwsensor-kernel")
        best_cb = min(best_cb, (time.perf_counter() - t0) / len(addresses))
        window = ReorderWindow()
        t0 = time.perf_counter()
        for ev in events:
            window.push(ev)
        list(window.drain())
        best_re = min(best_re, (time.perf_counter() - t0) / len(events))
    print(json.dumps({
        "records": len(addresses),
        "events": len(events),
        "callback_us_per_record": round(best_cb * 1e6, 2),
        "reorder_us_per_event": round(best_re * 1e6, 2),
        "calibration_ns_get_lower": round(calibration_ns(), 1),
        "repeat": args.repeat,
    }, indent=2))


if __name__ == "__main__":
    main()
