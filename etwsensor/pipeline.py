"""The detection pipeline: sources → normalizer → rules → allowlist → suppression → alerts → sinks.

``Detector`` is the per-row part (the same object serves replay and live tracing); ``replay`` drives it
over files. The stream clock for now()/ago() is the newest event time seen (or a pinned ``now``), so a
recording replays to the same alerts whenever it is replayed.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from etwsensor.alerts.allowlist import Allowlist
from etwsensor.alerts.model import build_alert
from etwsensor.alerts.suppress import SuppressionPolicy, Suppressor
from etwsensor.heartbeat import Heartbeat, PipelineSnapshot, reload_record, ruleset_version
from etwsensor.rules import Match, RowGate, RuleSet

if TYPE_CHECKING:
    from etwsensor.budget import Clocks, CpuBudget
    from etwsensor.events import RawEvent
    from etwsensor.normalize import Normalizer
    from etwsensor.rules.reload import RuleReloader

AlertDict = dict[str, Any]
_NO_ALERTS: list[AlertDict] = []


class AlertSink(Protocol):
    def send(self, alert: AlertDict) -> None: ...


class Detector:
    """Rules → allowlist → suppression → alert dicts, for one stream of rows."""

    def __init__(
        self,
        ruleset: RuleSet,
        source: str,
        allowlist: Allowlist | None = None,
        suppressor: Suppressor | None = None,
    ) -> None:
        self.ruleset = ruleset
        self.source = source
        self.allowlist = allowlist or Allowlist()
        self.suppressor = suppressor or Suppressor()
        self.matched = Counter[str]()
        self.alerts = Counter[str]()

    def on_row(self, table: str, row: dict[str, Any], now: datetime | None) -> list[AlertDict]:
        matches = self.ruleset.evaluate(table, row, now)
        if not matches:
            return _NO_ALERTS
        return self._alerts(table, row, matches)

    def flush(self) -> list[AlertDict]:
        """End of a stream: the results of stateful rules' open windows."""
        matches = self.ruleset.flush()
        return self._alerts("", {}, matches) if matches else _NO_ALERTS

    def tick(self, now: datetime) -> list[AlertDict]:
        """An idle live stream: windows closed by the wall clock."""
        matches = self.ruleset.advance(now)
        return self._alerts("", {}, matches) if matches else _NO_ALERTS

    def _alerts(self, table: str, row: dict[str, Any], matches: list[Match]) -> list[AlertDict]:
        out: list[AlertDict] = []
        for m in matches:
            rule = m.rule
            self.matched[rule.id] += 1
            source, source_table = (m.source, m.table or table) if m.source is not None else (row, table)
            if self.allowlist.allows(rule.id, source, m.row):
                continue
            reason = m.row.get("Reason")
            held = self.suppressor.admit(
                rule.id, reason if isinstance(reason, str) else None, source, source.get("Timestamp")
            )
            if held is None:
                continue
            self.alerts[rule.id] += 1
            out.append(build_alert(rule, source_table, source, m.row, self.source, held, m.report_ids))
        return out


