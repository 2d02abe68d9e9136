"""The session plan: which ETW sessions, providers, keywords and filters a rule set needs.

Pure and OS-independent: ``trace --plan`` prints it anywhere, and the Windows layer (session.py)
starts exactly what it says. Derived from the loaded rules (which tables, which ActionTypes) through
``needs.py`` and from providers/*.yaml (GUIDs, keyword masks, enable flags, event ids).

Two sessions (DESIGN "Live tracing on Windows"):
* a privately named system-logger session for the classic kernel classes (command lines and SIDs
  exist only in the classic Process class); they cannot be filtered by opcode, only by enable flag;
* a manifest session with Kernel-Process (+ rundown), Kernel-File and Kernel-Registry, each with the
  smallest keyword mask that covers the needed events and an EVENT_FILTER_TYPE_EVENT_ID filter-in list,
  plus Microsoft-Windows-Kernel-EventTracing watching the other session being stopped (tamper).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any, Literal

from etwsensor.decode.schema import EventDef, ProviderDef, find_provider, load_providers
from etwsensor.sources.live import needs

if TYPE_CHECKING:
    from etwsensor.rules import RuleSet

SYSTEM_TRACE_PROVIDER = "SystemTraceProvider"
SYSTEM_TRACE_GUID = "9e814aad-3204-11d2-9a82-006008a86939"  # SystemTraceControlGuid
KERNEL_LOGGER_NAME = "NT Kernel Logger"  # the fallback before Windows 8
SESSION_PREFIX = "etwsensor-"
KERNEL_SESSION = SESSION_PREFIX + "kernel"
PROVIDER_SESSION = SESSION_PREFIX + "providers"

EVENT_FILTER_TYPE_NONE = 0x0
EVENT_FILTER_TYPE_EVENT_ID = 0x80000200
MAX_EVENT_FILTER_EVENT_ID_COUNT = 64  # evntprov.h; Windows 8.1+
TRACE_LEVEL_VERBOSE = 5
CAPTURED_DATA_VALUE = 2  # the 4-byte payload of the Kernel-Registry captured-data descriptor

# Session stop (3, 11), provider disable (15, 41), CORRECTIONS §6, and provider enable (14): re-enabling with
# keyword 0 or level 0 blinds a provider without a disable.
TAMPER_EVENTS: tuple[str, ...] = ("SessionStop", "SessionStop11", "ProviderEnable", "ProviderDisable",
                                  "ProviderDisable41")  # fmt: skip


@cache
def event_tracing_provider() -> ProviderDef:
    """Microsoft-Windows-Kernel-EventTracing (providers/), the provider of the tamper watch."""
    provider = find_provider("Microsoft-Windows-Kernel-EventTracing")
    if provider is None:
        raise PlanError("providers/ has no Microsoft-Windows-Kernel-EventTracing definition")
    return provider


class PlanError(ValueError):
    """The provider data cannot express what the plan needs (a bug in needs.py or providers/)."""


@dataclass(frozen=True, slots=True)
class FilterSpec:
    """One EVENT_FILTER_DESCRIPTOR: an event-id filter-in list, or Kernel-Registry's captured-data value."""

    type: int
    event_ids: tuple[int, ...] = ()
    value: int | None = None
    purpose: str = ""

    def as_json(self) -> dict[str, Any]:
        if self.type == EVENT_FILTER_TYPE_EVENT_ID:
            return {"type": "EVENT_FILTER_TYPE_EVENT_ID", "code": f"0x{self.type:x}", "filter_in": True,
                    "event_ids": list(self.event_ids)}  # fmt: skip
        return {"type": "EVENT_FILTER_TYPE_NONE", "code": f"0x{self.type:x}", "value": self.value,
                "purpose": self.purpose}  # fmt: skip


