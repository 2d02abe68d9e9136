"""Integrity level, token elevation and new SIDs' names read from the live host (a FakeHost here), through
the live loop on the perfview .etl's records; a replay of the recording gives the same rows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from etwsensor.decode import Decoder, load_providers
from etwsensor.normalize import Normalizer
from etwsensor.pipeline import Detector, replay
from etwsensor.rules import RuleSet
from etwsensor.sources.header import RecordingHeader
from etwsensor.sources.live.callback import RecordQueue
from etwsensor.sources.live.hostfacts import HOSTFACTS_PROVIDER, HostFacts, TokenInfo
from etwsensor.sources.live.runner import LiveLoop
from etwsensor.sources.recording import RecordingReader, RecordingWriter
from tests.live.fakes import FakeHost
from tests.live.records import etl_records

TEST_PID = 3676  # Test.x64.exe, started inside the trace (Kernel-Process v1: no MandatoryLabel)
USER_SID = "S-1-5-21-2935914779-1618742390-1451969622-1001"  # its classic Start's UserSID
COLUMNS = (
    "ProcessIntegrityLevel, ProcessTokenElevation, AccountDomain, AccountName, AccountSid,"
    " InitiatingProcessAccountName"
)
RULES = {
    "proc.kql": "// id: t-proc\n// severity: low\nDeviceProcessEvents | where ProcessId == 3676"
    f" | project Timestamp, FileName, {COLUMNS}",
    "img.kql": "// id: t-img\n// severity: low\nDeviceImageLoadEvents | where InitiatingProcessId == 3676"
    " | project Timestamp, FileName, InitiatingProcessIntegrityLevel, InitiatingProcessTokenElevation,"
    " InitiatingProcessAccountName",
}


class Collect:
    def __init__(self) -> None:
        self.alerts: list[dict[str, Any]] = []

    def send(self, alert: dict[str, Any]) -> None:
        self.alerts.append(alert)


def _rules(folder: Path) -> RuleSet:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in RULES.items():
        (folder / name).write_text(text, encoding="utf-8")
    ruleset, failures = RuleSet.load([folder], builtin=False)
    assert not failures
    return ruleset


def _live(tmp_path: Path, host: FakeHost | None) -> tuple[list[dict[str, Any]], Path, HostFacts | None]:
    """The trace's records through the live loop with ``host`` (None: no host facts), recorded."""
    known = {p.guid for p in load_providers()}
    recording = tmp_path / "live.jsonl.zst"
    header = RecordingHeader(pointer_size=8)  # the user SID is not in the header: first seen while tracing
    facts = HostFacts(host, wait_seconds=30) if host is not None else None  # the fake answers at once
    out = Collect()
    with RecordingWriter(recording, header) as recorder:
        detector = Detector(_rules(tmp_path / "rules"), "live")
        normalizer = Normalizer(header)
        loop = LiveLoop(RecordQueue(16), Decoder(), normalizer, detector, [out], recorder, host_facts=facts)
        for rec in etl_records():
            if rec.guid in known:
                loop.on_record(rec)
        loop.finish()
        if facts is not None:
            facts.close()
    return out.alerts, recording, facts


def _replayed(tmp_path: Path, recording: Path) -> list[dict[str, Any]]:
    out = Collect()
    replay([recording], Detector(_rules(tmp_path / "replay-rules"), "replay"), [out])
    return out.alerts


def _rows(alerts: list[dict[str, Any]], rule: str) -> list[dict[str, Any]]:
    return [a["row"] for a in alerts if a["rule"]["id"] == rule]


def _comparable(alerts: list[dict[str, Any]]) -> list[str]:
    return sorted(json.dumps(a["row"], sort_keys=True, default=str) for a in alerts)


def test_the_token_and_a_new_sid_fill_the_rows_and_the_recording_replays_them(tmp_path: Path) -> None:
    host = FakeHost()
    start = next(r.ts for r in etl_records() if r.pid == TEST_PID)
    host.tokens[TEST_PID] = TokenInfo(integrity_rid=0x3000, elevation_type=2, created=start)
    host.accounts[USER_SID] = "BRIANROB-W8\\brianrob"
    alerts, recording, facts = _live(tmp_path, host)
    assert facts is not None

    (proc,) = _rows(alerts, "t-proc")
    assert proc["ProcessIntegrityLevel"] == "High"
    assert proc["ProcessTokenElevation"] == "TokenElevationTypeFull"
    account = (proc["AccountDomain"], proc["AccountName"], proc["AccountSid"])
    assert account == ("BRIANROB-W8", "brianrob", USER_SID)
    loads = _rows(alerts, "t-img")
    assert loads and {(r["InitiatingProcessIntegrityLevel"], r["InitiatingProcessTokenElevation"],
                       r["InitiatingProcessAccountName"]) for r in loads} == {
        ("High", "TokenElevationTypeFull", "brianrob")}  # fmt: skip

    # read once per start (the Kernel-Process half and the classic half are one start), SID asked once
    assert host.token_reads.count(TEST_PID) == 1 and host.lookups.count(USER_SID) == 1
    stats = facts.stats()
    assert stats["tokens_read"] == 1 and stats["sids_resolved"] == 1
    assert stats["processes_gone"] > 10  # every rundown process of the trace: "exited" on the fake host

    recorded = RecordingReader(recording).events()
    events = [(ev.name, ev.fields) for ev in recorded if ev.provider == HOSTFACTS_PROVIDER]
    assert sorted(events, key=lambda e: e[0]) == [  # the name goes once its lookup is done: order may vary
        ("Account", {"Sid": USER_SID, "Account": "BRIANROB-W8\\brianrob"}),
        ("ProcessToken", {"ProcessId": TEST_PID, "MandatoryLabel": "S-1-16-12288",
                          "ProcessTokenElevationType": 2}),
    ]
    assert _comparable(_replayed(tmp_path, recording)) == _comparable(alerts)

    # without host facts the same trace leaves the columns empty: what the test above checks is their work
    (tmp_path / "without").mkdir()
    (bare,) = _rows(_live(tmp_path / "without", None)[0], "t-proc")
    assert bare["ProcessIntegrityLevel"] == bare["ProcessTokenElevation"] == bare["AccountName"] == ""


