"""Rule files → compiled rules → a :class:`RuleSet` that evaluates one row at a time.

Formats: Sentinel analytic-rule YAML (``id, name, description, severity, tactics,
relevantTechniques, query`` + optional ``confidence, falsePositives, references, version``) and
plain ``.kql`` with an optional ``// key: value`` comment header.

Compiling starts from duckdb-kql's IR, which is slow to produce (a pure-Python ANTLR parse), so
the IR of each query is cached on disk keyed by the hash of its text and the versions of the
front end and of this compiler. The cache directory is ``$ETWSENSOR_CACHE_DIR`` or
``~/.cache/etwsensor``; it holds pickles of IR nodes, read back by an unpickler that resolves
only IR classes, and it must still be as private as the user's home (a writable cache decides
what the rules compile to).
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import os
import pickle
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

import msgspec

from etwsensor.cachedir import cache_root, write_atomically
from etwsensor.progress import counting
from etwsensor.rules.dispatch import RowGate, TableDispatch
from etwsensor.rules.errors import CompileError, RuleFailure
from etwsensor.rules.frontend import DUCKDB_KQL_VERSION, FrontEndError, locate, parse
from etwsensor.rules.irnorm import rebalance
from etwsensor.rules.kql_subset import parse_where_query
from etwsensor.rules.kqlir import ir
from etwsensor.rules.plan import Branch, Clock, Plan
from etwsensor.rules.query import QueryCompiler
from etwsensor.rules.sigma_correlation import Correlation, CorrelationError, is_correlation
from etwsensor.rules.sigma_correlation import parse as parse_correlation
from etwsensor.rules.sigma_correlation import to_kql as correlation_kql
from etwsensor.rules.stateful import ALLOWED_LATENESS
from etwsensor.tables import TABLE_NAMES

# Bump when the IR handed to the compiler changes meaning: invalidates cached entries.
CACHE_FORMAT = 2
RULE_SUFFIXES = (".yaml", ".yml", ".kql")
PREWARM_MIN = 64  # uncached files before a cold load fans the parse out to worker processes
BUILTIN_SOURCE = "builtin"

_HEADER_KEYS = {
    "id": "id",
    "name": "name",
    "title": "name",
    "description": "description",
    "severity": "severity",
    "confidence": "confidence",
    "tactics": "tactics",
    "techniques": "techniques",
    "relevanttechniques": "techniques",
    "falsepositives": "falsePositives",
    "references": "references",
    "version": "version",
}


@dataclass(slots=True)
class Rule:
    """One loaded rule: its metadata and its compiled plan."""

    id: str
    name: str
    query: str
    source: str  # file path, or "builtin:<file>"
    description: str = ""
    severity: str = "medium"
    confidence: str = "medium"
    tactics: tuple[str, ...] = ()
    techniques: tuple[str, ...] = ()
    false_positives: tuple[str, ...] = ()
    references: tuple[str, ...] = ()
    version: str = "1.0.0"
    status: str = ""  # Sigma's status (stable, test, experimental …)
    author: str = ""
    format: str = "kql"  # "kql", "sentinel" or "sigma": what the rule file was written in
    category: str = ""  # Sigma's logsource category
    sigma_name: str = ""  # Sigma's `name:` (correlations may refer to a rule by it)
    plan: Plan | None = field(default=None, repr=False)

    @property
    def tables(self) -> tuple[str, ...]:
        if self.plan is None:
            return ()
        seen = dict.fromkeys(b.table for b in self.plan.branches)
        return tuple(seen)

    @property
    def columns(self) -> tuple[str, ...]:
        return self.plan.columns if self.plan else ()

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "severity": self.severity,
            "confidence": self.confidence,
            "techniques": list(self.techniques),
            "tactics": list(self.tactics),
            "tables": list(self.tables),
            "source": self.source,
            "format": self.format,
            "status": self.status,
            "query": self.query,
        }


@dataclass(slots=True)
class Match:
    """A row a rule matched: the rule and the query's projected output row.

    From a stateful rule (summarize/join): ``source`` is the input row that completed the result
    (with ``table``), ``report_ids`` the ReportIds of the rows behind it.
    """

    rule: Rule
    row: dict[str, Any]
    source: dict[str, Any] | None = None
    table: str | None = None
    report_ids: tuple[int, ...] = ()


# --- the compiled-IR cache -------------------------------------------------------------------


def cache_dir() -> Path:
    return cache_root() / "rules"


def _cache_key(kql: str) -> str:
    h = hashlib.sha256(f"{CACHE_FORMAT}\0{DUCKDB_KQL_VERSION}\0".encode() + kql.encode("utf-8"))
    return h.hexdigest()


class _IrUnpickler(pickle.Unpickler):
    """Unpickles IR only: a pickle may name duckdb-kql's IR node classes and nothing else, so a
    damaged or tampered cache entry cannot call anything but an IR constructor (it is then
    refused and recompiled). Resolving the classes here also keeps the unpickler from importing
    the ``duckdb_kql`` package (and its ANTLR parser) to find them."""

    def find_class(self, module: str, name: str) -> Any:
        node = getattr(ir, name, None) if module == ir.__name__ else None
        if isinstance(node, type) and issubclass(node, ir.Node):
            return node
        raise pickle.UnpicklingError(f"not an IR class: {module}.{name}")


def _read_cached(path: Path) -> Any:
    with path.open("rb") as f:
        return _IrUnpickler(f).load()


def lower_cached(kql: str, use_cache: bool = True, generated: bool = False) -> ir.Query:
    """duckdb-kql's IR for ``kql``, from the cache when it is there (front-end errors too).

    ``generated``: the text was written by the Sigma converter; its subset of KQL is parsed by
    ``kql_subset`` (same IR, a hundredth of the time) and only what it leaves goes through ANTLR.
    """
    path = cache_dir() / f"{_cache_key(kql)}.pickle" if use_cache else None
    if path is not None:
        try:
            cached = _read_cached(path)
        except Exception:  # absent, torn, stale or not IR: (re)compiled, never fatal
            cached = None
        if isinstance(cached, ir.Query):
            return cached
        if isinstance(cached, tuple) and len(cached) == 3:
            raise FrontEndError(*cached)
    try:
        check_nesting(kql)  # before the parser, which spends minutes and gigabytes on 50k parentheses
        fast = parse_where_query(kql) if generated else None
        query: ir.Query | tuple[int, int, str] = rebalance(fast if fast is not None else parse(kql))
    except FrontEndError as exc:
        query = (exc.line, exc.col, exc.message)
    except RecursionError:  # e.g. 1+1+…+1 with a thousand terms: a chain too long to rebalance
        query = (1, 1, "expression nested too deeply (split it, or use in/has_any with a list)")
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_bytes(pickle.dumps(query, protocol=pickle.HIGHEST_PROTOCOL))
            tmp.replace(path)
        except (OSError, pickle.PicklingError, RecursionError):
            pass  # a cache that cannot be written only costs time
    if isinstance(query, tuple):
        raise FrontEndError(*query)
    return query


# --- rule files ----------------------------------------------------------------------------------


@dataclass(slots=True)
class _RuleText:
    meta: dict[str, Any]
    query: str
    # Where the query text starts in its file, to turn KQL positions into file positions.
    line_offset: int = 0
    col_offset: int = 0
    block: bool = False  # a YAML block scalar: every line is indented by col_offset
    correlation: Correlation | None = None  # a Sigma correlation: its query is built from other rules
    generated: bool = False  # the query was written by a converter (Sigma), not found in the file


def _as_tuple(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    if isinstance(value, list):
        return tuple(str(v) for v in value)
    return (str(value),)


def _read_kql(path: Path, text: str) -> _RuleText:
    meta: dict[str, Any] = {}
    lists: dict[str, list[str]] = {}
    current: str | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if not stripped.startswith("//"):
            break
        body = stripped[2:].strip()
        if current and body.startswith("- "):
            lists.setdefault(current, []).append(body[2:].strip())
            continue
        key, sep, value = body.partition(":")
        norm = _HEADER_KEYS.get(key.strip().lower().replace(" ", ""))
        if sep and norm and " " not in key.strip():
            current = norm
            if value.strip():
                meta[norm] = value.strip()
        else:
            current = None
    for key, values in lists.items():
        meta[key] = values
    return _RuleText(meta, text)


class NotApplicable(FrontEndError):
    """A valid rule for telemetry etwsensor does not produce (a Sigma log source with no Defender table)."""


def _read_sigma(text: str, data: dict[str, Any], use_cache: bool) -> _RuleText:
    from etwsensor.rules.sigma import SigmaFailure, convert_text

    try:
        return _sigma_text(convert_text(text, data, use_cache))
    except SigmaFailure as exc:
        raise _sigma_failure(exc) from exc


def _sigma_text(sr: Any) -> _RuleText:
    meta: dict[str, Any] = {
        "id": sr.id,
        "name": sr.title,
        "sigma_name": sr.name,
        "description": sr.description,
        "severity": sr.severity,
        "confidence": sr.confidence,
        "tactics": list(sr.tactics),
        "techniques": list(sr.techniques),
        "falsePositives": list(sr.false_positives),
        "references": list(sr.references),
        "status": sr.status,
        "author": sr.author,
        "format": "sigma",
        "category": sr.logsource.get("category", ""),
    }
    return _RuleText(meta, sr.kql, generated=True)


def _sigma_failure(exc: Any) -> FrontEndError:
    message = f"Sigma rule not converted ({exc.reason}): {exc.message}"
    error = NotApplicable if exc.reason == "unsupported logsource" else FrontEndError
    return error(exc.line, exc.col, message)


RULE_TEXT_FORMAT = 1  # bump when what a Sentinel YAML file is read into changes: invalidates the cache


def _rule_text_path(text: str) -> Path:
    key = hashlib.sha256(f"{RULE_TEXT_FORMAT}\0".encode() + text.encode("utf-8")).hexdigest()
    return cache_dir() / "text" / f"{key}.msgpack"


def _cached_rule_text(text: str) -> _RuleText | None:
    """A Sentinel YAML file read before (same text): its metadata, query and query position, without
    importing or running the YAML parser. msgpack holds data only; anything else is a miss."""
    try:
        entry = msgspec.msgpack.decode(_rule_text_path(text).read_bytes())
        meta, query, line_offset, col_offset, block = entry
    except (OSError, ValueError, TypeError, msgspec.MsgspecError):
        return None
    if not (isinstance(meta, dict) and isinstance(query, str) and type(block) is bool):
        return None
    if not (type(line_offset) is int and type(col_offset) is int):
        return None
    return _RuleText(meta, query, line_offset, col_offset, block)


def _store_rule_text(text: str, rt: _RuleText) -> None:
    entry = [rt.meta, rt.query, rt.line_offset, rt.col_offset, rt.block]
    with contextlib.suppress(TypeError, ValueError, msgspec.MsgspecError):
        packed = msgspec.msgpack.encode(entry)
        if msgspec.msgpack.decode(packed) == entry:  # metadata that reads back the same (no dates …)
            write_atomically(_rule_text_path(text), packed)


def _read_yaml(path: Path, text: str, use_cache: bool = True) -> _RuleText:
    if use_cache and (hit := _cached_rule_text(text)) is not None:
        return hit
    rt = _parse_yaml(path, text, use_cache)
    if use_cache and rt.correlation is None and not rt.generated:  # Sigma has its own cache
        _store_rule_text(text, rt)
    return rt


def _parse_yaml(path: Path, text: str, use_cache: bool) -> _RuleText:
    import yaml  # only for a file not read before: a warm start does not load PyYAML

    from etwsensor.rules.sigma import SigmaFailure, cached_conversion, is_sigma

    fast_yaml = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    if use_cache:  # a Sigma file converted before: no YAML parse at all
        try:
            hit = cached_conversion(text)
        except SigmaFailure as exc:
            raise _sigma_failure(exc) from exc
        if hit is not None:
            return _sigma_text(hit)
    try:
        quick = yaml.load(text, Loader=fast_yaml)
    except Exception:  # bad YAML (or too deep): the checked path below reports it with its position
        quick = None
    if isinstance(quick, dict) and "query" not in quick and is_sigma(quick):
        return _read_sigma(text, quick, use_cache)
    try:
        if isinstance(quick, dict):  # parsed: only the positions are missing (same nodes, C speed)
            node, data = yaml.compose(text, Loader=fast_yaml), quick
        else:  # the pure-Python loader's errors say where the YAML is wrong
            node = yaml.compose(text, Loader=yaml.SafeLoader)
            data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise FrontEndError(line, col, f"invalid YAML: {getattr(exc, 'problem', exc)}") from exc
    if not isinstance(data, dict) or not isinstance(node, yaml.MappingNode):
        raise FrontEndError(1, 1, "a rule file is a YAML mapping with at least 'query'")
    if is_correlation(data):
        return _correlation_text(data)
    if "query" not in data and is_sigma(data):
        return _read_sigma(text, data, use_cache)
    query = data.get("query")
    if not isinstance(query, str) or not query.strip():
        raise FrontEndError(1, 1, "the rule has no 'query'")
    rt = _RuleText({k: v for k, v in data.items() if k != "query"} | {"format": "sentinel"}, query)
    for key_node, value_node in node.value:
        if key_node.value == "query":
            start = value_node.start_mark
            if value_node.style in ("|", ">"):
                lines = text.splitlines()
                first = start.line + 1
                while first < len(lines) and not lines[first].strip():
                    first += 1
                indent = len(lines[first]) - len(lines[first].lstrip()) if first < len(lines) else 0
                rt.line_offset, rt.col_offset, rt.block = start.line + 1, indent, True
            else:
                rt.line_offset, rt.col_offset = start.line, start.column + (1 if value_node.style else 0)
    return rt


def _correlation_text(data: dict[str, Any]) -> _RuleText:
    try:
        correlation = parse_correlation(data)
    except CorrelationError as exc:
        raise FrontEndError(1, 1, str(exc)) from exc
    level = str(data.get("level") or "medium").lower()
    meta = {
        "id": correlation.id,
        "name": correlation.title,
        "description": data.get("description") or "",
        "severity": "high" if level == "critical" else level,
        "references": data.get("references"),
        "falsePositives": data.get("falsepositives"),
        "techniques": [
            t.split(".", 1)[1].upper() for t in data.get("tags") or () if t.startswith("attack.t")
        ],
    }
    return _RuleText(meta, "", correlation=correlation)


def _with_correlations(
    built: list[Rule], correlations: list[tuple[Path, str, _RuleText]], clock: Clock, use_cache: bool
) -> tuple[list[Rule], list[RuleFailure]]:
    """Sigma correlations compiled from the rules they refer to (by id or name); the referenced
    rules leave the set unless a correlation says ``generate: true``."""
    by_ref: dict[str, Rule] = {}
    for rule in built:
        by_ref.setdefault(rule.name, rule)
        if rule.sigma_name:
            by_ref[rule.sigma_name] = rule
        by_ref[rule.id] = rule
    out: list[Rule] = []
    failures: list[RuleFailure] = []
    silenced: set[str] = set()
    for path, shown, rt in correlations:
        correlation = rt.correlation
        assert correlation is not None
        try:
            rt.query = correlation_kql(
                correlation, {r: by_ref[r].query for r in correlation.rules if r in by_ref}
            )
        except CorrelationError as exc:
            failures.append(RuleFailure(shown, 1, 1, str(exc)))
            continue
        compiled, failure = _build_rule(path, shown, rt, clock, use_cache)
        if failure is not None:
            failures.append(
                RuleFailure(shown, 1, 1, f"the correlation's query does not compile: {failure.message}")
            )
            continue
        assert compiled is not None
        out.append(compiled)
        if not correlation.generate:
            silenced.update(by_ref[r].id for r in correlation.rules)
    return [r for r in built if r.id not in silenced] + out, failures


def read_rule_text(path: Path, text: str, use_cache: bool = True) -> _RuleText:
    if path.suffix.lower() == ".kql":
        return _read_kql(path, text)
    return _read_yaml(path, text, use_cache)


def _file_position(rt: _RuleText, line: int, col: int) -> tuple[int, int]:
    if rt.block:
        return rt.line_offset + line, rt.col_offset + col
    if line == 1:
        return rt.line_offset + 1, rt.col_offset + col
    return rt.line_offset + line, col


MAX_NESTING = 200  # brackets deep: far beyond any real rule, refused before parsing


def check_nesting(kql: str) -> None:
    """FrontEndError at the first bracket deeper than ``MAX_NESTING`` (string literals skipped): the
    parser and the compiler recurse per level, so a hostile rule is refused in microseconds."""
    depth = 0
    quote = ""
    line, col = 1, 0
    chars = iter(kql)
    for ch in chars:
        col += 1
        if ch == "\n":
            line, col = line + 1, 0
            continue
        if quote:
            if ch == "\\":
                next(chars, None)
                col += 1
            elif ch == quote:
                quote = ""
            continue
        if ch in "\"'":
            quote = ch
        elif ch in "([{":
            depth += 1
            if depth > MAX_NESTING:
                raise FrontEndError(line, col, f"nested more than {MAX_NESTING} brackets deep")
        elif ch in ")]}":
            depth -= 1


def compile_rule(kql: str, clock: Clock, use_cache: bool = True, generated: bool = False) -> Plan:
    """IR (cached) → plan; raises :class:`FrontEndError` with a position in ``kql``."""
    query = lower_cached(kql, use_cache, generated)
    try:
        return QueryCompiler(query, clock).compile()
    except CompileError as exc:
        raise locate(kql, exc) from exc
    except RecursionError as exc:
        raise FrontEndError(1, 1, "query too deeply nested") from exc


def _read_rule_file(
    path: Path, shown: str, use_cache: bool = True
) -> tuple[_RuleText | None, RuleFailure | None]:
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, RuleFailure(shown, 1, 1, f"cannot read rule file: {exc}")
    try:
        return read_rule_text(path, text, use_cache), None
    except FrontEndError as exc:
        applicable = not isinstance(exc, NotApplicable)
        return None, RuleFailure(shown, exc.line, exc.col, exc.message, applicable)


def load_rule_file(
    path: Path, clock: Clock, display: str | None = None, use_cache: bool = True
) -> tuple[Rule | None, RuleFailure | None]:
    """One rule file → (rule, None) or (None, failure). Never raises for a bad rule."""
    shown = display or str(path)
    rt, failure = _read_rule_file(path, shown, use_cache)
    if rt is None:
        return None, failure
    return _build_rule(path, shown, rt, clock, use_cache)


def _build_rule(
    path: Path, shown: str, rt: _RuleText, clock: Clock, use_cache: bool
) -> tuple[Rule | None, RuleFailure | None]:
    try:
        plan = compile_rule(rt.query, clock, use_cache, rt.generated)
    except FrontEndError as exc:
        if rt.generated:  # the position is in the converted KQL, not in the file
            return None, RuleFailure(shown, 1, 1, f"converted KQL {exc.line}:{exc.col}: {exc.message}")
        line, col = _file_position(rt, exc.line, exc.col)
        return None, RuleFailure(shown, line, col, exc.message)
    except RecursionError:
        return None, RuleFailure(shown, *_file_position(rt, 1, 1), "expression nested too deeply")
    except Exception as exc:  # one rule's failure, whatever it is, never stops the others
        reason = str(exc).splitlines()[0][:200] if str(exc) else ""
        message = f"cannot compile: {type(exc).__name__}: {reason}".rstrip(": ")
        return None, RuleFailure(shown, *_file_position(rt, 1, 1), message)
    m = rt.meta
    rule = Rule(
        id=str(m.get("id") or path.stem),
        name=str(m.get("name") or path.name),
        query=rt.query,
        source=shown,
        description=str(m.get("description") or "").strip(),
        severity=str(m.get("severity") or "medium").lower(),
        confidence=str(m.get("confidence") or "medium").lower(),
        tactics=_as_tuple(m.get("tactics")),
        techniques=_as_tuple(m.get("relevantTechniques") or m.get("techniques")),
        false_positives=_as_tuple(m.get("falsePositives")),
        references=_as_tuple(m.get("references")),
        version=str(m.get("version") or "1.0.0"),
        status=str(m.get("status") or ""),
        author=str(m.get("author") or ""),
        format=str(m.get("format") or "kql"),
        category=str(m.get("category") or "") if m.get("format") == "sigma" else "",
        sigma_name=str(m.get("sigma_name") or ""),
        plan=plan,
    )
    return rule, None


def _prewarm_one(kql: str) -> None:
    """Worker: put one query's IR (or its front-end error) into the cache."""
    with contextlib.suppress(FrontEndError):
        lower_cached(kql)


