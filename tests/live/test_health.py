"""Loss accounting, tamper watch and watchdog restarts, with a fake controller and clocks."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec

from etwsensor.alerts.model import Alert
from etwsensor.events import RawEvent
from etwsensor.sources.live.health import (
    BLIND_RULE,
    DEGRADED_RULE,
    EVENT_TRACING,
    TAMPER_RULE,
    SessionStats,
    Watchdog,
)

KERNEL, PROVIDERS = "etwsensor-kernel-7", "etwsensor-providers-7"
T0 = datetime(2026, 11, 28, 1, 0, tzinfo=UTC)


class FakeEtw:
    """Sessions that can be stopped, lose events, and refuse to restart a number of times."""

    def __init__(self) -> None:
        self.stats = {KERNEL: SessionStats(), PROVIDERS: SessionStats()}
        self.gone: set[str] = set()
        self.refuse = 0
        self.restarts: list[str] = []

    def query(self, name: str) -> SessionStats | None:
        return None if name in self.gone else self.stats[name]

    def restart(self, name: str) -> bool:
        self.restarts.append(name)
        if self.refuse:
            self.refuse -= 1
            return False
        self.gone.discard(name)
        self.stats[name] = SessionStats()
        return True


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def make() -> tuple[FakeEtw, Clock, list[dict[str, Any]], Watchdog]:
    etw, clock, out = FakeEtw(), Clock(), []
    dog = Watchdog(etw, [KERNEL, PROVIDERS], out.append, host=("host1", "dev1"), clock=lambda: T0,
                   monotonic=clock, degraded_every=60, backoff_first=1, backoff_max=8)  # fmt: skip
    return etw, clock, out, dog


def tracing_event(name: str, event_id: int, fields: dict[str, Any]) -> RawEvent:
    guid = "b675ec37-bdb6-4648-bc92-f3fdc74d3ca2"
    return RawEvent(
        guid=guid,
        provider=EVENT_TRACING,
        name=name,
        id=event_id,
        opcode=None,
        version=0,
        ts=T0,
        pid=4242,
        tid=1,
        cpu=0,
        fields=fields,
    )


def test_no_loss_no_alert() -> None:
    _etw, _clock, out, dog = make()
    dog.poll()
    dog.poll()
    assert out == []


def test_loss_raises_one_degraded_alert_per_interval_with_the_counts_since_the_last() -> None:
    etw, clock, out, dog = make()
    etw.stats[KERNEL] = SessionStats(events_lost=5, realtime_buffers_lost=1)
    dog.poll()
    assert len(out) == 1
    a = out[0]
    Alert.model_validate(a)  # the published alert schema
    assert a["rule"]["id"] == DEGRADED_RULE.id and a["table"] == "SensorHealth"
    assert a["row"]["SessionName"] == KERNEL
    assert (a["row"]["EventsLost"], a["row"]["RealTimeBuffersLost"]) == (5, 1)
    assert a["host"] == {"name": "host1", "device_id": "dev1"}
    etw.stats[KERNEL] = SessionStats(events_lost=9, realtime_buffers_lost=1)
    clock.t = 30
    dog.poll()
    assert len(out) == 1  # within the interval: held
    clock.t = 61
    dog.poll()
    assert len(out) == 2 and out[1]["row"]["EventsLost"] == 4  # the new losses only
    assert out[0]["alert_id"] != out[1]["alert_id"]


def test_queue_drops_are_reported_as_degraded() -> None:
    _etw, _clock, out, dog = make()
    dog.queue_drops(0)
    dog.poll()
    assert out == []
    dog.queue_drops(120)
    dog.poll()
    assert [a["row"].get("QueueDropped") for a in out] == [120]


def test_a_session_stop_event_from_the_other_session_is_tamper_and_restarts() -> None:
    etw, _clock, out, dog = make()
    etw.gone.add(KERNEL)
    dog.on_event(tracing_event("SessionStop11", 11, {"SessionName": KERNEL, "LoggerMode": 0}))
    dog.on_event(tracing_event("SessionStop11", 11, {"SessionName": "SomeoneElsesSession"}))
    assert [a["rule"]["id"] for a in out] == [TAMPER_RULE.id]
    a = out[0]
    Alert.model_validate(a)
    assert a["rule"]["techniques"] == ["T1562.006"] and a["rule"]["severity"] == "high"
    assert "pid 4242" in a["reason"] and a["row"]["SessionName"] == KERNEL
    dog.poll()
    assert etw.restarts == [KERNEL] and KERNEL not in etw.gone
    state = dog.state()["sessions"][KERNEL]
    assert (state["state"], state["stopped"], state["restarts"], state["lost"]) == ("running", "", 1, 0)
    assert len(out) == 1  # a query failing for the gone session was not a second alert


def test_provider_disable_naming_our_session_is_tamper() -> None:
    _etw, _clock, out, dog = make()
    dog.on_event(tracing_event("ProviderDisable", 15, {"ProviderName": "edd08927-9cc4-4e65-b970-c2560fb5c289",
                                                      "SessionName": PROVIDERS}))  # fmt: skip
    assert len(out) == 1 and "edd08927" in out[0]["reason"]


def test_query_failure_without_an_event_is_a_stop_too() -> None:
    etw, _clock, out, dog = make()
    etw.gone.add(PROVIDERS)
    dog.poll()
    assert [a["rule"]["id"] for a in out] == [TAMPER_RULE.id]
    assert "QUERY" in out[0]["reason"] and etw.restarts == [PROVIDERS]


def test_process_trace_returning_is_a_stop() -> None:
    _etw, _clock, out, dog = make()
    dog.consumer_returned(KERNEL)
    dog.consumer_returned(KERNEL)
    assert len(out) == 1 and "ProcessTrace" in out[0]["reason"]


def test_failed_restarts_back_off_exponentially_up_to_the_cap() -> None:
    etw, clock, out, dog = make()
    etw.gone.add(KERNEL)
    etw.refuse = 5
    attempts: list[float] = []
    for second in range(0, 40):
        clock.t = float(second)
        before = len(etw.restarts)
        dog.poll()
        if len(etw.restarts) > before:
            attempts.append(clock.t)
    # tries at 0, then after 1, 2, 4, 8, 8 seconds; the sixth attempt succeeds
    assert attempts == [0, 1, 3, 7, 15, 23]
    assert KERNEL not in etw.gone and len(out) == 1


def test_our_own_stops_are_not_tamper() -> None:
    etw, clock, out, dog = make()
    etw.gone.add(KERNEL)
    dog.poll()  # QUERY fails: tamper, restart
    assert len(out) == 1 and etw.restarts == [KERNEL]
    # the stop event of the session the restart replaced arrives late: expected, not a second tamper
    clock.t = 5
    dog.on_event(tracing_event("SessionStop11", 11, {"SessionName": KERNEL}))
    assert len(out) == 1
    # a later stop by someone else is tamper again
    clock.t = 50
    dog.on_event(tracing_event("SessionStop11", 11, {"SessionName": KERNEL}))
    assert len(out) == 2
    dog.poll()
    # shutting down: our stops raise events and end ProcessTrace; none of it is tamper
    dog.shutdown()
    dog.on_event(tracing_event("SessionStop11", 11, {"SessionName": PROVIDERS}))
    dog.consumer_returned(KERNEL)
    etw.gone.add(PROVIDERS)
    dog.poll()
    assert len(out) == 2


def test_a_session_that_dies_after_every_restart_is_one_alert_then_given_up_never_a_flood() -> None:
    # What a failed OpenTrace did before: each restart "worked", ProcessTrace returned at once, and every poll
    # raised a tamper alert and restarted, forever.
    etw, clock, out, dog = make()
    for second in range(0, 600):
        clock.t = float(second)
        if etw.restarts and etw.restarts[-1] == KERNEL and KERNEL not in etw.gone:
            dog.consumer_returned(KERNEL)  # the restarted consumer ends again straight away
            etw.gone.add(KERNEL)
        if second == 0:
            dog.consumer_returned(KERNEL)
            etw.gone.add(KERNEL)
        dog.poll()
    rules = [a["rule"]["id"] for a in out]
    assert rules == [TAMPER_RULE.id, BLIND_RULE.id]
    assert len(etw.restarts) == 8  # bounded: backoff 1, 2, 4, 8, 8... then given up
    state = dog.state()
    assert state["sessions"][KERNEL]["state"] == "failed"
    kernel = [t for t in state["transitions"] if t["session"] == KERNEL]
    # one record per state change: stopped, then running/stopped per attempt, then failed
    assert [t["state"] for t in kernel][:3] == ["stopped", "running", "stopped"]
    assert kernel[-1]["state"] == "failed" and len(kernel) == 2 * len(etw.restarts) + 1
    assert not dog.blind  # the providers session still runs
    Alert.model_validate(out[1])


def test_restarts_that_keep_failing_give_up_with_one_blind_alert() -> None:
    etw, clock, out, dog = make()
    etw.gone.update({KERNEL, PROVIDERS})
    etw.refuse = 10_000
    for second in range(0, 1000):
        clock.t = float(second)
        dog.poll()
    assert [a["rule"]["id"] for a in out].count(BLIND_RULE.id) == 2
    assert len(etw.restarts) == 16 and dog.blind
    assert len(dog.transitions) == 4  # stopped and failed, per session


def test_re_enabling_a_provider_with_keyword_zero_or_level_zero_is_tamper() -> None:
    _etw, _clock, out, dog = make()
    file_guid = "edd08927-9cc4-4e65-b970-c2560fb5c289"
    ours = {"ProviderName": file_guid, "SessionName": PROVIDERS, "MatchAnyKeyword": 0x1EB0,
            "MatchAllKeyword": 0, "EnableProperty": 0, "Level": 5}  # fmt: skip
    dog.on_event(tracing_event("ProviderEnable", 14, ours))  # our own enable: fine
    dog.on_event(tracing_event("ProviderEnable", 14, {**ours, "SessionName": "Other", "MatchAnyKeyword": 0}))
    assert out == []
    dog.on_event(tracing_event("ProviderEnable", 14, {**ours, "MatchAnyKeyword": 0}))
    assert [a["rule"]["id"] for a in out] == [TAMPER_RULE.id]
    assert "keyword 0x0" in out[0]["reason"] and file_guid in out[0]["reason"]
    dog.poll()  # restarted: the provider is enabled again with our keywords
    dog.on_event(tracing_event("ProviderEnable", 14, {**ours, "Level": 0}))
    assert len(out) == 1  # within the flap window of the restart: the same incident, no second alert


def test_lost_event_records_and_the_final_stop_counters_count_as_loss() -> None:
    _etw, _clock, out, dog = make()
    dog.lost_records({(PROVIDERS, "RTLostEvent"): 3, (KERNEL, "RTLostBuffer"): 1})
    dog.lost_records({(PROVIDERS, "RTLostEvent"): 3})  # running totals: nothing new
    dog.poll()
    by_session = {a["row"]["SessionName"]: a["row"] for a in out}
    assert by_session[PROVIDERS]["RTLostEvent"] == 3 and by_session[KERNEL]["RTLostBuffer"] == 1
    dog.final({KERNEL: SessionStats(events_lost=7, realtime_buffers_lost=2)})
    state = dog.state()["sessions"]
    assert state[KERNEL]["losses"] == {"EventsLost": 7, "RTLostBuffer": 1, "RealTimeBuffersLost": 2}
    assert state[KERNEL]["lost"] == 10 and state[PROVIDERS]["lost"] == 3


def test_the_real_provider_enable_events_of_a_windows_trace_decode_and_are_not_tamper() -> None:
    # perfview's trace holds 15 ProviderEnable version 0 events (no keyword or level fields): never tamper
    from etwsensor.sources.etl_source import EtlSource
    from tests.live.records import ETL

    enables = [e for e in EtlSource(ETL).events() if e.name == "ProviderEnable"]
    assert len(enables) == 15 and enables[0].fields["SessionName"] == "PerfViewSession"
    _etw, _clock, out, dog = make()
    for e in enables:
        dog.on_event(msgspec.structs.replace(e, fields={**e.fields, "SessionName": PROVIDERS}))
    assert out == []