@dataclass
class ReplaySummary:
    """What the closing summary reports (stderr, or one JSON object with --json-summary)."""

    inputs: list[str] = field(default_factory=list)
    events: int = 0
    rows: Counter[str] = field(default_factory=Counter)
    rows_by_action: dict[str, Counter[str]] = field(default_factory=dict)
    rows_skipped: Counter[str] = field(default_factory=Counter)  # counted in rows, never built
    alerts: Counter[str] = field(default_factory=Counter)
    matched: Counter[str] = field(default_factory=Counter)
    suppressed: Counter[str] = field(default_factory=Counter)
    allowlisted: Counter[str] = field(default_factory=Counter)
    decode_errors: int = 0
    undecoded: int = 0
    unresolved: Counter[str] = field(default_factory=Counter)
    rule_errors: dict[str, int] = field(default_factory=dict)
    damage: list[str] = field(default_factory=list)
    sinks: dict[str, Any] = field(default_factory=dict)
    interrupted: bool = False  # Ctrl-C: the counts are the run so far
    timing: dict[str, Any] = field(default_factory=dict)  # wall and CPU seconds of the run, --rate
    enrich: dict[str, Any] = field(default_factory=dict)  # image facts: where from, counts, what stayed empty
    input_kinds: dict[str, str] = field(default_factory=dict)  # path → etl, recording, evtx, …
    # Windows event logs: events per provider and "id name"; the ones no table takes, and why
    # mapped events still made no row
    source_events: dict[str, Counter[str]] = field(default_factory=dict)
    unmapped_events: Counter[str] = field(default_factory=Counter)
    events_without_rows: Counter[str] = field(default_factory=Counter)
    state: dict[str, dict[str, int]] = field(default_factory=dict)  # per stateful rule
    shed: dict[str, Any] = field(default_factory=dict)  # --max-cpu: events shed per kind (etwsensor.budget)

    def as_json(self) -> dict[str, Any]:
        return {
            "inputs": self.inputs,
            "events": self.events,
            "rows": dict(self.rows),
            "rows_by_action": {t: dict(c) for t, c in self.rows_by_action.items()},
            "rows_skipped": dict(self.rows_skipped),
            "alerts": sum(self.alerts.values()),
            "alerts_by_rule": dict(self.alerts),
            "matched_by_rule": dict(self.matched),
            "suppressed_by_rule": dict(self.suppressed),
            "allowlisted_by_rule": dict(self.allowlisted),
            "decode_errors": self.decode_errors,
            "undecoded": self.undecoded,
            "unresolved": dict(self.unresolved),
            "rule_errors": self.rule_errors,
            "damage": self.damage,
            "sinks": self.sinks,
            "interrupted": self.interrupted,
            "timing": self.timing,
            "enrich": self.enrich,
            "input_kinds": self.input_kinds,
            "source_events": {p: dict(c) for p, c in self.source_events.items()},
            "unmapped_events": dict(self.unmapped_events),
            "events_without_rows": dict(self.events_without_rows),
            "stateful_rules": self.state,
            "shed": self.shed,
        }


Progress = Callable[[int, int, int], None]  # events, rows, alerts so far
TableRow = tuple[str, dict[str, Any]]


def add_row_counts(summary: ReplaySummary, counts: dict[str, dict[str, int]]) -> None:
    """Rows per table and ActionType (the normalizer's or a row file's counts) into the summary."""
    for table, actions in counts.items():
        summary.rows[table] += sum(actions.values())
        summary.rows_by_action.setdefault(table, Counter()).update(actions)


def add_source_counts(summary: ReplaySummary, source: Any) -> None:
    """Events per provider and event id of a Windows event log (what the issue's summary names)."""
    from etwsensor.sources.windows_events import WindowsEventSource

    if not isinstance(source, WindowsEventSource):
        return
    summary.events += source.skipped  # read and counted per id, never made into RawEvents
    for count in source.stats.by_event.values():
        label = f"{count.id} {count.name}".strip()
        summary.source_events.setdefault(count.provider, Counter())[label] += count.count
        if not count.known:
            summary.unmapped_events[f"{count.provider} {label}"] += count.count


