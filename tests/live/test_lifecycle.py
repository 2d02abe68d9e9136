"""The session lifecycle over the simulated advapi32: start, stop, restarts, orphans, slots, handles."""

from __future__ import annotations

import ast
import ctypes
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from etwsensor.rules import RuleSet
from etwsensor.sources.live import structs as S
from etwsensor.sources.live import win32
from etwsensor.sources.live.callback import RecordCallback, RecordQueue
from etwsensor.sources.live.lifecycle import (
    EtwSessions,
    LiveError,
    buffer_sizing,
    rename_sessions,
)
from etwsensor.sources.live.plan import (
    EVENT_FILTER_TYPE_EVENT_ID,
    SYSTEM_TRACE_GUID,
    TracePlan,
    plan_for_rules,
)
from tests.live.records import etl_records, event_record
from tests.live.simadvapi import Filter, SimulatedAdvapi32

KERNEL, PROVIDERS = "etwsensor-kernel", "etwsensor-providers"
REGISTRY = "70eb4f03-c1de-4f73-a051-33d13d5413bd"
KERNEL_PROCESS = "22fb2cd6-0e7b-422b-a0c7-2fad1fd0e716"


def builtin_plan() -> TracePlan:
    ruleset, _ = RuleSet.load([], builtin=True)
    return plan_for_rules(ruleset)


def sessions(
    sim: SimulatedAdvapi32,
    version: tuple[int, ...] = (10, 0, 26100),
    cpus: int = 4,
    plan: TracePlan | None = None,
) -> tuple[EtwSessions, RecordQueue]:
    q = RecordQueue(1 << 16)
    return EtwSessions(plan or builtin_plan(), RecordCallback(q), sim, cpus=cpus, version=version), q


def assert_clean(sim: SimulatedAdvapi32) -> None:
    """What `logman query -ets` and a handle count would show after we are done: nothing of ours."""
    assert sim.ours() == []
    assert sim.open_consumers() == []
    assert sim.violations == []


def test_start_stop_runs_the_calls_in_order_and_leaves_nothing_behind() -> None:
    sim = SimulatedAdvapi32()
    s, q = sessions(sim)
    s.start()
    assert set(sim.sessions) == {KERNEL, PROVIDERS}
    kernel, providers = sim.sessions[KERNEL], sim.sessions[PROVIDERS]
    assert kernel.system_logger and kernel.enable_flags == 0x5  # PROCESS | IMAGE_LOAD
    assert set(providers.providers) >= {KERNEL_PROCESS, REGISTRY} and providers.rundowns == [KERNEL_PROCESS]
    lives = [event_record(r) for r in etl_records(300)]
    for live in lives:
        sim.emit(KERNEL, live)
    assert sim.wait_drained(KERNEL)
    assert len(q) == 300
    threads = [x.thread for x in s.sessions.values()]
    assert all(t is not None and t.daemon for t in threads)  # the interpreter never waits on ProcessTrace
    s.stop()
    assert all(t is not None and not t.is_alive() for t in threads)
    assert_clean(sim)
    assert sim.calls.count("ProcessTrace") == 2  # once per consumer handle
    assert sim.calls.count("CloseTrace") == 2  # the consumer handles; never the StartTrace handles


def test_a_session_stopped_from_outside_ends_process_trace_and_restarts_without_leaking_handles() -> None:
    sim = SimulatedAdvapi32()
    s, _ = sessions(sim)
    ended: list[str] = []
    s.on_consumer_end = ended.append
    s.start()
    for round_ in range(1, 6):
        sim.stop_from_outside(KERNEL)
        thread = s.sessions[KERNEL].thread
        assert thread is not None
        thread.join(5)
        assert ended == [KERNEL] * round_
        assert s.query(KERNEL) is None  # QUERY fails too: the watchdog's other sign
        assert s.restart(KERNEL)
        assert KERNEL in sim.sessions
        assert len(sim.open_consumers()) == 2  # the old consumer handle was closed: no leak per restart
    s.stop()
    assert_clean(sim)


@pytest.mark.parametrize("call", ["StartTraceW", "EnableTraceEx2", "OpenTraceW"])
def test_ctrl_c_during_start_leaves_no_session(call: str) -> None:
    sim = SimulatedAdvapi32()
    s, _ = sessions(sim)
    sim.interrupt_after[call] = 2  # the second such call of the run returns into a KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        s.start()
    s.stop()  # what `trace` does in its finally
    assert sim.ours() == [] and sim.violations == []
    # A handle OpenTraceW returned into the interrupt is never seen, so never closed: it goes with the process
    # which is exiting. `trace` defers Ctrl-C during start (test_live_command), so this needs a raw interrupt.
    assert len(sim.open_consumers()) == (1 if call == "OpenTraceW" else 0)