@pytest.mark.parametrize("case", ["exited", "pid reused", "host errors"])
def test_an_exited_process_and_an_unresolvable_sid_leave_the_columns_empty(tmp_path: Path, case: str) -> None:
    host = FakeHost()
    start = next(r.ts for r in etl_records() if r.pid == TEST_PID)
    if case == "pid reused":  # the pid now names a process created two seconds after the start we saw
        from datetime import timedelta

        host.tokens[TEST_PID] = TokenInfo(0x3000, 2, created=start + timedelta(seconds=2))
    if case == "host errors":

        def broken(_: object) -> None:
            raise OSError("the host layer failed")

        host.process_token = broken  # type: ignore[method-assign,assignment]
        host.lookup_account_sid = broken  # type: ignore[method-assign,assignment]
    alerts, recording, facts = _live(tmp_path, host)
    assert facts is not None
    (proc,) = _rows(alerts, "t-proc")
    assert proc["AccountSid"] == USER_SID
    assert proc["ProcessIntegrityLevel"] == proc["ProcessTokenElevation"] == ""
    assert proc["AccountDomain"] == proc["AccountName"] == ""
    stats = facts.stats()
    assert stats["tokens_read"] == 0 and stats["sids_resolved"] == 0
    if case == "exited":
        assert stats["processes_gone"] > 10 and stats["sids_unresolved"] >= 1 and USER_SID in host.lookups
    elif case == "pid reused":
        assert stats["pids_reused"] == 1
    else:
        assert stats["token_errors"] > 10 and stats["sid_lookup_errors"] >= 1
    # nothing learnt, nothing recorded; the replay gives the same rows
    assert not [ev for ev in RecordingReader(recording).events() if ev.provider == HOSTFACTS_PROVIDER]
    assert _comparable(_replayed(tmp_path, recording)) == _comparable(alerts)


def test_trace_reads_tokens_and_names_and_reports_them_in_its_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`trace` as a user runs it (simulated advapi32, the FakeHost as the Windows host layer).

    The account columns are checked through the loop above, not here: in this two-session simulation the
    classic start sometimes arrives too late to merge into the row (AccountSid empty, with or without host
    facts), which is the reorder window's matter, not the host facts'."""
    from tests.live.simadvapi import SimulatedAdvapi32
    from tests.live.test_live_command import _feed, _records, run

    host = FakeHost()
    start = next(r.ts for r in etl_records() if r.pid == TEST_PID)
    host.tokens[TEST_PID] = TokenInfo(integrity_rid=0x2000, elevation_type=3, created=start)
    host.accounts[USER_SID] = "BRIANROB-W8\\brianrob"
    sim = SimulatedAdvapi32()
    records = _records()

    def drive() -> None:
        _feed(sim, records)
        (tmp_path / "stop").touch()

    recording = tmp_path / "live.jsonl.zst"
    code, alerts = run(tmp_path, sim, drive, record=recording, host=host, ruleset=_rules(tmp_path / "rules"))
    assert code == 0
    summary = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    counts = summary["live"]["host_facts"]
    assert counts["tokens_read"] == 1 and counts["sids_resolved"] == 1 and counts["processes_gone"] > 10
    assert counts["token_errors"] == counts["sid_lookup_errors"] == 0
    (proc,) = _rows(alerts, "t-proc")
    token = (proc["ProcessIntegrityLevel"], proc["ProcessTokenElevation"])
    assert token == ("Medium", "TokenElevationTypeLimited")
    recorded = [ev.name for ev in RecordingReader(recording).events() if ev.provider == HOSTFACTS_PROVIDER]
    assert sorted(recorded) == ["Account", "ProcessToken"]
    (replayed,) = _rows(_replayed(tmp_path, recording), "t-proc")
    assert replayed == proc