def prewarm(queries: list[str]) -> None:
    """Fill the cache for many uncached queries in parallel: the ANTLR parse is CPU-bound Python.

    Only worth it for a large cold load (a corpus); a handful of rules compile faster in-process.
    """
    base = cache_dir()
    cold = [q for q in dict.fromkeys(queries) if not (base / f"{_cache_key(q)}.pickle").is_file()]
    # The cores this process may run on (taskset), not the machine's.
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    workers = min(cores, 8)
    if len(cold) < PREWARM_MIN or workers < 2:
        return
    from concurrent.futures import ProcessPoolExecutor

    # Longest first: the thousand-term Sigma rules take seconds each and should not come last.
    cold.sort(key=len, reverse=True)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for _ in _shown(pool.map(_prewarm_one, cold, chunksize=4), "parsing rules (cold cache)", len(cold)):
            pass


def _shown(items: Iterable[Any], label: str, total: int) -> Iterable[Any]:
    """``items`` with a count on a terminal's stderr, for loads by a command (the main thread) only:
    a reload in a background thread must not draw over the running command's own progress."""
    if threading.current_thread() is not threading.main_thread():
        return items
    return counting(items, label, "rules", every=1, total=total)


def iter_rule_files(paths: Iterable[Path]) -> Iterator[Path]:
    for p in paths:
        if p.is_dir():
            yield from sorted(f for f in p.rglob("*") if f.suffix.lower() in RULE_SUFFIXES and f.is_file())
        else:
            yield p