def test_ctrl_c_during_rundown_and_during_stop_still_stops_every_session() -> None:
    sim = SimulatedAdvapi32()
    s, _ = sessions(sim)
    manifest = builtin_plan().session("manifest")
    assert manifest is not None
    # One EnableTraceEx2 per manifest provider, then Kernel-Process's CAPTURE_STATE.
    sim.interrupt_after["EnableTraceEx2"] = len(manifest.providers) + 1
    with pytest.raises(KeyboardInterrupt):
        s.start()
    assert sim.started[-1].name == PROVIDERS and sim.started[-1].rundowns == [KERNEL_PROCESS]
    sim.interrupt_after["ControlTraceW:1"] = 1  # Ctrl-C again while the first STOP returns
    s.stop()
    assert_clean(sim)


@pytest.mark.parametrize("invalid", [S.INVALID_PROCESSTRACE_HANDLE, S.INVALID_PROCESSTRACE_HANDLE_WOW64])
def test_an_invalid_open_trace_handle_is_an_error_with_the_windows_text(invalid: int) -> None:
    sim = SimulatedAdvapi32()
    s, _ = sessions(sim)
    sim.open_fails.append(invalid)
    with pytest.raises(LiveError, match=r"OpenTraceW failed, Windows error 87 \(The parameter is incorrect"):
        s.start()
    assert "ProcessTrace" not in sim.calls  # never run on an invalid handle
    s.stop()
    assert_clean(sim)


def test_a_restart_whose_open_trace_fails_reports_failure() -> None:
    sim = SimulatedAdvapi32()
    s, _ = sessions(sim)
    s.start()
    sim.stop_from_outside(KERNEL)
    sim.open_fails.append(S.INVALID_PROCESSTRACE_HANDLE_WOW64)
    assert s.restart(KERNEL) is False
    assert KERNEL not in sim.sessions  # the half-started session was stopped again
    s.stop()
    assert_clean(sim)


def test_an_orphan_of_a_crashed_run_is_stopped_and_the_start_retried_once() -> None:
    sim = SimulatedAdvapi32()
    orphan = sim.add_foreign(KERNEL, system_logger=True)
    s, _ = sessions(sim)
    s.start()
    assert sim.sessions[KERNEL] is not orphan and orphan.stopped
    assert sim.calls[:3] == ["StartTraceW", "ControlTraceW:1", "StartTraceW"]
    s.stop()
    assert_clean(sim)


def test_a_name_that_stays_taken_is_one_clear_error_and_the_other_session_is_stopped() -> None:
    sim = SimulatedAdvapi32()
    s, _ = sessions(sim)
    real_control = sim.ControlTraceW

    def stubborn(handle: int, name: str | None, props: Any, code: int) -> int:
        if name == PROVIDERS and code == S.EVENT_TRACE_CONTROL_STOP:
            return S.ERROR_ACCESS_DENIED  # someone else's session of that name: not ours to stop
        return real_control(handle, name, props, code)

    sim.ControlTraceW = stubborn  # type: ignore[method-assign]
    sim.add_foreign(PROVIDERS)
    with pytest.raises(LiveError, match="still running after stopping it once") as info:
        s.start()
    assert "\n" not in str(info.value)
    s.stop()
    assert sim.ours() == [PROVIDERS]  # the foreign one stays; ours (kernel) is gone
    assert sim.open_consumers() == [] and sim.violations == []


def test_the_ninth_system_logger_names_the_sessions_holding_the_slots() -> None:
    sim = SimulatedAdvapi32()
    holders = ["NT Kernel Logger", "Circular Kernel Context Logger", *[f"Vendor-{i}" for i in range(6)]]
    for name in holders:
        sim.add_foreign(name, system_logger=True)
    sim.add_foreign("EventLog-System")  # not a system logger: not named
    s, _ = sessions(sim)
    with pytest.raises(LiveError) as info:
        s.start()
    msg = str(info.value)
    assert "no free system-logger slot" in msg and "logman stop" in msg
    assert all(name in msg for name in holders) and "EventLog-System" not in msg
    s.stop()
    assert_clean(sim)


def test_listing_sessions_asks_for_at_most_64_and_handles_more_data() -> None:
    sim = SimulatedAdvapi32()
    for i in range(70):
        sim.add_foreign(f"Other-{i:02d}")
    s, _ = sessions(sim)
    with pytest.raises(LiveError) as info:  # 70 running: no room for a 71st (EtwMaxLoggers 64 here)
        s.start()
    msg = str(info.value)
    assert "EtwMaxLoggers" in msg and "Other-00" in msg and "and 6 more" in msg
    assert "QueryAllTracesW" in sim.calls


def test_access_denied_says_to_elevate() -> None:
    sim = SimulatedAdvapi32(elevated=False)
    s, _ = sessions(sim)
    with pytest.raises(LiveError, match="elevated"):
        s.start()
    assert_clean(sim)


def test_stop_returns_the_final_counters_stop_wrote() -> None:
    sim = SimulatedAdvapi32()
    s, _ = sessions(sim)
    s.start()
    sim.sessions[KERNEL].realtime_buffers_lost = 2
    assert s.query(KERNEL) is not None and s.query(KERNEL).realtime_buffers_lost == 2  # type: ignore[union-attr]
    sim.sessions[KERNEL].lose_at_stop = 9  # lost in the last two seconds: only STOP sees them
    final = s.stop()
    assert final[KERNEL].events_lost == 9 and final[KERNEL].realtime_buffers_lost == 2
    assert final[PROVIDERS].lost == 0


