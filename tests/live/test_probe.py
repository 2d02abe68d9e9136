"""The Win32k start-up probe: silent when the events arrive, one health alert and a summary entry when
they cannot be enabled or none arrive, nothing at all when no rule reads DeviceEvents."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from etwsensor.events import RawEvent
from etwsensor.sources.live.plan import build_plan
from etwsensor.sources.live.probe import UNAVAILABLE_RULE, Win32kProbe

T = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
WITH = build_plan({"DeviceEvents": {"SetWindowsHookExApiCall"}})
WITHOUT = build_plan({"DeviceProcessEvents": {"ProcessCreated"}})


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def hook_event(pid: int) -> RawEvent:
    return RawEvent(
        guid="8c416c79-d49b-4f01-a467-e56d3aa8234c",
        provider="Microsoft-Windows-Win32k",
        name="SetWindowsHookEx",
        id=1002,
        opcode=None,
        version=0,
        ts=T,
        pid=pid,
        tid=1,
        cpu=0,
        fields={"FilterType": 13, "pstrLib": "", "hmod": 0, "pfnFilterProc": 1, "ReturnValue": 2},
    )


def probe(plan: Any, trigger: Any = None) -> tuple[Win32kProbe, list[dict[str, Any]], Clock]:
    alerts: list[dict[str, Any]] = []
    clock = Clock()
    p = Win32kProbe(
        plan,
        alerts.append,
        ("ws01", "d1"),
        trigger=trigger,
        grace=30,
        own_pid=777,
        clock=lambda: T,
        monotonic=clock,
    )
    return p, alerts, clock


def test_the_probe_hook_arrives_it_is_dropped_and_nothing_is_said() -> None:
    p, alerts, clock = probe(WITH, trigger=lambda: None)
    p.start()
    assert p.observe(hook_event(777)) is True  # our own test hook: not host activity
    assert p.observe(hook_event(4242)) is False  # a real one goes on to the normalizer
    clock.now = 300
    p.poll()
    assert alerts == [] and p.state() == {
        "provider": "Microsoft-Windows-Win32k",
        "status": "receiving",
        "events": 2,
        "reason": "",
    }


def test_nothing_arriving_is_said_once() -> None:
    p, alerts, clock = probe(WITH, trigger=lambda: None)
    p.start()
    clock.now = 29
    p.poll()
    assert alerts == [] and p.status == "probing"
    for now in (30, 60, 90):
        clock.now = now
        p.poll()
    [alert] = alerts
    assert alert["rule"]["id"] == UNAVAILABLE_RULE.id and alert["table"] == "SensorHealth"
    assert "within 30 s" in alert["row"]["Reason"]
    assert p.state()["status"] == "unavailable"
    p.observe(hook_event(4242))  # late arrival: recovers, says nothing more
    assert p.status == "receiving" and len(alerts) == 1


def test_a_refused_hook_or_enable_is_said_at_once() -> None:
    p, alerts, _ = probe(WITH, trigger=lambda: "SetWindowsHookExW failed, error 5")
    p.start()
    p.enable_failed("EnableTraceEx2: access denied")
    [alert] = alerts
    assert "error 5" in alert["row"]["Reason"] and p.reason.startswith("the test hook could not be set")


def test_no_device_events_rule_no_probe() -> None:
    called: list[int] = []
    p, alerts, clock = probe(WITHOUT, trigger=lambda: called.append(1))
    p.start()
    clock.now = 1000
    p.poll()
    p.enable_failed("x")
    assert (called, alerts, p.state()["status"]) == ([], [], "not planned")
