"""The CPU ceiling in the live loop (`trace --max-cpu`), with the simulated advapi32 and a simulated machine:
each record that arrives is a millisecond of the host's time (1,000 events/s), each event normalized costs
CPU, so the share and every decision are the same whatever this machine's speed."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from etwsensor import budget as cpu
from etwsensor.heartbeat import HeartbeatRecord
from etwsensor.normalize import Normalizer
from etwsensor.service.runner import ServiceControl, run_service
from etwsensor.sources.live import cli as live_cli
from etwsensor.sources.live.callback import RecordCallback
from etwsensor.sources.live.lifecycle import EtwSessions
from etwsensor.sources.live.plan import TracePlan
from tests.live.fakes import FakeHost
from tests.live.simadvapi import SimulatedAdvapi32
from tests.live.test_live_command import _feed, _records, run


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(live_cli, "POLL_SECONDS", 0.05)
    monkeypatch.setattr(live_cli, "TICK_SECONDS", 0.02)


class Host:
    """Wall time: 1 ms per event the worker offers the budget (the host's rate, 1,000 events/s); CPU:
    ``cost`` per event it lets through. Charged where the worker decides, so the reorder window's timing
    does not move any decision."""

    def __init__(self, cost: float) -> None:
        self.wall = self.cpu = 0.0
        self.cost = cost
        self.normalized = 0

    def clocks(self) -> cpu.Clocks:
        return cpu.Clocks(lambda: self.wall, lambda: self.cpu, lambda seconds: None)


@pytest.fixture
def host(monkeypatch: pytest.MonkeyPatch) -> Host:
    h = Host(0.0008)  # 0.8 ms an event at 1,000 events/s: 80 % of a core
    admit, process = cpu.CpuBudget.admit, Normalizer.process

    def admitted(self: cpu.CpuBudget, provider: str, name: str) -> bool:
        h.wall += 0.001
        ok = admit(self, provider, name)
        if ok:
            h.cpu += h.cost
        return ok

    def normalized(self: Normalizer, event: Any) -> Any:
        h.normalized += 1
        return process(self, event)

    monkeypatch.setattr(cpu.CpuBudget, "admit", admitted)
    monkeypatch.setattr(Normalizer, "process", normalized)
    monkeypatch.setattr(cpu, "SYSTEM_CLOCKS", h.clocks())
    return h


def trace_over_ceiling(tmp_path: Path, max_cpu_percent: float = 78) -> tuple[int, list[dict[str, Any]]]:
    """``etwsensor trace --max-cpu`` over the perfview trace's records on the simulated advapi32: the exit
    code and the documents it sent (the summary is the last line of stderr)."""
    sim = SimulatedAdvapi32()
    records = _records()

    def drive() -> None:
        _feed(sim, records)
        (tmp_path / "stop").touch()

    options = live_cli.LiveOptions(heartbeat_seconds=3600, max_cpu_percent=max_cpu_percent)
    return run(tmp_path, sim, drive, options=options, duration=120)


def test_trace_over_its_ceiling_sheds_what_no_rule_reads_first_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], host: Host
) -> None:
    code, docs = trace_over_ceiling(tmp_path)
    assert code == 0
    summary = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    shed = summary["shed"]
    # The test's only rule reads image loads: every other kind goes first, image loads last. The perfview
    # trace is mostly rundowns (never shed); of what may be shed it has file opens/closes and image loads.
    assert shed["order"][-1] == "image_load"
    assert shed["max_cpu_percent"] == 78 and shed["peak_level"] >= 2 and shed["shed"].get("file_io", 0) > 0
    assert set(shed["shed"]) <= set(shed["order"][: shed["peak_level"]])
    assert "image_load" not in shed["shed"] or shed["peak_level"] == len(shed["order"])
    assert shed["events_seen"] == summary["events"]  # every event is counted, shed or processed
    assert host.normalized == summary["events"] - shed["shed_total"]  # a shed event is never normalized
    health = [d for d in docs if d.get("table") == "SensorHealth"]
    assert health and health[0]["rule"]["id"] == "etwsensor-cpu-ceiling"
    assert "shedding" in health[0]["reason"]
    beats = [d for d in docs if d.get("record") == "heartbeat"]
    assert beats[-1]["state"] == "stop" and beats[-1]["shed"] == shed["shed"]
    HeartbeatRecord.model_validate(beats[-1])
    if "image_load" not in shed["shed"]:  # the kind the rule reads made its rows and alerts
        assert summary["rows"]["DeviceImageLoadEvents"] > 0 and summary["alerts"] > 0


def test_trace_without_a_ceiling_sheds_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], host: Host
) -> None:
    sim = SimulatedAdvapi32()
    records = _records()[:500]

    def drive() -> None:
        _feed(sim, records)
        (tmp_path / "stop").touch()

    code, docs = run(tmp_path, sim, drive, duration=120)
    assert code == 0
    summary = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert summary["shed"] == {} and host.normalized == summary["events"]
    assert not [d for d in docs if d.get("table") == "SensorHealth" and "cpu" in d["rule"]["id"]]


def test_the_service_takes_its_ceiling_from_the_config_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], host: Host
) -> None:
    out = tmp_path / "alerts.ndjson"
    config = tmp_path / "etwsensor.toml"
    config.write_text(f'[output]\nsinks = [{json.dumps("file:" + str(out))}]\n\n'
                      "[performance]\nmax_cpu_percent = 50\n")  # fmt: skip
    sim = SimulatedAdvapi32()

    def make(plan: TracePlan, callback: RecordCallback) -> EtwSessions:
        return EtwSessions(plan, callback, sim, cpus=2, version=(10, 0, 26100))

    control = ServiceControl()
    result: list[int] = []
    service = threading.Thread(target=lambda: result.append(run_service(config, control, FakeHost(), make)))
    service.start()
    _feed(sim, _records())  # waits for the sessions, then until they are drained
    control.stop()
    service.join(60)
    assert result == [0]
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    summary = next(doc for doc in reversed(lines) if "live" in doc)  # the service also logs JSON lines
    assert summary["shed"]["max_cpu_percent"] == 50 and summary["shed"]["shed_total"] > 0
    docs = [json.loads(line) for line in out.read_text().splitlines()]
    assert any(d.get("rule", {}).get("id") == "etwsensor-cpu-ceiling" for d in docs)
