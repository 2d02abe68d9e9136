"""The CPU ceiling (`--max-cpu`, `[performance] max_cpu_percent`): lowest-value events shed first, counted,
reported, and restored with hysteresis. Every decision runs on a simulated machine (injected wall and CPU
clocks), so nothing here depends on how fast this machine is."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from etwsensor import budget as cpu
from etwsensor.budget import SHED_KINDS, CpuBudget, shed_order
from etwsensor.cli import app
from etwsensor.heartbeat import HeartbeatRecord
from etwsensor.normalize import Normalizer

ROOT = Path(__file__).resolve().parents[2]
EVENT_LOGS = ("Microsoft-Windows-Sysmon", "Microsoft-Windows-Security-Auditing")  # .evtx files, not ETW


class Machine:
    """A simulated host: wall time passes when the pacer sleeps and when work is done, CPU time only with
    work. Each event the normalizer gets costs ``cost`` seconds (``cheap`` after ``busy_events`` of them)."""

    def __init__(self, cost: float, busy_events: int | None = None, cheap: float = 0.0) -> None:
        self.wall = self.cpu = 0.0
        self.cost, self.busy_events, self.cheap = cost, busy_events, cheap
        self.worked = 0

    def sleep(self, seconds: float) -> None:
        self.wall += seconds

    def work(self) -> None:
        self.worked += 1
        busy = self.busy_events is None or self.worked <= self.busy_events
        spent = self.cost if busy else self.cheap
        self.wall += spent
        self.cpu += spent

    def clocks(self) -> cpu.Clocks:
        return cpu.Clocks(lambda: self.wall, lambda: self.cpu, self.sleep)


# --- the decisions, one budget at a time --------------------------------------------------------------


def test_over_the_ceiling_the_lowest_value_kinds_that_get_it_under_are_shed_at_once() -> None:
    m = Machine(0.0)
    alerts: list[dict[str, Any]] = []
    b = CpuBudget(50, SHED_KINDS, check_every=1, clock=lambda: m.wall, cpu_clock=lambda: m.cpu,
                  send=alerts.append, host=("pc1", "id1"))  # fmt: skip
    mix = [("Microsoft-Windows-Kernel-File", "Write")] * 2 + [("FileIo", "Close")] * 2
    mix += [("Microsoft-Windows-Kernel-Registry", "OpenKey")] * 3 + [("Process", "Start")] * 3
    for _ in range(8):  # a full core for 1 s (min_span): 20 % writes, 20 % opens/closes, 30 % key opens
        for provider, name in mix:
            b.admit(provider, name)
        m.wall += 0.125
        m.cpu += 0.125
    b.admit("Process", "Start")
    # 100 % x (1 - 0.2 - 0.2) = 60 % is still over 50 %; without the key opens too, 30 %: three kinds at once.
    assert b.level == 3 and b.state()["shedding"] == ["file_write", "file_io", "registry_query"]
    assert not b.admit("Microsoft-Windows-Kernel-File", "Write") and not b.admit("FileIo", "Close")
    assert not b.admit("Microsoft-Windows-Kernel-Registry", "OpenKey")
    assert b.admit("Microsoft-Windows-Kernel-Registry", "SetValueKey") and b.admit("Image", "Load")
    assert b.shed == {"file_write": 1, "file_io": 1, "registry_query": 1}
    assert [a["rule"]["id"] for a in alerts] == ["etwsensor-cpu-ceiling"]  # one when shedding starts
    assert alerts[0]["table"] == "SensorHealth" and alerts[0]["host"]["name"] == "pc1"
    assert "file_write, file_io, registry_query" in alerts[0]["reason"]


def test_process_starts_and_the_sensors_own_events_are_never_shed_even_when_saturated() -> None:
    m = Machine(0.0)
    alerts: list[dict[str, Any]] = []
    b = CpuBudget(10, SHED_KINDS, check_every=1, clock=lambda: m.wall, cpu_clock=lambda: m.cpu,
                  send=alerts.append)  # fmt: skip
    for _ in range(200):
        m.wall += 0.125
        m.cpu += 0.125
        b.admit("Image", "Load")
    assert b.level == len(SHED_KINDS) and b.saturated
    for provider, name in [("Process", "Start"), ("Process", "End"), ("Process", "DCStart"),
                           ("Microsoft-Windows-Kernel-Process", "ProcessStart"), ("Image", "DCStart"),
                           ("Microsoft-Windows-Kernel-EventTracing", "SessionStop"),
                           ("etwsensor-HostFacts", "ProcessToken"), ("etwsensor-ImageFacts", "ImageFacts"),
                           ("SystemConfigEx", "VolumeMapping")]:  # fmt: skip
        assert b.admit(provider, name), (provider, name)
    assert [a["rule"]["id"] for a in alerts] == ["etwsensor-cpu-ceiling", "etwsensor-cpu-ceiling"]
    assert "still over the ceiling" in alerts[1]["reason"]


def test_a_kind_comes_back_only_when_its_events_would_stay_under_the_ceiling() -> None:
    """Hysteresis: the share a restored kind would add is projected from the events shed in the window."""
    m = Machine(0.0)
    alerts: list[dict[str, Any]] = []
    b = CpuBudget(50, SHED_KINDS, check_every=1, window=5.0, clock=lambda: m.wall, cpu_clock=lambda: m.cpu,
                  send=alerts.append)  # fmt: skip

    def second(cpu_share: float, writes: int, others: int) -> None:
        for _ in range(writes):
            b.admit("Microsoft-Windows-Kernel-File", "Write")
        for _ in range(others):
            b.admit("Process", "Start")
        m.wall += 1.0
        m.cpu += cpu_share
        b.admit("Process", "Start")

    second(0.8, 50, 50)
    assert b.level == 1  # writes shed
    # Now 35 % with writes shed, half the events: writes back would make ~70 %: stays shed.
    for _ in range(12):
        second(0.35, 50, 50)
    assert b.level == 1
    # 18 % with writes shed: writes back would make ~36 %, under 0.8 x 50: restored once a whole window
    # (5 s) is at that load.
    for _ in range(4):
        second(0.18, 50, 50)
    assert b.level == 1
    second(0.18, 50, 50)
    assert b.level == 0
    assert [t["what"] for t in b.state()["transitions"]] == ["shed", "restore"]
    assert [a["rule"]["id"] for a in alerts] == ["etwsensor-cpu-ceiling", "etwsensor-cpu-ceiling-recovered"]
    assert "file_write" in alerts[1]["reason"] and alerts[1]["row"]["ShedEvents"]["file_write"] > 0


def test_kinds_no_rule_reads_are_shed_before_all_others() -> None:
    order = shed_order({"DeviceProcessEvents": {"ProcessCreated"}, "DeviceImageLoadEvents": {"ImageLoaded"},
                        "DeviceFileEvents": {"FileCreated"}})  # fmt: skip
    names = [k.name for k in order]
    # Registry and Win32k rows are read by no rule, nor file writes, deletes or renames: they go first.
    assert names == ["file_write", "registry_query", "file_change", "registry_change", "api_audit",
                     "file_io", "image_load"]  # fmt: skip
    assert [k.name for k in shed_order(None)] == [k.name for k in SHED_KINDS]


def test_the_value_order_covers_every_event_the_normalizer_handles_except_tracking() -> None:
    """Each handled event is either in exactly one shed kind or deliberately never shed."""
    handled = set(Normalizer()._handlers)
    kinds = [(p, e) for k in SHED_KINDS for p, events in k.events.items() for e in events]
    assert len(kinds) == len(set(kinds)) and set(kinds) <= handled
    KP = "Microsoft-Windows-Kernel-Process"
    never = {(p, e) for p, e in handled - set(kinds) if not p.startswith(EVENT_LOGS)}
    assert never == {
        ("Process", "Start"), ("Process", "End"), ("Process", "DCStart"),
        (KP, "ProcessStart"), (KP, "ProcessStop"), (KP, "ProcessRundown"),
        ("Image", "DCStart"), ("FileIo", "FileRundown"), ("Registry", "KCBRundownEnd"),  # start-up state
        ("SystemConfig", "CPU"), ("SystemConfigEx", "SystemPaths"), ("SystemConfigEx", "VolumeMapping"),
        ("etwsensor-HostFacts", "Account"), ("etwsensor-HostFacts", "ProcessToken"),
        ("etwsensor-ImageFacts", "ImageFacts"),
    }  # fmt: skip


# --- through `replay --rate N --max-cpu P` on a generated stream -----------------------------------------


@pytest.fixture(scope="module")
def stream(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30,000 synthetic events (scripts/bench_normalize.py's generator: process, image, registry, file)."""
    spec = importlib.util.spec_from_file_location("bench_normalize", ROOT / "scripts" / "bench_normalize.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    path = tmp_path_factory.mktemp("stream") / "generated.jsonl.zst"
    module.generate(path, 30_000)
    return path


Install = Callable[[Machine], Machine]


@pytest.fixture
def install(monkeypatch: pytest.MonkeyPatch) -> Iterator[Install]:
    """Puts a simulated machine in place of the commands' clocks; each event the normalizer gets is work."""
    holder: list[Machine] = []
    real = Normalizer.process

    def process(self: Normalizer, event: Any) -> Any:
        holder[0].work()
        return real(self, event)

    monkeypatch.setattr(Normalizer, "process", process)

    def put(m: Machine) -> Machine:
        holder[:] = [m]
        monkeypatch.setattr(cpu, "SYSTEM_CLOCKS", m.clocks())
        return m

    yield put


def replay(path: Path, out: Path, *args: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    r = CliRunner().invoke(app, ["replay", str(path), "--json-summary", "--sink", f"file:{out}", *args])
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    assert r.exit_code == 0, r.stderr
    summary = json.loads(r.stderr.strip().splitlines()[-1])
    records = [json.loads(line) for line in out.read_text("utf-8").splitlines()] if out.exists() else []
    return summary, records


def test_replay_over_the_ceiling_sheds_file_io_first_and_reports_every_shed_event(
    stream: Path, tmp_path: Path, install: Install
) -> None:
    install(Machine(0.001))
    free, _ = replay(stream, tmp_path / "free.ndjson", "--rate", "1000")
    m = install(Machine(0.001))  # 1 ms an event at 1,000/s: a full core
    summary, records = replay(stream, tmp_path / "shed.ndjson", "--rate", "1000", "--max-cpu", "50",
                              "--heartbeat", "3600")  # fmt: skip
    shed = summary["shed"]
    assert free["shed"] == {}
    assert shed["max_cpu_percent"] == 50 and shed["shedding"] == ["file_write", "file_io"]
    assert set(shed["shed"]) == {"file_write", "file_io"} and shed["shed_total"] == sum(shed["shed"].values())
    assert shed["cpu_percent"] <= 50  # the last measured window is back under the ceiling
    assert summary["events"] == free["events"] == shed["events_seen"]  # read and counted, shed or not
    # What was not shed made the same rows: every process start, image load and registry change.
    for table in ("DeviceProcessEvents", "DeviceImageLoadEvents", "DeviceRegistryEvents"):
        assert summary["rows_by_action"][table] == free["rows_by_action"][table], table
    assert summary["rows"]["DeviceFileEvents"] < free["rows"]["DeviceFileEvents"]
    health = [r for r in records if r.get("table") == "SensorHealth"]
    assert [h["rule"]["id"] for h in health] == ["etwsensor-cpu-ceiling"]
    beats = [r for r in records if r.get("record") == "heartbeat"]
    assert beats[-1]["state"] == "stop" and beats[-1]["shed"] == shed["shed"]
    for beat in beats:
        HeartbeatRecord.model_validate(beat)
    assert m.worked == free["events"] - shed["shed_total"]  # a shed event costs no normalizing


def test_replay_recovers_when_the_load_falls_and_the_config_sets_the_ceiling(
    stream: Path, tmp_path: Path, install: Install
) -> None:
    config = tmp_path / "etwsensor.toml"
    config.write_text("[performance]\nmax_cpu_percent = 50\n", encoding="utf-8")
    install(Machine(0.001, busy_events=2_000, cheap=0.0001))
    summary, records = replay(stream, tmp_path / "alerts.ndjson", "--rate", "1000", "--config", str(config))
    shed = summary["shed"]
    assert shed["max_cpu_percent"] == 50 and shed["peak_level"] >= 1
    assert shed["level"] == 0 and shed["shedding"] == [] and shed["shed_total"] > 0
    moves = [t["what"] for t in shed["transitions"]]
    assert moves[0] == "shed" and moves[-1] == "restore" and len(moves) <= 6  # no flapping
    health = [r["rule"]["id"] for r in records if r.get("table") == "SensorHealth"]
    assert health == ["etwsensor-cpu-ceiling", "etwsensor-cpu-ceiling-recovered"]


def test_a_ceiling_must_be_positive(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[performance]\nmax_cpu_percent = 0\n", encoding="utf-8")
    demo = ROOT / "examples" / "demo.jsonl.zst"
    r = CliRunner().invoke(app, ["replay", str(demo), "--config", str(config)])
    assert r.exit_code == 2 and "max_cpu_percent" in r.stderr