@dataclass(frozen=True, slots=True)
class ClassPlan:
    """A classic kernel class enabled in the system-logger session (its events, keyed by opcode)."""

    name: str
    guid: str
    opcodes: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ProviderPlan:
    name: str
    guid: str
    keywords: int  # MatchAnyKeyword; for the system-trace provider, the enable-flag mask
    level: int = TRACE_LEVEL_VERBOSE
    event_ids: tuple[int, ...] = ()
    filters: tuple[FilterSpec, ...] = ()
    classes: tuple[ClassPlan, ...] = ()
    capture_state: bool = False  # request rundown with EVENT_CONTROL_CODE_CAPTURE_STATE after enabling

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "guid": self.guid,
            "keywords": f"0x{self.keywords:x}",
            "event_ids": list(self.event_ids),
            "filters": [f.as_json() for f in self.filters],
            "classes": [{"name": c.name, "guid": c.guid} for c in self.classes],
            "capture_state": self.capture_state,
        }


@dataclass(frozen=True, slots=True)
class SessionPlan:
    name: str
    kind: Literal["system-logger", "manifest"]
    providers: tuple[ProviderPlan, ...]
    enable_flags: tuple[str, ...] = ()  # system-logger sessions: EVENT_TRACE_FLAG_* names
    flags_mask: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "enable_flags": list(self.enable_flags),
            "providers": [p.as_json() for p in self.providers],
        }


@dataclass(frozen=True, slots=True)
class TracePlan:
    sessions: tuple[SessionPlan, ...]
    # table → the ActionTypes the rules can match (what the plan was derived from)
    tables: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"sessions": [s.as_json() for s in self.sessions]}

    def session(self, kind: str) -> SessionPlan | None:
        return next((s for s in self.sessions if s.kind == kind), None)

    def provider(self, name: str) -> ProviderPlan | None:
        for s in self.sessions:
            for p in s.providers:
                if p.name == name:
                    return p
        return None

    def session_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.sessions)


# --- rules → tables and ActionTypes -----------------------------------------------------------


def table_actions(table: str) -> frozenset[str]:
    """The ActionTypes etwsensor produces for ``table`` (empty for a table it does not know)."""
    return frozenset(a for a in needs.TABLES.get(table, {}) if a is not None)


def tables_needed(ruleset: RuleSet) -> dict[str, frozenset[str]]:
    """Table → the ActionTypes some rule can match.

    Conservative: a rule branch narrows the ActionTypes only when its prefilter guarantees a literal
    of the ActionType column (``ActionType == "X"``, ``in (...)``, ``has``...); any other branch of a
    table needs all of them.
    """
    out: dict[str, set[str]] = {}
    for rule in ruleset.rules:
        if rule.plan is None:
            continue
        for branch in rule.plan.branches:
            actions = table_actions(branch.table)
            # Needles are (column, lower-cased literal, ...) one of which a matching row holds; "contains"
            # is true of every kind of needle, so testing it never drops an ActionType a rule can match.
            literals = getattr(branch, "needles", None)  # the rule compiler's prefilter; absent: no narrowing
            if literals and all(n[0] == "ActionType" for n in literals):
                actions = frozenset(a for a in actions if any(n[1] in a.lower() for n in literals))
            out.setdefault(branch.table, set()).update(actions)
    return {t: frozenset(a) for t, a in out.items()}


# --- tables → sessions ------------------------------------------------------------------------


def _merge(into: dict[str, list[str]], more: needs.Needs) -> None:
    for provider, events in more.items():
        bucket = into.setdefault(provider, [])
        bucket.extend(e for e in events if e not in bucket)


def events_needed(
    tables: Mapping[str, Collection[str]], classic_fallback: bool = False
) -> dict[str, list[str]]:
    """Provider or class name → event names, for tables and their ActionTypes."""
    wanted: dict[str, list[str]] = {}
    if not tables:
        return wanted
    _merge(wanted, needs.TRACKING)
    for table, actions in tables.items():
        per_action = needs.TABLES.get(table)
        if per_action is None:
            continue
        _merge(wanted, per_action.get(None, {}))
        for action in sorted(actions):
            _merge(wanted, per_action.get(action, {}))
        if classic_fallback:
            _merge(wanted, needs.CLASSIC_FALLBACK.get(table, {}))
    return wanted


def _event(provider: ProviderDef, name: str) -> EventDef:
    for ev in provider.events:
        if ev.name == name:
            return ev
    raise PlanError(f"{provider.name} has no event {name!r} in providers/")


