"""Sigma rules as they are written: a Sigma YAML document → KQL over the Defender tables + metadata.

pySigma parses the rule; pySigma-backend-kusto, driven by etwsensor's processing pipeline
(``sigma_pipeline.py``: the backend's ``microsoft_xdr`` pipeline with the registry mapping fixed),
writes the KQL, which the rule engine then compiles like any other rule. The conversion of each
document is cached on disk next to the compiled-IR cache, keyed by the document's text and the
versions of pySigma, the backend and this converter.

pySigma is imported on first use: loading KQL rules alone does not pay for it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from etwsensor.tables import TABLE_NAMES

# Bump when the KQL written for a rule changes (pipeline decisions): invalidates cached conversions.
CONVERTER_FORMAT = 4
PRODUCTS = (None, "windows")
# Sigma log source categories whose events are rows of the four Defender tables etwsensor produces.
CATEGORIES = {
    "process_creation": "DeviceProcessEvents",
    "image_load": "DeviceImageLoadEvents",
    "file_access": "DeviceFileEvents",
    "file_change": "DeviceFileEvents",
    "file_delete": "DeviceFileEvents",
    "file_event": "DeviceFileEvents",
    "file_rename": "DeviceFileEvents",
    "registry_add": "DeviceRegistryEvents",
    "registry_delete": "DeviceRegistryEvents",
    "registry_event": "DeviceRegistryEvents",
    "registry_set": "DeviceRegistryEvents",
    "registry_rename": "DeviceRegistryEvents",
}
SEVERITY = {"informational": "informational", "low": "low", "medium": "medium", "high": "high"}
SEVERITY["critical"] = "high"  # etwsensor's highest; confidence "high" marks it


class SigmaFailure(Exception):
    """A Sigma document that cannot become a rule: ``reason`` groups failures, ``message`` says why."""

    def __init__(self, reason: str, message: str, line: int = 1, col: int = 1) -> None:
        super().__init__(reason, message, line, col)
        self.reason = reason
        self.message = message
        self.line = line
        self.col = col

    def __str__(self) -> str:
        return f"{self.line}:{self.col}: Sigma rule not converted ({self.reason}): {self.message}"


@dataclass(slots=True)
class SigmaRule:
    """One converted Sigma rule: its KQL and its metadata in the rule engine's terms."""

    kql: str
    id: str
    title: str
    name: str = ""  # Sigma's `name:`, how correlation rules may refer to it
    severity: str = "medium"
    confidence: str = "medium"
    status: str = ""
    description: str = ""
    author: str = ""
    tactics: tuple[str, ...] = ()
    techniques: tuple[str, ...] = ()
    false_positives: tuple[str, ...] = ()
    references: tuple[str, ...] = ()
    level: str = ""
    logsource: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "kql": self.kql,
            "id": self.id,
            "title": self.title,
            "name": self.name,
            "severity": self.severity,
            "confidence": self.confidence,
            "status": self.status,
            "description": self.description,
            "author": self.author,
            "tactics": list(self.tactics),
            "techniques": list(self.techniques),
            "false_positives": list(self.false_positives),
            "references": list(self.references),
            "level": self.level,
            "logsource": self.logsource,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SigmaRule:
        return cls(
            kql=d["kql"],
            id=d["id"],
            title=d["title"],
            name=d.get("name", ""),
            severity=d["severity"],
            confidence=d["confidence"],
            status=d["status"],
            description=d["description"],
            author=d["author"],
            tactics=tuple(d["tactics"]),
            techniques=tuple(d["techniques"]),
            false_positives=tuple(d["false_positives"]),
            references=tuple(d["references"]),
            level=d["level"],
            logsource=dict(d["logsource"]),
        )


def is_sigma(document: Any) -> bool:
    """A Sigma detection rule is a YAML mapping with ``detection`` and ``logsource`` (correlation rules,
    ``correlation:``, are read by ``sigma_correlation``)."""
    return isinstance(document, dict) and "detection" in document and "logsource" in document


@cache
def versions() -> str:
    out = []
    for dist in ("pysigma", "pysigma-backend-kusto"):
        try:
            out.append(f"{dist}={version(dist)}")
        except PackageNotFoundError:
            out.append(f"{dist}=?")
    return ",".join(out)


# --- metadata ----------------------------------------------------------------------------------

_TECHNIQUE = re.compile(r"(?i)^t\d{4}(\.\d{3})?$")


