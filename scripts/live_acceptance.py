"""The burst half of the Windows acceptance test (.github/workflows/windows.yml): make a process burst, then
report what the live trace saw of it.

    python scripts/live_acceptance.py burst --count 2000 --seconds 20 --out burst.json
    python scripts/live_acceptance.py report --summary trace.log --rows rows.ndjson --burst burst.json \\
        --samples samples.csv [--check] >> "$GITHUB_STEP_SUMMARY"

``burst`` starts ``count`` short processes (``cmd.exe /c rem <marker> <i>`` on Windows, ``true``
elsewhere) at an even pace over ``seconds``, a few at a time, and writes its pid, marker and start/end times.
``report`` reads the trace's JSON summary (the last JSON line of its stderr), the DeviceProcessEvents rows of
its recording (``etwsensor normalize REC --table DeviceProcessEvents``), the burst file and the tracer's
CPU/RSS samples (``unix_seconds,cpu_seconds,working_set_bytes`` lines), and prints a Markdown report: events
lost, the share of the burst's ProcessCreated rows that were seen and that carry their command line, CPU %
and peak RSS idle and during the burst. With ``--check`` it exits 1 unless nothing was lost and ≥ 99 % of
the burst was seen with its command line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

TARGET_SHARE = 0.99


def burst(count: int, seconds: float, out: Path, workers: int = 4) -> dict[str, Any]:
    marker = f"etwsensor-burst-{uuid.uuid4().hex[:8]}"
    windows = sys.platform == "win32"

    def one(i: int) -> int:
        argv = ["cmd.exe", "/c", "rem", marker, str(i)] if windows else ["true", marker, str(i)]
        return subprocess.run(argv, check=False).returncode

    start = time.time()
    pace = seconds / count
    with ThreadPoolExecutor(workers) as pool:
        futures = []
        for i in range(count):
            delay = start + i * pace - time.time()
            if delay > 0:
                time.sleep(delay)
            futures.append(pool.submit(one, i))
        failed = sum(f.result() != 0 for f in futures)
    doc = {
        "pid": os.getpid(),
        "marker": marker,
        "count": count,
        "failed": failed,
        "start": start,
        "end": time.time(),
    }
    out.write_text(json.dumps(doc), encoding="utf-8")
    return doc


def last_json_line(path: Path) -> dict[str, Any]:
    for line in reversed(path.read_text("utf-8", errors="replace").splitlines()):
        if line.startswith("{"):
            doc: dict[str, Any] = json.loads(line)
            return doc
    raise ValueError(f"{path}: no JSON summary line")


def cpu_and_rss(samples: list[tuple[float, float, int]], start: float, end: float) -> tuple[float, int]:
    """CPU % of one core and peak working set between ``start`` and ``end`` (unix seconds)."""
    inside = [s for s in samples if start <= s[0] <= end]
    if len(inside) < 2:
        return 0.0, max((s[2] for s in inside), default=0)
    (t0, c0, _), (t1, c1, _) = inside[0], inside[-1]
    cpu = 100.0 * (c1 - c0) / (t1 - t0) if t1 > t0 else 0.0
    return cpu, max(s[2] for s in inside)


def report(summary_path: Path, rows_path: Path, burst_path: Path, samples_path: Path) -> tuple[str, bool]:
    summary = last_json_line(summary_path)
    live = summary.get("live", {})
    sessions = live.get("health", {}).get("sessions", {})
    dropped = int(live.get("queue", {}).get("dropped", 0))
    lost = sum(int(s.get("lost", 0)) for s in sessions.values()) + dropped
    b = json.loads(burst_path.read_text("utf-8"))
    created = 0
    with_cmd = 0
    for line in rows_path.read_text("utf-8").splitlines():
        row = json.loads(line)
        if row.get("ActionType") != "ProcessCreated" or row.get("InitiatingProcessId") != b["pid"]:
            continue
        created += 1
        with_cmd += b["marker"] in str(row.get("ProcessCommandLine") or "")
    count = int(b["count"])
    samples = []
    for line in samples_path.read_text("utf-8").splitlines():
        parts = line.strip().split(",")
        if len(parts) == 3:
            samples.append((float(parts[0]), float(parts[1]), int(float(parts[2]))))
    idle_cpu, idle_rss = cpu_and_rss(samples, b["start"] - 15, b["start"] - 1)
    burst_cpu, burst_rss = cpu_and_rss(samples, b["start"], b["end"] + 2)
    seen, share = created / count, with_cmd / count
    ok = lost == 0 and share >= TARGET_SHARE
    mb = 1024 * 1024
    lines = [
        "### etwsensor live trace: process burst",
        "",
        "| measure | value | target |",
        "|---|---|---|",
        f"| processes started | {count:,} in {b['end'] - b['start']:.1f} s ({b['failed']} failed) "
        "| 2,000 in ~20 s |",
        f"| events lost (ETW counters, lost-event records, queue drops) | {lost:,} | 0 |",
        f"| ProcessCreated rows seen | {created:,} ({seen:.1%}) | |",
        f"| ProcessCreated rows with their command line | {with_cmd:,} ({share:.1%}) | ≥ 99 % |",
        f"| tracer CPU idle / burst (% of one core) | {idle_cpu:.1f} / {burst_cpu:.1f} | |",
        f"| tracer peak RSS idle / burst | {idle_rss / mb:.0f} MB / {burst_rss / mb:.0f} MB | |",
        "",
        f"**{'PASS' if ok else 'FAIL'}**",
    ]
    return "\n".join(lines) + "\n", ok


def main(argv: list[str] | None = None) -> int:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("burst")
    p.add_argument("--count", type=int, default=2000)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--out", type=Path, required=True)
    r = sub.add_parser("report")
    r.add_argument("--summary", type=Path, required=True)
    r.add_argument("--rows", type=Path, required=True)
    r.add_argument("--burst", type=Path, required=True)
    r.add_argument("--samples", type=Path, required=True)
    r.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "burst":
        doc = burst(args.count, args.seconds, args.out)
        print(json.dumps(doc))
        return 0
    text, ok = report(args.summary, args.rows, args.burst, args.samples)
    sys.stdout.write(text)
    return 0 if ok or not args.check else 1


if __name__ == "__main__":
    raise SystemExit(main())