def _row_batches(
    path: Path,
    device_map: str | None,
    gates: Mapping[str, RowGate],
    summary: ReplaySummary,
    by_provider: Counter[str] | None = None,
    files_from: str | None = None,
    active: list[Normalizer] | None = None,
    device_name: str | None = None,
    pacer: Pacer | None = None,
    budget: CpuBudget | None = None,
    trusted_roots: Path | None = None,
) -> Iterator[tuple[Sequence[TableRow], datetime | None, int]]:
    """The rows of one input, in batches (the rows one event completes) with their event time and
    the rows made so far in this input (built or skipped by a gate: the count the summary shows);
    events that complete no row yield nothing. Fills the input's counts into the summary at the end."""
    from etwsensor.normalize import Normalizer, is_row_file
    from etwsensor.sources import open_source, source_kind

    if is_row_file(path):
        from etwsensor.sources.rowfile import read_row_file

        rows = read_row_file(path)
        counts: dict[str, dict[str, int]] = {}
        for made, (table, row) in enumerate(rows, start=1):
            summary.events += 1
            if pacer is not None:
                pacer.step()
            actions = counts.setdefault(table, {})
            action = str(row.get("ActionType"))
            actions[action] = actions.get(action, 0) + 1
            ts = row.get("Timestamp")
            yield ((table, row),), ts if isinstance(ts, datetime) else None, made
        add_row_counts(summary, counts)
        summary.input_kinds[str(path)] = rows.kind  # known once read: $table rows or a Defender export
        if rows.bad:
            summary.damage.append(f"{path}: {rows.bad} bad line(s) skipped")
            summary.damage.extend(f"{path}: line {n}: {reason}" for n, reason in rows.bad_lines[:100])
        return
    source = open_source(path, host_name=device_name)
    summary.input_kinds[str(path)] = source_kind(path)
    facts = None
    if files_from is not None:
        from etwsensor.enrich import offline_enricher

        facts = offline_enricher(files_from, trusted_roots=trusted_roots)
    from etwsensor.enrich.device import named_header

    header = named_header(source.header, device_name)
    normalizer = Normalizer(header, device_map=device_map, gates=gates, facts=facts)
    if active is not None:  # a hot reload re-gates the normalizer of the input being read
        active[:] = [normalizer]
    process = normalizer.process
    rows_sink = normalizer.sink  # its report_id counts every row made, built or skipped
    events: Iterable[RawEvent] = source.events()
    if budget is not None and summary.input_kinds[str(path)] == "etl":  # raw records: shed before decoding
        from etwsensor.sources.etl_source import EtlSource

        assert isinstance(source, EtlSource)
        events = ()  # asked by each record's identity (provider GUID, event id or opcode), then decoded
        identify, decode, admit = source.decoder.identify, source.decoder.decode, budget.admit
        for rec in source.records():
            identity = identify(rec)
            if identity is None:
                decode(rec)  # not an event we decode: only counted (as ``other``) by the decoder
                continue
            summary.events += 1
            if by_provider is not None:
                by_provider[identity[0]] += 1
            if pacer is not None:
                pacer.step()
            if not admit(*identity):
                continue  # over the CPU ceiling: shed, counted per kind, never decoded
            event = decode(rec)
            if event is None:  # never, for a record with an identity
                continue
            batch = process(event)
            if batch:
                yield batch, event.ts, rows_sink.report_id
    for event in events:
        summary.events += 1
        if by_provider is not None:  # only while heartbeats report events/s per provider
            by_provider[event.provider] += 1
        if pacer is not None:
            pacer.step()
        if budget is not None and not budget.admit(event.provider, event.name):
            continue  # over the CPU ceiling: shed, counted per kind
        batch = process(event)
        if batch:
            yield batch, event.ts, rows_sink.report_id
    batch = normalizer.flush()
    if batch:
        yield batch, None, rows_sink.report_id
    totals = source.stats.totals()
    summary.decode_errors += totals["decode_errors"]
    summary.undecoded += totals["undecoded"]
    add_row_counts(summary, normalizer.sink.counts)
    summary.unresolved.update(normalizer.sink.unresolved)
    summary.rows_skipped.update(normalizer.sink.skipped)
    summary.damage.extend(str(d) for d in source.damage)
    add_source_counts(summary, source)
    summary.events_without_rows.update(normalizer.windows.skipped)
    _add_enrich(summary, str(path), normalizer.facts, files_from)
    if normalizer.paths.inferred:  # drive letters guessed, not read from the trace: the summary says so
        summary.enrich["inputs"][str(path)]["inferred_device_map"] = dict(normalizer.paths.inferred)


def _add_enrich(summary: ReplaySummary, path: str, facts: Any, files_from: str | None) -> None:
    """Per input: where its image facts came from and, when from nowhere, which columns stay empty."""
    from etwsensor.enrich import enriched_columns

    per_input = summary.enrich.setdefault("inputs", {})
    if facts is not None:
        doc = facts.stats()
        doc["source"] = "--files-from " + files_from if files_from else "recorded ImageFacts events"
        per_input[path] = doc
        return
    per_input[path] = {
        "source": None,
        "empty_columns": {t: enriched_columns(t) for t in _ENRICHED_TABLES},
        "why": "the input holds no ImageFacts events and no --files-from folder was given: hashes, file "
        "sizes, version info and signatures cannot be computed without the files",
    }


_ENRICHED_TABLES = ("DeviceProcessEvents", "DeviceImageLoadEvents", "DeviceFileEvents",
                    "DeviceRegistryEvents")  # fmt: skip


