"""The trace command's live path on Linux: everything real but advapi32, which is simulated.

The simulated sessions deliver the perfview .etl's records through the lifecycle's EVENT_RECORD callback on
their ProcessTrace threads; the queue, worker, reorder window, watchdog, recording, sinks and summary run as
on Windows. Each way a trace ends (stop file, --duration, Ctrl-C, every session lost) is driven here.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from etwsensor.config import load_settings
from etwsensor.decode import load_providers
from etwsensor.pipeline import Detector, replay, suppressor_from
from etwsensor.rules import RuleSet
from etwsensor.sources.live import cli as live_cli
from etwsensor.sources.live import structs as S
from etwsensor.sources.live.callback import RecordCallback
from etwsensor.sources.live.lifecycle import EtwSessions
from etwsensor.sources.live.plan import TracePlan, plan_for_rules
from etwsensor.sources.recording import RecordingReader
from tests.live.fakes import FakeHost
from tests.live.records import LiveRecord, etl_records, event_record
from tests.live.simadvapi import SimulatedAdvapi32

RULE = (
    "// id: t-img\n// severity: low\n"
    'DeviceImageLoadEvents | where FileName endswith ".dll" | project Timestamp, FileName, FolderPath\n'
)
KERNEL, PROVIDERS = "etwsensor-kernel", "etwsensor-providers"


class Collect:
    def __init__(self) -> None:
        self.alerts: list[dict[str, object]] = []

    def send(self, alert: dict[str, object]) -> None:
        self.alerts.append(alert)


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(live_cli, "POLL_SECONDS", 0.05)
    monkeypatch.setattr(live_cli, "TICK_SECONDS", 0.02)


def _ruleset(tmp_path: Path) -> RuleSet:
    (tmp_path / "rules").mkdir(parents=True, exist_ok=True)
    (tmp_path / "rules" / "img.kql").write_text(RULE, encoding="utf-8")
    ruleset, failures = RuleSet.load([tmp_path / "rules"], builtin=False)
    assert not failures
    return ruleset


def _records() -> list[LiveRecord]:
    known = {p.guid for p in load_providers()}
    return [event_record(r) for r in etl_records() if r.guid in known]


def _wait(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.005)


def _feed(sim: SimulatedAdvapi32, records: list[LiveRecord]) -> None:
    """Classic records into the kernel session, manifest ones into the providers session, as Windows would."""
    for live in records:
        manifest = not live.record.EventHeader.Flags & S.EVENT_HEADER_FLAG_CLASSIC_HEADER
        name = PROVIDERS if manifest else KERNEL
        _wait(lambda name=name: name in sim.sessions)  # type: ignore[misc]
        sim.emit(name, live)
    # A slice may hold records of one session only: the other may still be starting.
    for name in (KERNEL, PROVIDERS):
        _wait(lambda name=name: name in sim.sessions)  # type: ignore[misc]
        assert sim.wait_drained(name)


def run(
    tmp_path: Path,
    sim: SimulatedAdvapi32,
    drive: Callable[[], None],
    *,
    duration: float | None = None,
    record: Path | None = None,
    host: FakeHost | None = None,
    ruleset: RuleSet | None = None,
    options: live_cli.LiveOptions | None = None,
) -> tuple[int, list[dict[str, Any]]]:
    """`trace` with the simulated advapi32; ``drive`` runs beside it (feeding, tampering, stopping)."""
    rules = ruleset or _ruleset(tmp_path)
    plan = plan_for_rules(rules)

    def make(p: TracePlan, callback: RecordCallback) -> EtwSessions:
        return EtwSessions(p, callback, sim, cpus=2, version=(10, 0, 26100))

    alerts_file = tmp_path / "alerts.ndjson"
    driver = threading.Thread(target=drive, daemon=True)
    driver.start()
    code = live_cli.run_live(
        plan,
        rules,
        load_settings(None),
        [f"file:{alerts_file}"],
        record,
        duration,
        True,
        host or FakeHost(),
        make,
        tmp_path / "stop",
        options or live_cli.LiveOptions(),
    )
    driver.join(10)
    lines = alerts_file.read_text("utf-8").splitlines() if alerts_file.exists() else []
    return code, [json.loads(line) for line in lines]


def test_trace_records_survives_an_outside_stop_and_ends_on_the_stop_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sim = SimulatedAdvapi32()
    records = _records()
    half = len(records) // 2

    def drive() -> None:
        _feed(sim, records[:half])
        first = sim.sessions[KERNEL]
        sim.stop_from_outside(KERNEL)  # `logman stop etwsensor-kernel -ets` mid-run
        _wait(lambda: KERNEL in sim.sessions and sim.sessions[KERNEL] is not first)  # restarted
        _feed(sim, records[half:])
        sim.sessions[PROVIDERS].lose_at_stop = 4  # lost in the last flush: only STOP's counters have them
        (tmp_path / "stop").touch()

    recording = tmp_path / "live.jsonl.zst"
    code, alerts = run(tmp_path, sim, drive, record=recording)
    assert code == 0
    assert sim.ours() == [] and sim.open_consumers() == [] and sim.violations == []
    err = capsys.readouterr().err.strip().splitlines()
    summary = json.loads(err[-1])
    live = summary["live"]
    assert live["ended"] == "stop file"
    assert err[-2] == f"recorded {summary['events']} events to {recording}"
    assert live["queue"]["dropped"] == 0 and live["queue"]["offered"] == len(records) > 5000
    health = live["health"]["sessions"]
    assert health[KERNEL]["restarts"] == 1 and health[KERNEL]["state"] == "running"
    assert health[PROVIDERS]["losses"] == {"EventsLost": 4}  # the final counters reached the summary
    assert [t["state"] for t in live["health"]["transitions"]] == ["stopped", "running"]
    assert live["win32k"]["status"] == "not planned"  # no rule reads DeviceEvents: no probe

    tamper = [a for a in alerts if a["table"] == "SensorHealth"]
    assert [a["rule"]["id"] for a in tamper] == ["etwsensor-etw-session-tamper"]
    assert tamper[0]["sensor"]["source"] == f"live:{KERNEL}"
    detections = sorted(a["alert_id"] for a in alerts if a["table"] != "SensorHealth")
    assert 0 < len(detections) <= 35  # 35 dll loads in the trace, less what the default suppression holds

    reader = RecordingReader(recording)
    assert reader.header.host.name == "ws01" and reader.header.sids == {
        "S-1-5-21-1-2-3-1001": "CONTOSO\\alice"
    }
    replayed = Collect()
    sup = load_settings(None).suppression
    per_rule = {k: (v.window_seconds, v.key_columns) for k, v in sup.rules.items()}
    suppressor = suppressor_from(sup.window_seconds, sup.key_columns, per_rule)
    replay([recording], Detector(_ruleset(tmp_path / "r"), "x", None, suppressor), [replayed])
    assert sorted(str(a["alert_id"]) for a in replayed.alerts) == detections


def test_duration_ends_the_trace_with_the_summary_and_no_session_left(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sim = SimulatedAdvapi32()
    code, _ = run(tmp_path, sim, lambda: None, duration=0.3)
    assert code == 0 and sim.ours() == [] and sim.open_consumers() == []
    summary = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert summary["live"]["ended"] == "duration"


def test_ctrl_c_while_tracing_exits_0_with_the_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sim = SimulatedAdvapi32()
    records = _records()[:500]

    def drive() -> None:
        _feed(sim, records)
        signal.raise_signal(signal.SIGINT)  # Ctrl-C: Python runs its handler in the main thread

    code, _ = run(tmp_path, sim, drive)
    assert code == 0 and sim.ours() == [] and sim.open_consumers() == []
    summary = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert summary["live"]["ended"] == "Ctrl-C" and summary["live"]["queue"]["offered"] == 500


def test_ctrl_c_during_start_waits_for_the_call_then_stops_everything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sim = SimulatedAdvapi32()
    real_open = sim.OpenTraceW

    def open_with_ctrl_c(logfile: Any) -> int:
        signal.raise_signal(signal.SIGINT)  # Ctrl-C while OpenTraceW runs
        time.sleep(0.01)
        return real_open(logfile)

    sim.OpenTraceW = open_with_ctrl_c  # type: ignore[method-assign]
    code, _ = run(tmp_path, sim, lambda: None)
    assert code == 0
    assert sim.ours() == [] and sim.open_consumers() == [] and sim.violations == []
    summary = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert summary["live"]["ended"] == "Ctrl-C"


def test_sessions_that_cannot_be_restarted_end_the_trace_with_exit_3(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(live_cli, "BACKOFF", (0.01, 0.02))
    monkeypatch.setattr(live_cli, "MAX_RESTART_FAILURES", 3)
    sim = SimulatedAdvapi32()

    def drive() -> None:
        _wait(lambda: PROVIDERS in sim.sessions and bool(sim.consumers_of(PROVIDERS)))
        sim.elevated = False  # every restart from now on: ERROR_ACCESS_DENIED
        sim.stop_from_outside(KERNEL)
        sim.stop_from_outside(PROVIDERS)

    code, alerts = run(tmp_path, sim, drive)
    assert code == live_cli.EXIT_BLIND == 3
    assert sim.ours() == [] and sim.open_consumers() == []
    rules = sorted(a["rule"]["id"] for a in alerts)
    assert rules == ["etwsensor-etw-session-tamper"] * 2 + ["etwsensor-sensor-blind"] * 2
    summary = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert summary["live"]["ended"] == "every session lost"
    assert {s["state"] for s in summary["live"]["health"]["sessions"].values()} == {"failed"}


def test_a_session_that_cannot_start_stops_the_others_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sim = SimulatedAdvapi32()
    for i in range(64):
        sim.add_foreign(f"Other-{i}")
    code, _ = run(tmp_path, sim, lambda: None)
    assert code == 2 and sim.ours() == []
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "EtwMaxLoggers" in err and "and 0 more" not in err


def test_the_recording_header_takes_the_os_pointer_size_not_the_interpreters(tmp_path: Path) -> None:
    sim = SimulatedAdvapi32()
    recording = tmp_path / "r.jsonl"
    code, _ = run(
        tmp_path, sim, lambda: None, duration=0.1, record=recording, host=FakeHost(os_pointer_size=4)
    )
    assert code == 0 and RecordingReader(recording).header.pointer_size == 4


def test_heartbeats_go_out_at_start_while_quiet_and_at_stop_in_the_sinks_format(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sim = SimulatedAdvapi32()
    records = _records()[:300]

    def drive() -> None:
        _feed(sim, records)
        time.sleep(0.3)  # a quiet host: heartbeats still go out
        (tmp_path / "stop").touch()

    options = live_cli.LiveOptions(alert_format="ecs", heartbeat_seconds=0.05)
    # --duration only as a bound: a driver that fails under load ends the trace instead of hanging it
    code, docs = run(tmp_path, sim, drive, options=options, duration=120)
    assert code == 0
    beats = [d["etwsensor"]["record"] for d in docs if d["event"]["kind"] == "metric"]
    assert [b["state"] for b in beats[:1] + beats[-1:]] == ["start", "stop"] and len(beats) >= 4
    assert beats[-1]["totals"]["events"] > 250 and beats[-1]["queue_depth"] == 0
    assert beats[-1]["sensor"]["source"] == f"live:{KERNEL},{PROVIDERS}"
    assert sum(beats[-1]["rates"]["events_per_second_by_provider"].values()) >= 0
    assert set(beats[-1]["loss"]) == {"events_lost", "realtime_buffers_lost", "queue_dropped"}
    summary = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert summary["live"]["ended"] == "stop file"  # not the safety bound
    assert summary["events"] == beats[-1]["totals"]["events"]


def test_a_rule_reload_while_tracing_swaps_rules_between_events(tmp_path: Path) -> None:
    from etwsensor.rules.reload import ReloadOutcome, RuleReloader

    rules_dir = tmp_path / "rules"
    ruleset = _ruleset(tmp_path)  # writes rules/img.kql
    reloader = RuleReloader(
        [rules_dir], lambda: ReloadOutcome(*RuleSet.load([rules_dir], builtin=False)), interval=0.05
    )
    reloader.start()
    sim = SimulatedAdvapi32()
    records = _records()

    def drive() -> None:
        _feed(sim, records[:400])
        (rules_dir / "exe.kql").write_text(
            '// id: t-exe\nDeviceImageLoadEvents | where FileName endswith ".exe"\n', encoding="utf-8"
        )
        _wait(lambda: reloader.reloads == 1)
        _feed(sim, records[400:])
        (tmp_path / "stop").touch()

    options = live_cli.LiveOptions(reloader=reloader, plan_of=plan_for_rules)
    code, docs = run(tmp_path, sim, drive, ruleset=ruleset, options=options, duration=120)
    reloader.stop()
    assert code == 0
    reloads = [d for d in docs if d.get("record") == "reload"]
    assert len(reloads) == 1 and reloads[0]["status"] == "applied" and reloads[0]["rules"]["count"] == 2
    assert reloads[0]["replan"] is False  # image-load rules both: the same sessions serve them
    at = docs.index(reloads[0])
    assert not any(d.get("rule", {}).get("id") == "t-exe" for d in docs[:at])
    assert any(d.get("rule", {}).get("id") == "t-exe" for d in docs[at:])


def test_a_reload_that_needs_other_providers_says_so(tmp_path: Path) -> None:
    from etwsensor.pipeline import apply_reload
    from etwsensor.rules.reload import ReloadOutcome, RuleReloader

    rules_dir = tmp_path / "rules"
    ruleset = _ruleset(tmp_path)
    plan = plan_for_rules(ruleset)
    (rules_dir / "reg.kql").write_text("// id: t-reg\nDeviceRegistryEvents | where RegistryKey has \"Run\"\n")
    reloader = RuleReloader([rules_dir], lambda: ReloadOutcome(*RuleSet.load([rules_dir], builtin=False)))
    reloader.request()
    reloader.start()
    _wait(lambda: reloader.ready)
    reloader.stop()
    sink = Collect()
    detector = Detector(ruleset, "live")

    def replan(new: RuleSet) -> dict[str, Any]:
        return {"replan": plan_for_rules(new) != plan}

    apply_reload(reloader, detector, [], [sink], ruleset.row_gates(), replan)
    assert sink.alerts[0]["replan"] is True and sink.alerts[0]["status"] == "applied"


def test_a_device_events_rule_without_win32k_events_is_said_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(live_cli, "PROBE_GRACE_SECONDS", 0.2)
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "hook.kql").write_text(
        '// id: t-hook\nDeviceEvents | where ActionType == "SetWindowsHookExApiCall"\n', encoding="utf-8"
    )
    ruleset, failures = RuleSet.load([tmp_path / "rules"], builtin=False)
    assert not failures and plan_for_rules(ruleset).provider("Microsoft-Windows-Win32k") is not None
    sim = SimulatedAdvapi32()
    records = _records()

    def drive() -> None:
        _feed(sim, records)
        time.sleep(0.5)  # past the probe's grace, polled every 0.05 s
        (tmp_path / "stop").touch()

    code, alerts = run(tmp_path, sim, drive, ruleset=ruleset)
    assert code == 0
    summary = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    # The perfview trace has no Win32k events: said once (one alert, the summary), the other tables traced.
    win32k = summary["live"]["win32k"]
    assert (win32k["status"], win32k["events"]) == ("unavailable", 0)
    assert win32k["reason"].startswith("no Win32k API audit event arrived within 0.2 s")
    probe = [a for a in alerts if a["rule"]["id"] == "etwsensor-win32k-audit-unavailable"]
    assert len(probe) == 1 and probe[0]["table"] == "SensorHealth"
    assert summary["rows"]["DeviceProcessEvents"] > 0
