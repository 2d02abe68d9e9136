"""Heartbeat records: `replay --heartbeat S` as a user runs it, and the schedule with a controlled clock."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from ocsf_json_schema import OcsfJsonSchemaEmbedded, get_ocsf_schema

from etwsensor.alerts.ocsf import OCSF_VERSION
from etwsensor.heartbeat import Heartbeat, HeartbeatRecord, PipelineSnapshot, ruleset_version
from etwsensor.rules import RuleSet

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo.jsonl.zst"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_start_and_stop_always_go_out_and_running_records_only_when_due() -> None:
    sent: list[dict[str, Any]] = []
    clock, cpu = Clock(), Clock()
    beat = Heartbeat(sent.append, 10.0, "test", clock=clock, cpu_clock=cpu)
    beat.start(PipelineSnapshot())
    beat.tick(PipelineSnapshot(events=5))  # 0 s later: not due
    clock.now += 9.9
    assert not beat.due()
    beat.tick(PipelineSnapshot(events=50))
    clock.now += 0.1
    cpu.now += 2.5  # a quarter of one core over the 10 s
    beat.tick(PipelineSnapshot(events=1000, rows=400, alerts=2, events_by_provider={"Process": 600}))
    clock.now += 1.0
    beat.stop(PipelineSnapshot(events=1100, rows=420, alerts=2, events_by_provider={"Process": 650}))
    assert [r["state"] for r in sent] == ["start", "running", "stop"]
    assert [r["sequence"] for r in sent] == [0, 1, 2]
    running, stop = sent[1], sent[2]
    assert running["rates"]["events_per_second"] == 100.0 and running["rates"]["rows_per_second"] == 40.0
    assert running["rates"]["events_per_second_by_provider"] == {"Process": 60.0}
    assert running["process"]["cpu_percent"] == 25.0
    assert stop["interval_seconds"] == 1.0 and stop["rates"]["events_per_second"] == 100.0
    assert stop["rates"]["events_per_second_by_provider"] == {"Process": 50.0}
    assert stop["totals"] == {"events": 1100, "rows": 420, "alerts": 2}
    for record in sent:
        HeartbeatRecord.model_validate(record)


def replay(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "etwsensor", "replay", str(DEMO), "--json-summary", *args],
        capture_output=True, text=True, check=False,
    )  # fmt: skip


def test_replay_sends_heartbeats_on_every_sink_in_its_format(tmp_path: Path) -> None:
    own, ecs, ocsf = tmp_path / "own.ndjson", tmp_path / "ecs.ndjson", tmp_path / "ocsf.ndjson"
    proc = replay(
        "--heartbeat", "0.0001",
        "--sink", f"file:{own}", "--sink", f"file:{ecs}#format=ecs", "--sink", f"file:{ocsf}#format=ocsf",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stderr.strip().splitlines()[-1])
    docs = [json.loads(line) for line in own.read_text().splitlines()]
    beats = [d for d in docs if d.get("record") == "heartbeat"]
    assert len(docs) - len(beats) == summary["alerts"]
    assert beats[0]["state"] == "start" and beats[0]["totals"]["events"] == 0
    assert beats[-1]["state"] == "stop" and beats[-1]["totals"] == {
        "events": summary["events"], "rows": sum(summary["rows"].values()), "alerts": summary["alerts"],
    }  # fmt: skip
    assert all(b["state"] == "running" for b in beats[1:-1])
    builtin, _ = RuleSet.load([], builtin=True)
    version = ruleset_version(builtin.rules)
    assert beats[-1]["rules"] == {"version": version, "count": len(builtin.rules), "errors": 0}
    assert set(beats[-1]["rates"]["events_per_second_by_provider"]) >= {"Process", "Image"}
    stateful = beats[-1]["stateful_rules"]  # the built-in correlation rules' bounded state
    assert stateful and set(stateful) == set(summary["stateful_rules"])
    assert all({"evicted", "late"} <= set(stats) for stats in stateful.values())
    assert beats[-1]["process"]["rss_bytes"] > 0
    for beat in beats:
        HeartbeatRecord.model_validate(beat)

    ecs_beats = [d for d in map(json.loads, ecs.read_text().splitlines()) if d["event"]["kind"] == "metric"]
    assert len(ecs_beats) == len(beats)
    assert ecs_beats[-1]["etwsensor"]["record"]["state"] == "stop"
    schema = OcsfJsonSchemaEmbedded(get_ocsf_schema(version=OCSF_VERSION))
    validator = Draft202012Validator(schema.get_class_schema(class_name="base_event", profiles=[]))
    ocsf_beats = [d for d in map(json.loads, ocsf.read_text().splitlines()) if d["class_uid"] == 0]
    assert len(ocsf_beats) == len(beats)
    for doc in ocsf_beats:
        assert list(validator.iter_errors(doc)) == []


def test_without_heartbeat_only_alerts_go_out(tmp_path: Path) -> None:
    out = tmp_path / "alerts.ndjson"
    proc = replay("--sink", f"file:{out}")
    assert proc.returncode == 0, proc.stderr
    assert all("record" not in json.loads(line) for line in out.read_text().splitlines())