def input_rows(path: Path, device_map: str | None, summary: ReplaySummary) -> Iterator[TableRow]:
    """Every row of one input as ``replay`` reads it, none skipped by row gates (for hunting and
    export). Raises SourceOpenError when the input is not a trace; fills the summary like replay."""
    for batch, _ts, _made in _row_batches(path, device_map, {}, summary):
        yield from batch


def replay(
    paths: Iterable[Path],
    detector: Detector,
    sinks: Iterable[AlertSink],
    device_map: str | None = None,
    now: datetime | None = None,
    progress: Progress | None = None,
    heartbeat: Heartbeat | None = None,
    files_from: str | None = None,
    reloader: RuleReloader | None = None,
    device_name: str | None = None,
    rate: float | None = None,
    budget: CpuBudget | None = None,
    clocks: Clocks | None = None,
    trusted_roots: Path | None = None,
) -> ReplaySummary:
    """Run every input through the detector and the sinks, in order. Never raises on bad input.
    With a ``heartbeat``, its start record goes out first, its stop record last, and running records
    between rows whenever its interval has passed. With a ``reloader``, a rule set it compiled
    aside replaces the running one between two rows (the normalizer's state is kept).
    ``files_from``: a ``--files-from`` folder map; image facts are computed from those files.
    ``device_name``: DeviceName of every row (``--device-name``), DeviceId derived from it.
    ``trusted_roots``: a PEM file of roots signatures may also chain to (``--trusted-roots``).
    ``rate``: at most this many events per second (a live host's pace), so ``summary.timing`` tells
    the CPU share the pipeline needs at that rate. ``budget``: a CPU ceiling that sheds the lowest-value
    events while the share is over it (``--max-cpu``); ``clocks``: the wall/CPU clocks and sleep of both."""
    from etwsensor.sources import SourceOpenError

    summary = ReplaySummary()
    pacer = (Pacer(rate) if clocks is None else Pacer(rate, clocks.wall, clocks.sleep)) if rate else None
    wall0, cpu0 = time.perf_counter(), time.process_time()
    sink_list = list(sinks)
    by_provider: Counter[str] | None = Counter() if heartbeat is not None else None
    active: list[Normalizer] = []

    def snapshot(rows: int, alerts: int) -> PipelineSnapshot:
        return PipelineSnapshot(
            events=summary.events, rows=rows, alerts=alerts, events_by_provider=by_provider or {},
            rules_version=ruleset_version(detector.ruleset.rules), rules_count=len(detector.ruleset.rules),
            rule_errors=sum(detector.ruleset.errors.values()), sinks=sink_states(sink_list),
            stateful=detector.ruleset.state_stats(), shed=dict(budget.shed) if budget is not None else {},
        )  # fmt: skip

    if heartbeat is not None:
        heartbeat.start(snapshot(0, 0))
    on_row = detector.on_row
    gates: Mapping[str, RowGate] = detector.ruleset.row_gates()  # rows no rule can match: counted, not built
    rows_before = 0  # rows made by the inputs already replayed
    alerts_sent = 0
    next_progress = 0
    try:
        for path in paths:
            summary.inputs.append(str(path))
            detector.source = str(path)
            clock: datetime | None = now  # per input: each file is its own stream
            try:
                batches = _row_batches(path, device_map, gates, summary, by_provider, files_from, active,
                                       device_name=device_name, pacer=pacer, budget=budget,
                                       trusted_roots=trusted_roots)  # fmt: skip
                for batch, ts, made in batches:
                    if now is None and ts is not None and (clock is None or ts > clock):
                        clock = ts
                    for table, row in batch:
                        for alert in on_row(table, row, clock):
                            alerts_sent += 1
                            for sink in sink_list:
                                sink.send(alert)
                    rows_made = rows_before + made
                    if reloader is not None and reloader.ready:
                        gates = apply_reload(reloader, detector, active, sink_list, gates)
                    if rows_made >= next_progress:
                        if progress is not None:
                            progress(summary.events, rows_made, alerts_sent)
                        if heartbeat is not None and heartbeat.due():
                            heartbeat.tick(snapshot(rows_made, alerts_sent))
                        next_progress = rows_made + 2048
            except SourceOpenError as exc:  # not a trace at all: reported as damage, the others still run
                summary.damage.append(str(exc))
            summary.state.update(detector.ruleset.state_stats())  # before the flush empties it
            for alert in detector.flush():  # each input is its own stream: its windows close at its end
                alerts_sent += 1
                for sink in sink_list:
                    sink.send(alert)
            rows_before = summary.rows.total()
    except KeyboardInterrupt:  # Ctrl-C: stop reading; the sinks still close and the summary is printed
        summary.interrupted = True
    if progress is not None:
        progress(summary.events, summary.rows.total(), alerts_sent)
    summary.alerts = detector.alerts
    summary.matched = detector.matched
    summary.suppressed = detector.suppressor.suppressed
    summary.allowlisted = detector.allowlist.silenced
    summary.rule_errors = dict(detector.ruleset.errors)
    if budget is not None:
        summary.shed = budget.state()
    if heartbeat is not None:
        heartbeat.stop(snapshot(summary.rows.total(), alerts_sent))
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    summary.timing = {
        "wall_seconds": round(wall, 3),
        "cpu_seconds": round(cpu, 3),
        "cpu_percent": round(100 * cpu / wall, 1) if wall > 0 else 0.0,  # of one core
        "rate_limit": rate,
    }
    return summary