def _tactic(name: str) -> str:
    """``defense-evasion`` / ``defense_evasion`` → ``DefenseEvasion`` (Sentinel's spelling)."""
    return "".join(w.capitalize() for w in re.split(r"[-_]", name) if w)


def _mitre(tags: list[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    tactics: dict[str, None] = {}
    techniques: dict[str, None] = {}
    for tag in tags:
        namespace, _, name = tag.partition(".")
        if namespace.lower() != "attack" or not name:
            continue
        if _TECHNIQUE.match(name):
            techniques[name.upper()] = None
        elif not re.match(r"(?i)^[gs]\d{4}$", name):  # groups and software are not tactics
            tactics[_tactic(name)] = None
    return tuple(tactics), tuple(techniques)


def _strings(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, list):
        return tuple(str(v) for v in value if v is not None)
    return (str(value),)


def _metadata(document: dict[str, Any], kql: str) -> SigmaRule:
    tags = [str(t) for t in document.get("tags") or []]
    tactics, techniques = _mitre(tags)
    level = str(document.get("level") or "").lower()
    logsource = document.get("logsource") or {}
    return SigmaRule(
        kql=kql,
        id=str(document.get("id") or ""),
        title=str(document.get("title") or ""),
        name=str(document.get("name") or ""),
        severity=SEVERITY.get(level, "medium"),
        confidence="high" if level == "critical" else "medium",
        status=str(document.get("status") or ""),
        description=str(document.get("description") or "").strip(),
        author=str(document.get("author") or ""),
        tactics=tactics,
        techniques=techniques,
        false_positives=_strings(document.get("falsepositives")),
        references=_strings(document.get("references")),
        level=level,
        logsource={str(k): str(v) for k, v in logsource.items()} if isinstance(logsource, dict) else {},
    )


# --- conversion -----------------------------------------------------------------------------------


@cache
def _backend() -> Any:
    from sigma.backends.kusto.kusto import KustoBackend

    from etwsensor.rules.sigma_pipeline import etwsensor_pipeline

    return KustoBackend(processing_pipeline=etwsensor_pipeline())  # type: ignore[arg-type]


def _reason(exc: Exception) -> str:
    """A short, stable failure class for reports (``rules check`` groups by it)."""
    name = type(exc).__name__
    text = str(exc)
    no_table = ("Rule category not yet supported", "query_table is not set", "determine table name")
    if any(t in text for t in no_table):
        return "unsupported logsource"
    if name == "InvalidHashAlgorithmError":
        return "hash type not in Defender rows"
    if name == "InvalidFieldTransformation" or "Please use valid fields" in text:
        return "field not in the Defender table"
    if name in ("SigmaModifierError", "SigmaTypeError"):
        return "unsupported modifier"
    if name == "SigmaFeatureNotSupportedByBackendError":
        return "not supported by the Kusto backend"
    if name in ("SigmaConditionError", "SigmaDetectionError"):
        return "invalid detection"
    if name == "SigmaRegularExpressionError":
        return "invalid regular expression"
    return "invalid rule"


def _message(exc: Exception) -> str:
    field_name = re.search(r"Invalid SigmaDetectionItem field name encountered: (\w+)", str(exc))
    if field_name:
        return f"field {field_name.group(1)!r} has no column in the rule's Defender table"
    first = str(exc).split(" in rule ")[0].split("\n")[0]
    text = re.sub(r" \(while [a-z ]+ rule .*\)$", "", first).strip()
    return text or type(exc).__name__


def _logsource_text(logsource: Any) -> str:
    if not isinstance(logsource, dict):
        return "logsource ?"
    parts = [f"{k} {logsource[k]}" for k in ("product", "category", "service") if logsource.get(k)]
    return "logsource " + (", ".join(parts) or "?")


def convert_document(document: dict[str, Any]) -> SigmaRule:
    """One parsed Sigma YAML document → :class:`SigmaRule`; raises :class:`SigmaFailure`.

    This is the loader's API: a document (a dict, as ``yaml.safe_load`` gives it) in, a rule out.
    """
    if isinstance(document, dict) and "correlation" in document:
        raise SigmaFailure("correlation rule", "read by etwsensor.rules.sigma_correlation, not converted")
    if not is_sigma(document):
        raise SigmaFailure("not a Sigma rule", "a Sigma rule has 'logsource' and 'detection'")
    logsource = document.get("logsource")
    product = logsource.get("product") if isinstance(logsource, dict) else None
    if product not in PRODUCTS:
        category = logsource.get("category") if isinstance(logsource, dict) else None
        message = f"product {product!r} (category {category!r}): Windows only"
        raise SigmaFailure("unsupported logsource", message)
    where = _logsource_text(logsource)
    category = logsource.get("category") if isinstance(logsource, dict) else None
    if category not in CATEGORIES:  # decided before paying for pySigma: most of a SigmaHQ checkout
        raise SigmaFailure("unsupported logsource", f"{where} has no Defender table")
    from sigma.collection import SigmaCollection
    from sigma.exceptions import SigmaError

    try:
        collection = SigmaCollection.from_dicts([document])
        queries = _backend().convert(collection)
    except SigmaError as exc:
        reason = _reason(exc)
        message = f"{where} has no Defender table" if reason == "unsupported logsource" else _message(exc)
        raise SigmaFailure(reason, message) from exc
    except NotImplementedError as exc:
        raise SigmaFailure("not supported by the Kusto backend", _message(exc)) from exc
    except Exception as exc:  # pySigma's unchecked paths: a bad rule never stops the others
        raise SigmaFailure(_reason(exc), f"{type(exc).__name__}: {_message(exc)}") from exc
    if not queries:
        raise SigmaFailure("unsupported logsource", f"{where}: the backend wrote no query")
    table = str(queries[0]).split("\n", 1)[0].strip()
    if table not in TABLE_NAMES:
        raise SigmaFailure("unsupported logsource", f"{where} reads unknown table {table!r} (not produced)")
    if len(queries) != 1 or not isinstance(queries[0], str):
        raise SigmaFailure("invalid rule", f"the backend wrote {len(queries)} queries for one rule")
    return _metadata(document, queries[0])


def _locate(text: str, failure: SigmaFailure) -> tuple[int, int]:
    """Where in the file a failure points: the log source, or the first use of the field or modifier."""
    needle: str | None = None
    if failure.reason == "unsupported logsource":
        needle = "logsource:"
    elif m := re.search(r"(?:field|modifier) '([^']+)'", failure.message):
        needle = m.group(1)
    if needle:
        for number, line in enumerate(text.splitlines(), 1):
            col = line.find(needle)
            if col >= 0 and not line.lstrip().startswith("#"):
                return number, col + 1
    return failure.line, failure.col


def _cache_path(text: str) -> Path:
    from etwsensor.rules.ruleset import cache_dir

    key = hashlib.sha256(f"{CONVERTER_FORMAT}\0{versions()}\0".encode() + text.encode("utf-8")).hexdigest()
    return cache_dir() / "sigma" / f"{key}.json"


def cached_conversion(text: str) -> SigmaRule | None:
    """The cached conversion of a file's ``text``: the rule, None when not cached (or not Sigma);
    raises :class:`SigmaFailure` when the cached outcome is a failure."""
    try:
        cached = json.loads(_cache_path(text).read_text("utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(cached, dict):
        return None
    try:
        if "failure" in cached:
            failure = SigmaFailure(*cached["failure"])
        else:
            return SigmaRule.from_json(cached)
    except (KeyError, TypeError):
        return None  # stale or torn entry: converted again
    raise failure


def convert_text(text: str, document: dict[str, Any], use_cache: bool = True) -> SigmaRule:
    """Like :func:`convert_document` for a file's ``text`` (parsed as ``document``), through the cache."""
    path = _cache_path(text) if use_cache else None
    if path is not None:
        hit = cached_conversion(text)
        if hit is not None:
            return hit
    result: SigmaRule | SigmaFailure
    try:
        result = convert_document(document)
    except SigmaFailure as exc:
        exc.line, exc.col = _locate(text, exc)
        result = exc
    if path is not None:
        entry = (
            {"failure": [result.reason, result.message, result.line, result.col]}
            if isinstance(result, SigmaFailure)
            else result.to_json()
        )
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(entry), "utf-8")
            tmp.replace(path)
        except OSError:
            pass  # a cache that cannot be written only costs time
    if isinstance(result, SigmaFailure):
        raise result
    return result


def convert_file(path: Path, use_cache: bool = True) -> SigmaRule:
    """A Sigma ``.yml`` file → :class:`SigmaRule`; raises :class:`SigmaFailure` (also for bad YAML)."""
    import yaml

    try:
        text = path.read_text("utf-8")
        document = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError) as exc:
        raise SigmaFailure("unreadable", f"cannot read rule file: {exc}") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise SigmaFailure("invalid YAML", str(getattr(exc, "problem", exc)), line, col) from exc
    return convert_text(text, document, use_cache)
