"""The live worker asks the CPU ceiling by each record's identity before decoding it: a shed record is never
decoded. The tamper watch's and the start-up probe's own events are handed over first, never shed."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from etwsensor.budget import SHED_KINDS, CpuBudget
from etwsensor.decode import Decoder
from etwsensor.events import RawEvent, RawRecord
from etwsensor.normalize import Normalizer
from etwsensor.pipeline import Detector
from etwsensor.rules import RuleSet
from etwsensor.sources.header import RecordingHeader
from etwsensor.sources.live.callback import RecordQueue
from etwsensor.sources.live.health import EVENT_TRACING
from etwsensor.sources.live.plan import plan_for_rules
from etwsensor.sources.live.probe import Win32kProbe
from etwsensor.sources.live.runner import LiveLoop
from tests.live.test_cpu_budget_live import Host, fast_polls, host, trace_over_ceiling

__all__ = ["fast_polls", "host"]  # fixtures shared with test_cpu_budget_live.py

Identity = tuple[str, str]


def kind_of(identity: Identity) -> str | None:
    provider, name = identity
    return next((k.name for k in SHED_KINDS if name in k.events.get(provider, ())), None)


def test_trace_never_decodes_a_shed_record_and_decodes_the_admitted_in_order(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], host: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[tuple[Identity, bool]] = []
    decoded: list[Identity] = []
    admit, decode = CpuBudget.admit, Decoder.decode  # admit: the host fixture's, charging the simulated host

    def admitted(self: CpuBudget, provider: str, name: str) -> bool:
        ok = admit(self, provider, name)
        asked.append(((provider, name), ok))
        return ok

    def decoding(self: Decoder, rec: RawRecord) -> RawEvent | None:
        ev = decode(self, rec)
        if ev is not None:
            decoded.append((ev.provider, ev.name))
        return ev

    monkeypatch.setattr(CpuBudget, "admit", admitted)
    monkeypatch.setattr(Decoder, "decode", decoding)
    code, _ = trace_over_ceiling(tmp_path)
    assert code == 0
    shed = json.loads(capsys.readouterr().err.strip().splitlines()[-1])["shed"]
    assert shed["shed_total"] > 0 and len(asked) == shed["events_seen"]
    # The worker decodes exactly the admitted records, in the order it admitted them, none of the shed (and
    # the tamper watch's own, handed to it without asking).
    watched = [identity for identity in decoded if identity[0] == EVENT_TRACING]
    assert watched and [identity for identity in decoded if identity[0] != EVENT_TRACING] == [
        identity for identity, ok in asked if ok
    ]
    assert not [identity for identity, _ in asked if identity[0] == EVENT_TRACING]
    assert Counter(kind_of(identity) for identity, ok in asked if not ok) == Counter(shed["shed"])
    assert host.normalized == len(decoded) - len(watched)


class TamperWatch:
    def __init__(self) -> None:
        self.events: list[RawEvent] = []

    def on_event(self, ev: RawEvent) -> None:
        self.events.append(ev)


def _record(guid: str, manifest: bool, key: int, pid: int = 100) -> RawRecord:
    return RawRecord(guid=guid, manifest=manifest, id=key if manifest else 0, opcode=0 if manifest else key,
                     version=0, ts=datetime(2026, 1, 1, tzinfo=UTC), pid=pid, tid=1, cpu=0, pointer_size=8,
                     payload=b"")  # fmt: skip


EVENT_TRACING_GUID = "b675ec37-bdb6-4648-bc92-f3fdc74d3ca2"
WIN32K_GUID = "8c416c79-d49b-4f01-a467-e56d3aa8234c"
FILEIO_CLASS = "90cbdc39-4a3e-11d1-84f4-0000f80464e3"
PROCESS_CLASS = "3d6fa8d0-fe05-11d0-9dda-00c04fd7ba7c"
OWN_PID = 777


def test_with_every_kind_shed_the_watch_and_the_probe_still_get_their_events_and_starts_pass(
    tmp_path: Path,
) -> None:
    (tmp_path / "d.kql").write_text("// id: t-d\n// severity: low\nDeviceEvents | project Timestamp\n")
    ruleset, failures = RuleSet.load([tmp_path / "d.kql"], builtin=False)
    assert not failures
    wall = [0.0]
    budget = CpuBudget(10, SHED_KINDS, check_every=1, clock=lambda: wall[0], cpu_clock=lambda: wall[0])
    while not budget.saturated:  # a full core against a 10 % ceiling: every kind shed
        wall[0] += 0.125
        budget.admit("Image", "Load")
    seen = budget.seen
    alerts: list[dict[str, Any]] = []
    loop = LiveLoop(RecordQueue(64), Decoder(), Normalizer(RecordingHeader()), Detector(ruleset, "live:test"),
                    [], budget=budget)  # fmt: skip
    watch = TamperWatch()
    loop.watchdog = watch  # type: ignore[assignment]
    loop.probe = Win32kProbe(plan_for_rules(ruleset), alerts.append, own_pid=OWN_PID)
    loop.probe.start()
    for rec in (_record(EVENT_TRACING_GUID, True, 3), _record(WIN32K_GUID, True, 1002, pid=OWN_PID),
                _record(WIN32K_GUID, True, 1003), _record(FILEIO_CLASS, False, 68),
                _record(PROCESS_CLASS, False, 1)):  # fmt: skip
        loop.on_record(rec)
    assert [ev.name for ev in watch.events] == ["SessionStop"]  # the tamper watch's own: never asked
    assert loop.probe.events == 2 and loop.probe.status == "receiving"  # its hook dropped, the other seen
    # Asked: the other Win32k event (shed, after the probe saw it), the file write (shed) and the start.
    assert budget.seen - seen == 3 and budget.shed["api_audit"] == 1 and budget.shed["file_write"] == 1
    by_name = {ec.name: ec.count for ec in loop.decoder.stats.by_event.values()}
    assert "Write" not in by_name and by_name["Start"] == 1  # the shed file write was never decoded
    assert loop.summary.events == 2  # the shed ones, counted; the start waits in the reorder window
    assert loop.finish().events == 3