class Pacer:
    """Holds a replay to ``rate`` events per second of wall time (sleeping when ahead), so the CPU a live
    host's event rate costs can be measured anywhere (``replay --rate``)."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:  # fmt: skip
        if rate <= 0:
            raise ValueError("rate must be > 0 events per second")
        self.rate = rate
        self._clock, self._sleep = clock, sleep
        self._start = clock()
        self.events = 0
        self.slept = 0.0

    def step(self) -> None:
        self.events += 1
        if self.events & 63:  # looking at the clock every 64 events keeps the pacing cheap
            return
        ahead = self._start + self.events / self.rate - self._clock()
        if ahead > 0:
            self.slept += ahead
            self._sleep(ahead)


def apply_reload(
    reloader: RuleReloader,
    detector: Detector,
    active: list[Normalizer],
    sinks: Sequence[AlertSink],
    gates: Mapping[str, RowGate],
    annotate: Callable[[RuleSet], dict[str, Any]] | None = None,
) -> Mapping[str, RowGate]:
    """Swap in the rule set the reloader compiled (between rows) and report it on the sinks; a refused
    set leaves everything as it was. ``annotate`` adds fields to the record of an applied set (the live
    path says whether the sessions need a re-plan). Returns the gates now in force."""
    outcome = reloader.take()
    if outcome is None:
        return gates
    if outcome.ruleset is not None:
        detector.ruleset = outcome.ruleset
        if outcome.allowlist is not None:
            detector.allowlist = outcome.allowlist
        gates = outcome.ruleset.row_gates()
        for normalizer in active:
            normalizer.regate(gates)
    record = reload_record(outcome, detector.ruleset)
    if annotate is not None and outcome.ruleset is not None:
        record.update(annotate(outcome.ruleset))
    for sink in sinks:
        sink.send(record)
    return gates


def sink_states(sinks: Iterable[object]) -> dict[str, dict[str, Any]]:
    """Each sink's delivery counters by name (a SinkSet counts as the sinks it holds)."""
    states: dict[str, dict[str, Any]] = {}
    for sink in sinks:
        inner = getattr(sink, "sinks", None)
        if inner is not None:
            states.update(sink_states(inner))
            continue
        state = getattr(sink, "state", None)
        if callable(state):
            doc = state()
            states[str(doc.get("sink", getattr(sink, "name", "?")))] = doc
    return states


def suppressor_from(
    window_seconds: float,
    key_columns: Iterable[str],
    per_rule: dict[str, tuple[float | None, list[str] | None]],
) -> Suppressor:
    default = SuppressionPolicy(timedelta(seconds=window_seconds), tuple(key_columns))
    rules = {
        rid: SuppressionPolicy(
            timedelta(seconds=w) if w is not None else default.window,
            tuple(cols) if cols is not None else default.key_columns,
        )
        for rid, (w, cols) in per_rule.items()
    }
    return Suppressor(default, rules)
