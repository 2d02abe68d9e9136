"""The three DeviceEvents keylogging rules on rows the normalizer makes from Win32k audit events:
each keylogger technique fires, the benign look-alikes (a foreground game, an IME, an accessibility
tool) and the near misses stay quiet."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from etwsensor.events import RawEvent
from etwsensor.normalize import Normalizer
from etwsensor.rules import RuleSet
from tests.normalize.normalize_builders import classic_start, ev

NOW = datetime(2026, 11, 27, 13, 0, tzinfo=UTC)
W = "Microsoft-Windows-Win32k"
POLLING, HOOK, RAW = "0010", "0011", "0012"
IMAGES = {
    3000: r"C:\Users\alice\AppData\Local\Temp\rk.exe",
    3100: r"C:\Program Files (x86)\Steam\steamapps\common\Arena\arena.exe",
    3200: r"C:\Program Files\Contoso IME\imebroker.exe",
    3300: r"C:\Program Files\Contoso Access\reader.exe",
    3400: r"C:\Windows\System32\osk.exe",
}


def poll(pid: int, ms: float, calls: int, since: int) -> RawEvent:
    return ev(
        W,
        "GetAsyncKeyState",
        ms,
        pid=pid,
        version=0,
        PID=pid,
        MsSinceLastKeyEvent=since,
        BackgroundCallCount=calls,
    )


def hook(pid: int, filter_type: int, lib: str = "", ok: int = 0x2004E) -> RawEvent:
    return ev(
        W,
        "SetWindowsHookEx",
        1,
        pid=pid,
        version=0,
        FilterType=filter_type,
        pstrLib=lib,
        hmod=0,
        pfnFilterProc=0x7FF81230,
        ReturnValue=ok,
    )


def raw(pid: int, flags: int, visible: int, usage: int = 6, ok: int = 1) -> RawEvent:
    return ev(
        W,
        "RegisterRawInputDevices",
        1,
        pid=pid,
        version=0,
        ReturnValue=ok,
        UsagePage=1,
        Usage=usage,
        Flags=flags,
        hwndTarget=0x100A,
        cWindows=max(visible, 1),
        cVisWindows=visible,
        ProcessId=pid,
    )


def hits(events: list[RawEvent]) -> list[tuple[str, int]]:
    rules, failures = RuleSet.load([], builtin=True)
    assert failures == []
    normalizer = Normalizer()
    rows: list[tuple[str, dict[str, Any]]] = []
    for pid, path in IMAGES.items():
        rows += normalizer.process(classic_start(pid, 1000, path.rsplit("\\", 1)[1], f'"{path}"', ms=0))
    for e in events:
        rows += normalizer.process(e)
    rows += normalizer.flush()
    out = []
    for table, row in rows:
        for m in rules.evaluate(table, row, NOW):
            if m.rule.id[-4:] in (POLLING, HOOK, RAW):
                out.append((m.rule.id[-4:], row["InitiatingProcessId"]))
    return out


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        # A background loop: thousands of calls, the process never gets key input itself.
        ([poll(3000, i * 200, 250, 60_000 + i * 200) for i in range(20)], [(POLLING, 3000)]),
        # The same rate from a game with the focus: its own key events keep MsSinceLastKeyEvent small.
        ([poll(3100, i * 200, 250, 30 + i % 200) for i in range(20)], []),
        # A background loop too slow to matter: 20 x 20 calls in a window.
        ([poll(3300, i * 200, 20, 60_000) for i in range(20)], []),
        ([hook(3000, 13)], [(HOOK, 3000)]),  # WH_KEYBOARD_LL from Temp
        ([hook(3000, 13, ok=0)], []),  # the call failed
        ([hook(3000, 14)], []),  # WH_MOUSE_LL is not a keyboard hook
        ([hook(3000, 2)], []),  # WH_KEYBOARD without a DLL: the process's own threads only
        ([hook(3200, 2, r"C:\Program Files\Contoso IME\imehook.dll")], []),  # an installed IME
        ([hook(3200, 2, r"C:\Users\alice\AppData\Roaming\kb.dll")], [(HOOK, 3200)]),  # user-writable DLL
        ([hook(3300, 13)], []),  # an installed accessibility tool
        ([raw(3000, 0x100, visible=0)], [(RAW, 3000)]),  # keyboard, INPUTSINK, no visible window
        ([raw(3000, 0x100 | 0x30, visible=0)], [(RAW, 3000)]),  # ... with NOLEGACY too
        ([raw(3400, 0x100, visible=1)], []),  # the on-screen keyboard shows a window
        ([raw(3100, 0x0, visible=0)], []),  # no INPUTSINK: input only while focused
        ([raw(3000, 0x100, visible=0, usage=2)], []),  # a mouse
        ([raw(3000, 0x100, visible=0, ok=0)], []),  # failed
    ],
)
def test_device_events_rules(events: list[RawEvent], expected: list[tuple[str, int]]) -> None:
    assert hits(events) == expected


def test_each_alert_rests_on_the_row_it_projects() -> None:
    rules, _ = RuleSet.load([], builtin=True)
    normalizer = Normalizer()
    normalizer.process(classic_start(3000, 1000, "rk.exe", IMAGES[3000], ms=0))
    ((table, row),) = normalizer.process(hook(3000, 13, r"C:\Users\alice\AppData\Roaming\hk.dll"))
    [m] = [m for m in rules.evaluate(table, row, NOW) if m.rule.id.endswith(HOOK)]
    assert m.row["HookType"] == "WH_KEYBOARD_LL"
    assert m.row["HookLibrary"] == r"C:\Users\alice\AppData\Roaming\hk.dll"
    assert "user-writable" in m.row["Reason"] and m.row["InitiatingProcessFileName"] == "rk.exe"


def test_coverage_says_etw_feeds_the_device_events_rules_and_evtx_does_not(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from etwsensor.cli import app

    def summary(source: str) -> dict[str, Any]:
        r = CliRunner().invoke(
            app,
            ["rules", "coverage", "--json", "--source", source],
            env={"ETWSENSOR_CACHE_DIR": str(tmp_path)},
        )
        assert r.exit_code == 0, r.output
        return dict(json.loads(r.stdout)["summary"])

    assert summary("etw")["cannot_fire"] == 0
    assert {"table": "DeviceEvents", "cannot_fire": 3} in summary("evtx")["per_missing_table"]
