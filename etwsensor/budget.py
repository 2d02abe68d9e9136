"""CPU ceiling (``--max-cpu``, ``[performance] max_cpu_percent``): shed the lowest-value events first.

The process's share of one core is measured over a sliding window (CPU seconds / wall seconds). Above the
ceiling, kinds of events are shed (dropped before the normalizer, counted), lowest value first: as many as
the window's events of each kind say are needed to get under it (at least one more); a level holds until
a new span has been measured. Below it, a kind comes back only when the share it would add (the window's
share scaled by the events of that kind shed in it) stays under ``recover_ratio`` of the ceiling for a
whole window: the hysteresis that keeps the level from flapping.

Value order (lowest first, ``SHED_KINDS``): file writes, file open/close bookkeeping, registry key opens
and closes, file deletes and renames, registry changes, image loads, Win32k API audit events. Kinds whose
rows no loaded rule can read (``tables_needed`` of the live plan) go before all of them, in that order.
Process starts and ends, rundowns, host and image facts, volume mappings and the tamper watch's own events
are never shed: every row's InitiatingProcess* columns and the sensor's own health depend on them.

Nothing is dropped silently: per-kind counts go into the summary (``shed``), the heartbeats, and a
``SensorHealth`` alert when shedding starts, when it is at its last level and still over, and when it ends.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from etwsensor.rules import Rule

KERNEL_FILE = "Microsoft-Windows-Kernel-File"
KERNEL_REGISTRY = "Microsoft-Windows-Kernel-Registry"
KERNEL_PROCESS = "Microsoft-Windows-Kernel-Process"
WIN32K = "Microsoft-Windows-Win32k"


@dataclass(frozen=True, slots=True)
class ShedKind:
    """A kind of event that may be shed: its events (provider or classic class → event names) and the
    rows they make (``table`` and ``actions``; None: every ActionType of the table needs them)."""

    name: str
    table: str
    actions: frozenset[str] | None
    events: Mapping[str, tuple[str, ...]]


SHED_KINDS: tuple[ShedKind, ...] = (  # lowest value first
    ShedKind("file_write", "DeviceFileEvents", frozenset({"FileModified"}),
             {KERNEL_FILE: ("Write",), "FileIo": ("Write",)}),
    ShedKind("file_io", "DeviceFileEvents", None,
             {KERNEL_FILE: ("Create", "CreateNewFile", "Cleanup", "Close", "OperationEnd", "NameCreate",
                            "NameDelete"),
              "FileIo": ("Create", "Cleanup", "Close", "OperationEnd", "Name", "FileCreate", "FileDelete")}),
    ShedKind("registry_query", "DeviceRegistryEvents", None,
             {KERNEL_REGISTRY: ("OpenKey", "CloseKey"), "Registry": ("KCBCreate", "KCBDelete")}),
    ShedKind("file_change", "DeviceFileEvents", frozenset({"FileDeleted", "FileRenamed"}),
             {KERNEL_FILE: ("SetDelete", "DeletePath", "RenamePath"),
              "FileIo": ("Delete", "DeletePath", "RenamePath")}),
    ShedKind("registry_change", "DeviceRegistryEvents",
             frozenset({"RegistryKeyCreated", "RegistryKeyDeleted", "RegistryValueSet",
                        "RegistryValueDeleted"}),
             {KERNEL_REGISTRY: ("CreateKey", "DeleteKey", "SetValueKey", "DeleteValueKey"),
              "Registry": ("Create", "Delete", "SetValue", "DeleteValue")}),
    ShedKind("image_load", "DeviceImageLoadEvents", None,
             {"Image": ("Load", "UnLoad"), KERNEL_PROCESS: ("ImageLoad", "ImageUnload")}),
    ShedKind("api_audit", "DeviceEvents", None,
             {WIN32K: ("GetAsyncKeyState", "SetWindowsHookEx", "RegisterRawInputDevices")}),
)  # fmt: skip

CEILING_RULE = Rule(
    id="etwsensor-cpu-ceiling",
    name="etwsensor: CPU ceiling reached, lowest-value events shed",
    query="",
    source="builtin:health",
    description="The sensor used more of a core than its configured ceiling (max_cpu_percent), so it drops "
    "the lowest-value kinds of events (counted per kind) until the load falls: detections that need those "
    "events may miss activity meanwhile. Raise the ceiling, narrow the rules, or reduce load.",
    severity="medium",
    confidence="high",
)
RECOVERED_RULE = Rule(
    id="etwsensor-cpu-ceiling-recovered",
    name="etwsensor: back under the CPU ceiling, no events shed any more",
    query="",
    source="builtin:health",
    description="The load fell under the CPU ceiling and every kind of event is processed again; the "
    "alert counts the events shed while it was over.",
    severity="informational",
    confidence="high",
)


def shed_order(tables: Mapping[str, Iterable[str]] | None) -> list[ShedKind]:
    """The kinds in the order they are shed: those no loaded rule reads first (``tables``: table →
    ActionTypes some rule can match; None: every kind counts as read), then by value."""
    if tables is None:
        return list(SHED_KINDS)

    def read(kind: ShedKind) -> bool:
        actions = tables.get(kind.table)
        if actions is None:
            return False
        return kind.actions is None or not kind.actions.isdisjoint(actions)

    return sorted(SHED_KINDS, key=read)  # stable: the value order holds within each group


def order_for_rules(ruleset: Any) -> list[ShedKind]:
    """``shed_order`` of a loaded rule set (what its rules can read, as the live plan derives it)."""
    from etwsensor.sources.live.plan import tables_needed

    return shed_order(tables_needed(ruleset))


HealthSend = Callable[[dict[str, Any]], None]


class CpuBudget:
    """Decides, every ``check_every`` events (and on ``check()`` when idle), which kinds are shed.

    ``admit(provider, event_name)`` is the per-event test: False means shed (it is counted). The clocks are
    injectable (``clock``: wall seconds, ``cpu_clock``: this process's CPU seconds) so that every decision
    is tested without timing anything.
    """

    def __init__(
        self,
        max_percent: float,
        order: Sequence[ShedKind] = SHED_KINDS,
        *,
        window: float = 5.0,
        min_span: float = 1.0,
        recover_ratio: float = 0.8,
        check_every: int = 256,
        clock: Callable[[], float] = time.monotonic,
        cpu_clock: Callable[[], float] = time.process_time,
        send: HealthSend | None = None,
        host: tuple[str, str] = ("", ""),
        source: str = "",
    ) -> None:
        if not 0 < max_percent <= 100 * 64:
            raise ValueError("max_cpu_percent must be > 0 (percent of one core)")
        if check_every < 1 or check_every & (check_every - 1):
            raise ValueError("check_every must be a power of two")
        self.max_percent = max_percent
        self.order = list(order)
        self.window, self.min_span, self.recover_ratio = window, min_span, recover_ratio
        self._mask = check_every - 1
        self._clock, self._cpu_clock = clock, cpu_clock
        self.send, self.host, self.source = send, host, source
        self.level = 0  # how many kinds of ``order`` are shed now
        self._index = {(provider, event): i for i, kind in enumerate(self.order)
                       for provider, events in kind.events.items() for event in events}  # fmt: skip
        self.offered = [0] * len(self.order)  # events of each kind since the start, shed or not
        self.shed: Counter[str] = Counter()  # per kind, since the start
        self.episode: Counter[str] = Counter()  # per kind, since shedding last started
        self.seen = 0  # events offered to admit()
        self.saturated = False  # every kind shed and still over the ceiling
        self.share: float | None = None  # the last measured share, percent of one core
        self.peak_level = 0
        self.transitions: list[dict[str, Any]] = []
        self.transitions_dropped = 0
        self._started = clock()
        # wall, cpu, events seen, events shed, events of each kind
        self._samples: deque[tuple[float, float, int, int, tuple[int, ...]]] = deque()
        self._restart_window()

    # --- the per-event path -------------------------------------------------------------------------

    def admit(self, provider: str, name: str) -> bool:
        self.seen += 1
        if not self.seen & self._mask:
            self.check()
        elif self.seen == 1:  # the stream starts: opening the inputs and loading are not its load
            self._restart_window()
        i = self._index.get((provider, name))
        if i is None:
            return True
        self.offered[i] += 1
        if i >= self.level:
            return True
        kind = self.order[i].name
        self.shed[kind] += 1
        self.episode[kind] += 1
        return False

    # --- decisions ---------------------------------------------------------------------------------

    def _restart_window(self) -> None:
        self._samples.clear()
        sample = (self._clock(), self._cpu_clock(), self.seen, self.shed.total(), tuple(self.offered))
        self._samples.append(sample)

    def check(self) -> None:
        """Measure the share over the window and move the level when it calls for it."""
        now, cpu = self._clock(), self._cpu_clock()
        samples = self._samples
        samples.append((now, cpu, self.seen, self.shed.total(), tuple(self.offered)))
        while len(samples) > 2 and samples[1][0] <= now - self.window:
            samples.popleft()  # keep one sample at or before the window's start
        t0, c0, seen0, shed0, offered0 = samples[0]
        span = now - t0
        if span < self.min_span:
            return
        share = 100.0 * (cpu - c0) / span
        self.share = round(share, 1)
        admitted = (self.seen - seen0) - (self.shed.total() - shed0)
        if share > self.max_percent:
            if self.level < len(self.order):
                self._move(self._enough(share, admitted, offered0), share)
            elif not self.saturated:
                self.saturated = True
                self._note(share, "saturated")
                why = (
                    "every kind that may be shed is shed and the process is still over the ceiling "
                    "(process starts and the sensor's own events are never shed)"
                )
                self._alert(CEILING_RULE, share, why)
            return
        if self.level and span >= self.window:
            top = self.level - 1
            back = self.offered[top] - offered0[top]  # the events the kind to restore would add (all shed)
            projected = share * (admitted + back) / admitted if admitted > 0 else share
            if projected < self.recover_ratio * self.max_percent:
                self._move(self.level - 1, share)

    def _enough(self, share: float, admitted: int, offered0: tuple[int, ...]) -> int:
        """The lowest level whose kinds, shed, take the window's share under the ceiling (assuming every
        admitted event cost the same; reading a shed event still costs, so a later window may add more).
        When none does: up to the highest kind the window had events of (at least one level more); kinds
        that sent nothing are not shed for an overload they did not cause."""
        kept, busiest = admitted, self.level + 1
        for i in range(self.level, len(self.order)):
            events = self.offered[i] - offered0[i]
            kept -= events
            if events:
                busiest = i + 1
            if admitted > 0 and share * kept / admitted <= self.max_percent:
                return i + 1
        return busiest

    def _move(self, level: int, share: float) -> None:
        before = self.level
        self.level = level
        self.peak_level = max(self.peak_level, level)
        self.saturated = False
        self._note(share, "shed" if level > before else "restore")
        if before == 0 and level > 0:
            self.episode = Counter()
            kinds = ", ".join(k.name for k in self.order[:level])
            self._alert(CEILING_RULE, share, f"CPU {share:.1f} % of one core over the {self.max_percent:g} % "
                        f"ceiling: shedding {kinds}")  # fmt: skip
        elif level == 0:
            shed = ", ".join(f"{k} {n:,}" for k, n in self.episode.items()) or "none"
            why = (
                f"CPU {share:.1f} % of one core, under the {self.max_percent:g} % ceiling: every kind "
                f"processed again; shed meanwhile: {shed}"
            )
            self._alert(RECOVERED_RULE, share, why)
        self._restart_window()

    def _note(self, share: float, what: str) -> None:
        if len(self.transitions) >= 100:  # bounded; the counts stay exact
            self.transitions_dropped += 1
            return
        self.transitions.append({
            "after_seconds": round(self._clock() - self._started, 3), "what": what, "level": self.level,
            "cpu_percent": round(share, 1), "shedding": [k.name for k in self.order[: self.level]],
        })  # fmt: skip

    def _alert(self, rule: Rule, share: float, reason: str) -> None:
        if self.send is None:
            return
        from etwsensor.alerts.model import build_alert

        ts = datetime.now(UTC)
        name, device_id = self.host
        source_row = {"Timestamp": ts, "DeviceName": name, "DeviceId": device_id,
                      "ReportId": len(self.transitions) + self.transitions_dropped}  # fmt: skip
        projected: dict[str, Any] = {
            "Timestamp": ts, "DeviceName": name, "CpuPercent": round(share, 1),
            "MaxCpuPercent": self.max_percent, "Shedding": [k.name for k in self.order[: self.level]],
            "ShedEvents": dict(self.episode), "Reason": reason,
        }  # fmt: skip
        self.send(build_alert(rule, "SensorHealth", source_row, projected, self.source or "cpu-budget"))

    # --- reports -----------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """For the summary and the heartbeats."""
        return {
            "max_cpu_percent": self.max_percent,
            "level": self.level,
            "shedding": [k.name for k in self.order[: self.level]],
            "order": [k.name for k in self.order],
            "cpu_percent": self.share,
            "saturated": self.saturated,
            "peak_level": self.peak_level,
            "events_seen": self.seen,
            "shed": dict(self.shed),
            "shed_total": sum(self.shed.values()),
            "transitions": list(self.transitions),
            "transitions_dropped": self.transitions_dropped,
        }


@dataclass(frozen=True, slots=True)
class Clocks:
    """Wall clock, this process's CPU clock and sleep, shared by the ``--rate`` pacer and the CPU budget."""

    wall: Callable[[], float] = time.monotonic
    cpu: Callable[[], float] = time.process_time
    sleep: Callable[[float], None] = time.sleep


SYSTEM_CLOCKS = Clocks()  # what the commands use (a test puts a simulated machine here)


def budget_for(max_percent: float, ruleset: Any, send: HealthSend | None, source: str,
               host: tuple[str, str] = ("", ""), clocks: Clocks | None = None) -> CpuBudget:  # fmt: skip
    """The CPU budget a command runs with: the rules' shed order, health alerts through ``send``."""
    c = clocks or SYSTEM_CLOCKS
    return CpuBudget(max_percent, order_for_rules(ruleset), clock=c.wall, cpu_clock=c.cpu, send=send,
                     host=host, source=source)  # fmt: skip