def keyword_mask(provider: ProviderDef, events: Iterable[EventDef]) -> int:
    """The smallest MatchAnyKeyword mask that enables every event: for each event its rarest keyword.

    An event fires when any of its keywords is enabled (MatchAnyKeyword), so one per event is enough;
    the rarest (fewest events of the provider carry it) lets the least else through.
    """
    users = {kw: sum(kw in e.keywords for e in provider.events) for kw in provider.keywords}
    mask = 0
    for ev in events:
        if not ev.keywords:
            raise PlanError(f"{provider.name}/{ev.name} has no keyword: it cannot be enabled selectively")
        best = min(ev.keywords, key=lambda kw: (users[kw], provider.keywords[kw]))
        mask |= provider.keywords[best]
    return mask


def _manifest_plan(provider: ProviderDef, event_names: list[str]) -> ProviderPlan:
    events = [_event(provider, n) for n in event_names]
    ids = tuple(sorted({e.key for e in events}))
    filters: list[FilterSpec] = []
    if len(ids) <= MAX_EVENT_FILTER_EVENT_ID_COUNT:
        filters.append(FilterSpec(EVENT_FILTER_TYPE_EVENT_ID, event_ids=ids))
    captured = needs.CAPTURED_DATA_EVENTS.get(provider.name)
    if captured is not None and captured in event_names:
        filters.append(FilterSpec(EVENT_FILTER_TYPE_NONE, value=CAPTURED_DATA_VALUE,
                                  purpose=f"{captured} carries the value data (CapturedData)"))  # fmt: skip
    return ProviderPlan(
        provider.name,
        provider.guid,
        keyword_mask(provider, events),
        event_ids=ids,
        filters=tuple(filters),
        capture_state=provider.name in needs.CAPTURE_STATE,
    )


def build_plan(
    tables: Mapping[str, Collection[str]],
    providers: Iterable[ProviderDef] | None = None,
    classic_fallback: bool = False,
    watch_tamper: bool = True,
    instance: str | None = None,
) -> TracePlan:
    """The sessions for ``tables`` (table → ActionTypes, as ``tables_needed`` gives).

    ``instance`` is appended to the session names (the live run uses its pid, so two runs never
    stop each other's sessions); ``--plan`` shows the base names.
    """
    by_name = {p.name: p for p in (providers if providers is not None else load_providers())}
    wanted = events_needed(tables, classic_fallback)
    suffix = f"-{instance}" if instance else ""
    classes: list[ClassPlan] = []
    flags: list[str] = []
    mask = 0
    manifest: list[ProviderPlan] = []
    for name, event_names in wanted.items():
        provider = by_name.get(name)
        if provider is None:
            raise PlanError(f"no provider {name!r} in providers/")
        if provider.kind == "classic":
            opcodes = tuple(sorted(_event(provider, n).key for n in event_names))
            classes.append(ClassPlan(provider.name, provider.guid, opcodes))
            for flag in needs.CLASSIC_FLAGS[provider.name]:
                if flag not in provider.enable_flags:
                    raise PlanError(f"{provider.name} has no enable flag {flag}")
                flags.append(flag)
                mask |= provider.enable_flags[flag]
        else:
            manifest.append(_manifest_plan(provider, event_names))
    sessions: list[SessionPlan] = []
    if classes:
        system = ProviderPlan(SYSTEM_TRACE_PROVIDER, SYSTEM_TRACE_GUID, mask, classes=tuple(classes))
        sessions.append(SessionPlan(KERNEL_SESSION + suffix, "system-logger", (system,), tuple(flags), mask))
    if manifest:
        if watch_tamper:
            watch = event_tracing_provider()
            manifest.append(_manifest_plan(watch, list(TAMPER_EVENTS)))
        sessions.append(SessionPlan(PROVIDER_SESSION + suffix, "manifest", tuple(manifest)))
    return TracePlan(tuple(sessions), {t: frozenset(a) for t, a in tables.items()})


def plan_for_rules(
    ruleset: RuleSet, classic_fallback: bool = False, instance: str | None = None
) -> TracePlan:
    return build_plan(tables_needed(ruleset), classic_fallback=classic_fallback, instance=instance)