def builtin_dir() -> Path:
    return Path(str(resources.files("etwsensor.rules").joinpath("builtin")))


# --- the rule set ---------------------------------------------------------------------------------


class RuleSet:
    """Loaded rules dispatched by table. ``evaluate`` is the per-row hot path."""

    def __init__(self, rules: list[Rule], clock: Clock, prefilter: bool = True) -> None:
        """``prefilter=False``: every branch of a table runs on every row of it, the reference the
        prefilter (which only ever skips branches that cannot match) is tested against."""
        self.rules = rules
        self.clock = clock
        self.errors: dict[str, int] = {}  # rule id -> rows whose evaluation raised
        by_table: dict[str, list[tuple[Rule, Branch]]] = {t: [] for t in TABLE_NAMES}
        for rule in rules:
            assert rule.plan is not None
            for branch in rule.plan.branches:
                by_table[branch.table].append((rule, branch))
        self._dispatch = {t: TableDispatch(entries, prefilter) for t, entries in by_table.items() if entries}
        self._stateful = [(r, r.plan.stateful) for r in rules if r.plan is not None and r.plan.stateful]
        self._last_now: datetime | None = None
        self._deadline: datetime | None = None  # the earliest watermark at which a window closes
        self._fed = False  # a stateful operator took rows since the deadline was computed

    @classmethod
    def load(
        cls, paths: Iterable[Path | str] = (), builtin: bool = True, use_cache: bool = True
    ) -> tuple[RuleSet, list[RuleFailure]]:
        # Loading allocates millions of long-lived objects (IR, closures) and no garbage worth
        # collecting: the cyclic collector's passes over them were a third of a warm load.
        collecting = gc.isenabled()
        gc.disable()
        try:
            return cls._load(paths, builtin, use_cache)
        finally:
            if collecting:
                gc.enable()

    @classmethod
    def _load(
        cls, paths: Iterable[Path | str], builtin: bool, use_cache: bool
    ) -> tuple[RuleSet, list[RuleFailure]]:
        clock = Clock()
        rules: list[Rule] = []
        failures: list[RuleFailure] = []
        seen: dict[str, str] = {}
        sources: list[tuple[Path, str | None]] = []
        if builtin:
            sources.extend((f, f"{BUILTIN_SOURCE}:{f.name}") for f in iter_rule_files([builtin_dir()]))
        sources.extend((f, None) for f in iter_rule_files(Path(p) for p in paths))
        texts: list[tuple[Path, str, _RuleText]] = []
        for path, display in _shown(sources, "reading rules", len(sources)):
            shown = display or str(path)
            rt, failure = _read_rule_file(path, shown, use_cache)
            if rt is None:
                assert failure is not None
                failures.append(failure)
                continue
            texts.append((path, shown, rt))
        correlations = [t for t in texts if t[2].correlation is not None]
        texts = [t for t in texts if t[2].correlation is None]
        if use_cache:
            prewarm([rt.query for _p, _s, rt in texts if not rt.generated])  # Sigma: kql_subset is fast
        for path, shown, rt in _shown(texts, "compiling rules", len(texts)):
            rule, failure = _build_rule(path, shown, rt, clock, use_cache)
            if failure is not None:
                failures.append(failure)
                continue
            assert rule is not None
            if rule.id in seen:
                failures.append(
                    RuleFailure(rule.source, 1, 1, f"duplicate rule id {rule.id!r} (also in {seen[rule.id]})")
                )
                continue
            seen[rule.id] = rule.source
            rules.append(rule)
        if correlations:
            rules, more = _with_correlations(rules, correlations, clock, use_cache)
            failures.extend(more)
        return cls(rules, clock), failures

    @property
    def tables_read(self) -> dict[str, frozenset[str]]:
        """Table → columns the rules read; tables no rule reads are absent."""
        out: dict[str, set[str]] = {}
        for rule in self.rules:
            assert rule.plan is not None
            for table in rule.tables:
                out.setdefault(table, set()).update(rule.plan.columns_read.get(table, ()))
        return {t: frozenset(out[t]) for t in TABLE_NAMES if t in out}  # one order whatever the rules

    def row_gates(self) -> dict[str, RowGate]:
        """Per table, what may be asked before a row is built (``RowGate``); tables whose every row
        must be evaluated (a branch without needles) are absent."""
        gates: dict[str, RowGate] = {}
        for table in TABLE_NAMES:
            dispatch = self._dispatch.get(table)
            if dispatch is None:
                gates[table] = RowGate(frozenset(), None)
            elif not dispatch.always:
                gates[table] = RowGate(frozenset(c.column for c in dispatch.columns), dispatch)
        return gates

    def get(self, rule_id: str) -> Rule | None:
        for rule in self.rules:
            if rule.id == rule_id:
                return rule
        return None

    def evaluate(self, table: str, row: dict[str, Any], now: datetime | None) -> list[Match]:
        """The matches of one row of ``table``; ``now`` is the stream clock for now()/ago(), and
        the event time that moves stateful rules' windows (see :meth:`advance`)."""
        if self._stateful and now is not None and now is not self._last_now:
            closed = self.advance(now)
            if closed:
                return closed + self._evaluate(table, row, now)
        return self._evaluate(table, row, now)

    def advance(self, now: datetime) -> list[Match]:
        """Move the stateful rules' watermark to ``now`` minus the allowed lateness: the results of
        the windows that closed. A live stream calls it with the wall clock when it is idle."""
        self._last_now = now
        watermark = now - ALLOWED_LATENESS
        clock = self.clock
        if clock.watermark is not None and watermark <= clock.watermark:
            return []
        clock.watermark = watermark
        if self._fed:
            self._fed = False
            deadlines = [d for _r, op in self._stateful if (d := op.next_deadline()) is not None]
            self._deadline = min(deadlines) if deadlines else None
        if self._deadline is None or watermark < self._deadline:
            return []
        out: list[Match] = []
        for rule, op in self._stateful:
            for e in op.advance(watermark):
                out.append(Match(rule, e.row, e.source, e.table, e.report_ids))
        deadlines = [d for _r, op in self._stateful if (d := op.next_deadline()) is not None]
        self._deadline = min(deadlines) if deadlines else None
        return out

    def flush(self) -> list[Match]:
        """End of a stream: every open window closes; state is emptied for the next stream."""
        out: list[Match] = []
        for rule, op in self._stateful:
            for e in op.flush():
                out.append(Match(rule, e.row, e.source, e.table, e.report_ids))
        self.clock.watermark = None
        self._last_now = self._deadline = None
        self._fed = False
        return out

    def state_stats(self) -> dict[str, dict[str, int]]:
        """Per stateful rule: state held, evicted groups/rows, late rows dropped, results emitted."""
        return {rule.id: {"state": op.size(), **op.stats.as_json()} for rule, op in self._stateful}

    def _evaluate(self, table: str, row: dict[str, Any], now: datetime | None) -> list[Match]:
        dispatch = self._dispatch.get(table)
        if dispatch is None:
            return []
        cache: dict[str, str] = {}  # the row's lower-cased column texts, shared with the plans
        chosen = dispatch.candidates(row, cache)
        if not chosen:
            return []
        clock = self.clock
        clock.now = now
        clock.row = row
        clock.lowered = cache
        matches: list[Match] = []
        for rule, branch in chosen:
            try:
                out = branch.run(row)
            except Exception:  # a value of an unexpected type: count it, keep going
                self.errors[rule.id] = self.errors.get(rule.id, 0) + 1
                continue
            if out is None:
                continue
            sink = branch.sink
            if sink is None:
                matches.append(Match(rule, out))
                continue
            self._fed = True
            try:
                emitted = sink(table, out, row)
            except Exception:  # an aggregate over a value of an unexpected type
                self.errors[rule.id] = self.errors.get(rule.id, 0) + 1
                continue
            for e in emitted:
                matches.append(Match(rule, e.row, e.source, e.table, e.report_ids))
        return matches