@pytest.mark.parametrize("cpus", [1, 2, 16, 256])
def test_buffers_are_sized_from_the_cpu_count(cpus: int) -> None:
    sim = SimulatedAdvapi32()
    s, _ = sessions(sim, cpus=cpus)
    s.start()
    size, minimum, maximum, flush = sim.sessions[KERNEL].buffers
    assert (size, flush) == (128, 1)
    assert minimum >= 2 * cpus and maximum >= minimum and size * maximum <= 64 * 1024
    assert buffer_sizing(cpus) == s.sizing
    s.stop()


def test_every_start_gets_a_fresh_wnode_guid() -> None:
    sim = SimulatedAdvapi32()
    s, _ = sessions(sim)
    s.start()
    s.restart(KERNEL)
    guids = [x.guid for x in sim.started]
    assert len(set(guids)) == len(guids) == 3
    system_trace = bytes(S.GUID.from_text(SYSTEM_TRACE_GUID))
    assert all(g != bytes(16) and g != system_trace for g in guids)
    s.stop()


@pytest.mark.parametrize("version", [(6, 1, 7601), (6, 2, 9200)])
def test_before_windows_8_1_nothing_starts(version: tuple[int, int, int]) -> None:
    sim = SimulatedAdvapi32(version=version[:2])  # type: ignore[arg-type]
    s, _ = sessions(sim, version=version)
    with pytest.raises(LiveError, match=r"Windows 8\.1"):
        s.start()
    assert sim.calls == []


def test_a_refused_registry_filter_pair_is_retried_without_the_event_id_filter() -> None:
    sim = SimulatedAdvapi32()

    def refuse(guid: str, filters: list[Filter]) -> int:
        types = {f.type for f in filters}
        both = guid == REGISTRY and EVENT_FILTER_TYPE_EVENT_ID in types and 0 in types
        return S.ERROR_INVALID_PARAMETER if both else S.ERROR_SUCCESS

    sim.refuse_enable = refuse
    s, _ = sessions(sim)
    s.start()
    registry = sim.sessions[PROVIDERS].providers[REGISTRY]
    assert [(f.type, f.data) for f in registry.filters] == [(0, (2).to_bytes(4, "little"))]
    file_filters = sim.sessions[PROVIDERS].providers["edd08927-9cc4-4e65-b970-c2560fb5c289"].filters
    assert [f.type for f in file_filters] == [EVENT_FILTER_TYPE_EVENT_ID]  # the others keep theirs
    (warning,) = s.warnings
    assert "Microsoft-Windows-Kernel-Registry" in warning and "without it" in warning
    s.stop()
    assert_clean(sim)


def test_session_names_are_fixed_and_overridable() -> None:
    plan = builtin_plan()
    assert plan.session_names() == (KERNEL, PROVIDERS)
    assert rename_sessions(plan, "ci-run").session_names() == ("ci-run-kernel", "ci-run-providers")


def test_every_win32_function_called_has_argtypes_and_restype() -> None:
    sim = SimulatedAdvapi32()
    s, _ = sessions(sim)
    sim.add_foreign(KERNEL)
    s.start()
    s.query(KERNEL)
    s.restart(KERNEL)
    s.stop()
    called = {c.split(":")[0] for c in sim.calls}
    assert called <= set(win32.ADVAPI32)
    # enrich.py and win32.py call through self._k32 / self._adv / load(...): all declared
    tree = ast.parse(Path(win32.__file__).with_name("enrich.py").read_text("utf-8"))
    used = {
        n.attr
        for n in ast.walk(tree)
        if isinstance(n, ast.Attribute)
        and isinstance(n.value, ast.Attribute)
        and n.value.attr in ("_k32", "_adv")
    }
    assert used and used <= set(win32.ADVAPI32) | set(win32.KERNEL32)
    # Library sets both on every declared function of a DLL
    fake = SimpleNamespace(**{n: SimpleNamespace() for n in win32.ADVAPI32})
    lib = win32.Library(fake, win32.ADVAPI32)
    for name, (args, res) in win32.ADVAPI32.items():
        fn = getattr(lib, name)
        assert fn.argtypes == list(args) and fn.restype is res
    assert win32.ADVAPI32["OpenTraceW"][1] is ctypes.c_uint64


def test_a_restart_hands_over_the_replaced_sessions_last_counters() -> None:
    sim = SimulatedAdvapi32()
    s, _ = sessions(sim)
    finals: list[tuple[str, int]] = []
    s.on_final = lambda name, stats: finals.append((name, stats.events_lost))
    s.start()
    sim.sessions[PROVIDERS].lose_at_stop = 6  # e.g. a provider re-enabled with keyword 0: still running
    assert s.restart(PROVIDERS)
    assert finals == [(PROVIDERS, 6)]
    sim.stop_from_outside(KERNEL)  # gone: STOP finds nothing, so nothing to hand over
    assert s.restart(KERNEL)
    assert finals == [(PROVIDERS, 6)]
    s.stop()
    assert_clean(sim)
