"""The Windows service, as far as it runs off Windows: its work (``run_service``) with the simulated
advapi32 (start, a reload control, a stop, no session left), what it registers with the SCM, and the CLI's
answers on this OS. The Windows workflow installs and runs the real service."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from etwsensor.cli import app
from etwsensor.decode import load_providers
from etwsensor.service import scm
from etwsensor.service.runner import ServiceControl, run_service
from etwsensor.sources.live import cli as live_cli
from etwsensor.sources.live import structs as S
from etwsensor.sources.live.callback import RecordCallback
from etwsensor.sources.live.lifecycle import EtwSessions
from etwsensor.sources.live.plan import TracePlan
from tests.live.fakes import FakeHost
from tests.live.records import etl_records, event_record
from tests.live.simadvapi import SimulatedAdvapi32

RULE = '// id: t-img\nDeviceImageLoadEvents | where FileName endswith ".dll"\n'


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(live_cli, "POLL_SECONDS", 0.05)
    monkeypatch.setattr(live_cli, "TICK_SECONDS", 0.02)


def wait_for(condition: Callable[[], bool], seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_the_service_traces_reloads_on_its_control_code_and_stops_cleanly(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "img.kql").write_text(RULE)
    out = tmp_path / "alerts.ndjson"
    config = tmp_path / "etwsensor.toml"
    config.write_text(
        f'[rules]\npaths = [{json.dumps(str(rules))}]\nbuiltin = false\n\n'
        f'[output]\nsinks = [{json.dumps("file:" + str(out))}]\nheartbeat_seconds = 0.1\n'
    )
    sim = SimulatedAdvapi32()
    known = {p.guid for p in load_providers()}
    records = [event_record(r) for r in etl_records() if r.guid in known]

    def make(plan: TracePlan, callback: RecordCallback) -> EtwSessions:
        return EtwSessions(plan, callback, sim, cpus=2, version=(10, 0, 26100))

    control = ServiceControl()
    result: list[int] = []
    service = threading.Thread(target=lambda: result.append(run_service(config, control, FakeHost(), make)))
    service.start()
    wait_for(lambda: control.reload_request is not None and "etwsensor-kernel" in sim.sessions)
    for live in records:
        manifest = not live.record.EventHeader.Flags & S.EVENT_HEADER_FLAG_CLASSIC_HEADER
        sim.emit("etwsensor-providers" if manifest else "etwsensor-kernel", live)
    for name in ("etwsensor-kernel", "etwsensor-providers"):
        wait_for(lambda name=name: not sim.sessions[name].pending)  # type: ignore[misc]
    assert control.reload()  # the service's reload control code
    wait_for(lambda: out.exists() and '"record":"reload"' in out.read_text())
    control.stop()  # service stop / system shutdown
    service.join(30)
    assert result == [0]
    assert sim.ours() == [] and sim.open_consumers() == []  # no etwsensor session left
    docs = [json.loads(line) for line in out.read_text().splitlines()]
    beats = [d for d in docs if d.get("record") == "heartbeat"]
    assert beats[0]["state"] == "start" and beats[-1]["state"] == "stop"
    assert beats[-1]["sensor"]["source"].startswith("live:etwsensor-kernel")
    assert any(d.get("rule", {}).get("id") == "t-img" for d in docs)
    reload = next(d for d in docs if d.get("record") == "reload")
    assert reload["trigger"] == "signal" and reload["status"] == "applied" and reload["replan"] is False


def test_a_service_with_an_unusable_config_stops_with_a_usage_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[rules]\npaths = 3\n")
    assert run_service(bad, ServiceControl(), FakeHost(), lambda *_: None) == 2
    none = tmp_path / "none.toml"
    none.write_text("[rules]\nbuiltin = false\n")
    assert run_service(none, ServiceControl(), FakeHost(), lambda *_: None) == 2


def test_what_the_service_registers_with_the_scm() -> None:
    python = r"C:\Program Files\Python311\python.exe"
    binary, args = scm.service_command_line(python, Path(r"C:\etc\my cfg.toml"))
    assert binary == python
    assert args == r'-m etwsensor service run --config "C:\etc\my cfg.toml"'
    actions = scm.failure_actions()
    assert actions["Actions"] == [(1, 5_000), (1, 30_000), (1, 120_000)] and actions["ResetPeriod"] == 86_400
    assert 128 <= scm.RELOAD_CONTROL <= 255  # the range Windows leaves to services


@pytest.mark.parametrize("command", ["status", "start", "stop", "uninstall", "reload"])
def test_off_windows_the_service_commands_say_so_and_exit_2(command: str) -> None:
    result = CliRunner().invoke(app, ["service", command])
    assert result.exit_code == 2 and "Windows only" in result.output


def test_install_checks_the_config_first(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["service", "install", "--config", str(tmp_path / "missing.toml")])
    assert result.exit_code == 2 and "no such config file" in result.output
    good = tmp_path / "ok.toml"
    good.write_text("[rules]\nbuiltin = true\n")
    result = CliRunner().invoke(app, ["service", "install", "--config", str(good)])
    assert result.exit_code == 2 and "Windows only" in result.output
