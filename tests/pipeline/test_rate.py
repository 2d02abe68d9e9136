"""`replay --rate N`: the stream is held to N events/s (a live host's pace) and the summary tells the CPU
that pace costs. Only lower bounds on wall time are asserted: pacing can make a run slower, never faster."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from etwsensor.pipeline import Pacer

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo.jsonl.zst"


def test_the_pacer_sleeps_exactly_the_time_it_is_ahead() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    pacer = Pacer(1000.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(640):
        pacer.step()
        now[0] += 0.0001  # the pipeline takes 0.1 ms per event: ten times faster than the rate
    assert len(slept) == 10  # a look at the clock every 64 events
    assert abs(now[0] - 0.640) < 0.001  # 640 events at 1,000/s take 0.64 s
    assert abs(pacer.slept - 0.640 * 0.9) < 0.001


def test_replay_at_a_rate_gives_the_same_alerts_and_its_cpu_share() -> None:
    def run(*extra: str) -> tuple[list[str], dict]:
        proc = subprocess.run(
            [sys.executable, "-m", "etwsensor", "replay", str(DEMO), "--json-summary", *extra],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        return proc.stdout.splitlines(), json.loads(proc.stderr.strip().splitlines()[-1])

    fast, free = run()
    paced, summary = run("--rate", "4000")
    assert [json.loads(a)["alert_id"] for a in paced] == [json.loads(a)["alert_id"] for a in fast]
    timing = summary["timing"]
    assert timing["rate_limit"] == 4000
    assert timing["wall_seconds"] >= (summary["events"] - 64) / 4000  # held to the rate
    assert 0 < timing["cpu_percent"] <= 100 and timing["cpu_seconds"] <= timing["wall_seconds"] + 0.5
    assert free["timing"]["rate_limit"] is None
