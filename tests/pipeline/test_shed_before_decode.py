"""The CPU ceiling sheds an .etl input's events before decoding them: by the record's identity (provider GUID
and event id or classic opcode, looked up in the same provider definitions the decoder uses), so a shed
event costs its reading only. The decisions, the counts and what is made of the admitted events are those
of the same events replayed from a recording (decoded events, admitted after decoding), on the same
simulated machine."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from etwsensor.budget import SHED_KINDS
from etwsensor.cli import app
from etwsensor.decode import Decoder, load_providers
from etwsensor.events import RawEvent, RawRecord
from etwsensor.sources.etl import EtlReader
from etwsensor.sources.live.health import EVENT_TRACING
from etwsensor.sources.live.hostfacts import _STARTS, HOSTFACTS_PROVIDER
from etwsensor.sources.live.probe import WIN32K
from tests.pipeline.test_cpu_budget import Install, Machine, install, replay

__all__ = ["install"]  # the simulated machine's fixture, shared with test_cpu_budget.py

ROOT = Path(__file__).resolve().parents[2]
ETL = ROOT / "tests" / "data" / "etl" / "perfview_net.4.5.2.x64.etl"
Identity = tuple[str, str]


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The .etl's decoded events as a recording (`etwsensor convert`)."""
    out = tmp_path_factory.mktemp("rec") / "perfview.jsonl.zst"
    r = CliRunner().invoke(app, ["convert", str(ETL), "-o", str(out)])
    assert r.exit_code == 0, r.stderr
    return out


@pytest.fixture
def decoded(monkeypatch: pytest.MonkeyPatch) -> Counter[Identity]:
    """Every event the decoder makes, per (provider, event name)."""
    counts: Counter[Identity] = Counter()
    real = Decoder.decode

    def decode(self: Decoder, rec: RawRecord) -> RawEvent | None:
        ev = real(self, rec)
        if ev is not None:
            counts[(ev.provider, ev.name)] += 1
        return ev

    monkeypatch.setattr(Decoder, "decode", decode)
    return counts


def kind_of(identity: Identity) -> str | None:
    provider, name = identity
    return next((k.name for k in SHED_KINDS if name in k.events.get(provider, ())), None)


def test_identify_names_every_record_as_decode_would_without_counting_it() -> None:
    decoder, check = Decoder(), Decoder()
    known = decoder.known_guids
    seen = 0
    for rec in EtlReader(ETL).records():
        identity = decoder.identify(rec)
        ev = check.decode(rec)
        assert identity == (None if ev is None else (ev.provider, ev.name))
        seen += rec.guid in known
    assert seen > 7000 and decoder.stats.totals()["events"] == 0  # identifying is not decoding


def test_etl_replay_over_the_ceiling_sheds_before_decoding_exactly_as_its_recording_sheds_after(
    recording: Path, tmp_path: Path, install: Install, decoded: Counter[Identity]
) -> None:
    args = ("--rate", "1000", "--heartbeat", "3600", "--device-name", "pc1")  # no look-ahead for the name
    install(Machine(0.001))
    free, _ = replay(ETL, tmp_path / "free.ndjson", *args)
    all_events = Counter(decoded)
    decoded.clear()
    etl_machine = install(Machine(0.001))  # 1 ms an event at 1,000/s: a full core
    etl, etl_docs = replay(ETL, tmp_path / "etl.ndjson", *args, "--max-cpu", "50")
    from_etl = Counter(decoded)
    decoded.clear()
    rec_machine = install(Machine(0.001))
    rec, rec_docs = replay(recording, tmp_path / "rec.ndjson", *args, "--max-cpu", "50")
    assert not decoded  # a recording holds decoded events

    shed = etl["shed"]
    assert free["shed"] == {} and shed["shed_total"] > 100 and len(shed["shed"]) >= 1
    # The same events shed per kind, at the same moments; the same rows, alerts and counts.
    assert shed == rec["shed"]
    for key in ("events", "rows", "rows_by_action", "alerts", "alerts_by_rule", "decode_errors", "undecoded"):
        assert etl[key] == rec[key], key
    assert etl["events"] == free["events"] == shed["events_seen"]
    assert etl_machine.worked == rec_machine.worked == etl["events"] - shed["shed_total"]

    def health(docs: list[dict[str, Any]]) -> list[Any]:
        return [(d["rule"]["id"], d["row"]["Shedding"]) for d in docs if d.get("table") == "SensorHealth"]

    def beats(docs: list[dict[str, Any]]) -> list[Any]:
        return [(b["state"], b["shed"]) for b in docs if b.get("record") == "heartbeat"]

    assert health(etl_docs) == health(rec_docs) and health(etl_docs)[0][0] == "etwsensor-cpu-ceiling"
    assert beats(etl_docs) == beats(rec_docs) and beats(etl_docs)[-1] == ("stop", shed["shed"])

    # A shed event is never decoded: per kind, what was decoded is what was offered less what was shed.
    assert sum(from_etl.values()) == etl["events"] - shed["shed_total"]
    per_kind: Counter[str] = Counter()
    for identity, n in all_events.items():
        kind = kind_of(identity)
        assert from_etl[identity] == n or kind is not None, identity  # the others: every one decoded
        if kind is not None:
            per_kind[kind] += n - from_etl[identity]
    assert +per_kind == Counter(shed["shed"])


def test_without_a_ceiling_every_event_is_decoded(tmp_path: Path, decoded: Counter[Identity]) -> None:
    summary, _ = replay(ETL, tmp_path / "a.ndjson", "--device-name", "pc1")
    assert summary["shed"] == {} and sum(decoded.values()) == summary["events"] > 7000


def test_no_shed_kind_names_the_sensors_own_events_or_the_starts_host_facts_follow() -> None:
    """The worker hands these over before the ceiling is asked (tamper watch, start-up probe) or the ceiling
    never sheds them (the host facts' process starts and their own events)."""
    named = {(p, e) for k in SHED_KINDS for p, events in k.events.items() for e in events}
    providers = {p for p, _ in named}
    assert EVENT_TRACING not in providers and HOSTFACTS_PROVIDER not in providers
    assert not named & set(_STARTS)
    defined = {(p.name, e.name) for p in load_providers() for e in p.events}
    assert named <= defined  # every kind is identified from the providers' own definitions
    assert {(WIN32K, "SetWindowsHookEx")} <= named  # the probe's hook: handed to the probe before shedding
