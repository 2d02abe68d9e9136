"""The CPU ceiling in the live loop (`trace --max-cpu`), with the simulated advapi32 and a simulated machine:
each record that arrives is a millisecond of the host's time (1,000 events/s), each event normalized costs
CPU, so the share and every decision are the same whatever this machine's speed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from etwsensor import budget as cpu
from etwsensor.decode import Decoder
from etwsensor.heartbeat import HeartbeatRecord
from etwsensor.normalize import Normalizer
from etwsensor.sources.live import cli as live_cli
from tests.live.simadvapi import SimulatedAdvapi32
from tests.live.test_live_command import _feed, _records, run


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(live_cli, "POLL_SECONDS", 0.05)
    monkeypatch.setattr(live_cli, "TICK_SECONDS", 0.02)


class Host:
    """Wall time: 1 ms per record decoded (the host's event rate); CPU: ``cost`` per event normalized."""

    def __init__(self, cost: float) -> None:
        self.wall = self.cpu = 0.0
        self.cost = cost
        self.normalized = 0

    def clocks(self) -> cpu.Clocks:
        return cpu.Clocks(lambda: self.wall, lambda: self.cpu, lambda seconds: None)


@pytest.fixture
def host(monkeypatch: pytest.MonkeyPatch) -> Host:
    h = Host(0.0008)  # 0.8 ms an event at 1,000 events/s: 80 % of a core
    decode, process = Decoder.decode, Normalizer.process

    def decoded(self: Decoder, rec: Any) -> Any:
        h.wall += 0.001
        return decode(self, rec)

    def normalized(self: Normalizer, event: Any) -> Any:
        h.cpu += h.cost
        h.normalized += 1
        return process(self, event)

    monkeypatch.setattr(Decoder, "decode", decoded)
    monkeypatch.setattr(Normalizer, "process", normalized)
    monkeypatch.setattr(cpu, "SYSTEM_CLOCKS", h.clocks())
    return h


def test_trace_over_its_ceiling_sheds_what_no_rule_reads_first_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], host: Host
) -> None:
    sim = SimulatedAdvapi32()
    records = _records()

    def drive() -> None:
        _feed(sim, records)
        (tmp_path / "stop").touch()

    options = live_cli.LiveOptions(heartbeat_seconds=3600, max_cpu_percent=50)
    code, docs = run(tmp_path, sim, drive, options=options, duration=120)
    assert code == 0
    summary = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    shed = summary["shed"]
    # The test's only rule reads image loads: every other kind goes first, image loads last.
    assert shed["order"][-1] == "image_load" and "image_load" not in shed["shed"]
    assert shed["max_cpu_percent"] == 50 and shed["peak_level"] >= 1 and shed["shed_total"] > 0
    assert set(shed["shed"]) <= set(shed["order"][: shed["peak_level"]])
    assert shed["events_seen"] == summary["events"]  # every event is counted, shed or processed
    assert host.normalized == summary["events"] - shed["shed_total"]  # a shed event is never normalized
    health = [d for d in docs if d.get("table") == "SensorHealth"]
    assert health and health[0]["rule"]["id"] == "etwsensor-cpu-ceiling"
    assert "shedding" in health[0]["reason"]
    beats = [d for d in docs if d.get("record") == "heartbeat"]
    assert beats[-1]["state"] == "stop" and beats[-1]["shed"] == shed["shed"]
    HeartbeatRecord.model_validate(beats[-1])
    # Image-load alerts are all there: the kind the rule reads was never shed.
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
