"""Sigma correlation rules → KQL over the stateful operators (windowed summarize, time-bounded join).

A correlation document (the Sigma correlation-rules specification: ``correlation: {type, rules,
group-by, timespan, condition}``) is parsed by pySigma (``SigmaCorrelationRule``) and refers to
other loaded rules by id or name; their queries become the legs of a ``union`` (or the two sides
of a ``join``), each tagged with the rule's name:

* ``event_count``: ``summarize event_count = count() by <group-by>, bin(Timestamp, <timespan>)``
  then the condition on ``event_count``;
* ``value_count``: ``dcount(<condition field>)`` as ``value_count``;
* ``temporal``: every referenced rule matched in the window: ``dcount(SigmaRule)`` equal to their
  number;
* ``temporal_ordered`` of two rules: the first, then the second within the timespan (an inner join
  on the group-by fields with the band ``Timestamp1 between (Timestamp .. Timestamp + timespan)``).

The timespan is a tumbling window for the three summarize forms (a burst that straddles a window
boundary is seen as two halves); ``temporal_ordered`` is exact. Group-by fields are Defender
columns every referenced query outputs (Sigma's ``ComputerName`` is ``DeviceName``), or aliases
(``aliases:``) naming a column per rule. ``generate: false`` (the default) means the referenced
rules alert only through the correlation; they are taken out of the rule set.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

CORRELATION_TYPES = ("event_count", "value_count", "temporal", "temporal_ordered")
_OPS = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<=", "eq": "==", "neq": "!="}
# Sigma field names for the host; anything else must be a Defender column or an alias.
_FIELD_NAMES = {"ComputerName": "DeviceName", "Computer": "DeviceName", "Hostname": "DeviceName"}


class CorrelationError(Exception):
    """A correlation document that cannot become a rule; the message says why."""


@dataclass(frozen=True, slots=True)
class Correlation:
    """A parsed correlation document, before its references are resolved."""

    id: str
    title: str
    type: str
    rules: tuple[str, ...]
    group_by: tuple[str, ...]
    seconds: int
    op: str
    count: int
    field: str | None
    aliases: Mapping[str, Mapping[str, str]]  # alias -> rule reference -> column
    generate: bool
    meta: Mapping[str, Any]


def is_correlation(document: Any) -> bool:
    return isinstance(document, dict) and isinstance(document.get("correlation"), dict)


def parse(document: dict[str, Any]) -> Correlation:
    """pySigma's reading of a correlation document (its validation messages included)."""
    try:
        from sigma.correlations import SigmaCorrelationRule
        from sigma.exceptions import SigmaError
    except ImportError as exc:  # pragma: no cover - pySigma is a dependency
        raise CorrelationError(f"Sigma correlation rules need pySigma: {exc}") from exc
    try:
        rule = SigmaCorrelationRule.from_dict(document)
    except SigmaError as exc:
        raise CorrelationError(f"invalid Sigma correlation: {exc}") from exc
    kind = str(rule.type.name).lower()
    if kind not in CORRELATION_TYPES:
        raise CorrelationError(
            f"correlation type {kind} is not supported (supported: {', '.join(CORRELATION_TYPES)})"
        )
    condition = rule.condition
    op = getattr(getattr(condition, "op", None), "name", "gte").lower()
    count = int(getattr(condition, "count", 1))
    fieldref = getattr(condition, "fieldref", None)
    if isinstance(fieldref, list):
        if len(fieldref) != 1:
            raise CorrelationError("a value_count condition counts the values of one field")
        fieldref = fieldref[0]
    aliases: dict[str, dict[str, str]] = {}
    for alias in rule.aliases:
        aliases[alias.alias] = {ref.reference: column for ref, column in alias.mapping.items()}
    return Correlation(
        id=str(rule.id or document.get("name") or rule.title),
        title=str(rule.title),
        type=kind,
        rules=tuple(ref.reference for ref in (rule.rules or ())),
        group_by=tuple(rule.group_by or ()),
        seconds=int(rule.timespan.seconds),
        op=op,
        count=count,
        field=fieldref if isinstance(fieldref, str) else None,
        aliases=aliases,
        generate=bool(rule.generate),
        meta=document,
    )


def _column(name: str, correlation: Correlation, reference: str) -> str:
    if name in correlation.aliases:
        mapped = correlation.aliases[name].get(reference)
        if mapped is None:
            raise CorrelationError(f"alias '{name}' names no field for rule '{reference}'")
        return _FIELD_NAMES.get(mapped, mapped)
    return _FIELD_NAMES.get(name, name)


def _leg(query: str, correlation: Correlation, reference: str) -> str:
    """One referenced query, tagged with its rule and with the group-by aliases as columns."""
    body = query.strip().rstrip(";")
    extends = [f'SigmaRule = "{reference}"']
    for name in correlation.group_by:
        column = _column(name, correlation, reference)
        if name != column or name in correlation.aliases:
            extends.append(f"{_out(name)} = {column}")
    if correlation.field and correlation.field in correlation.aliases:
        extends.append(f"{_out(correlation.field)} = {_column(correlation.field, correlation, reference)}")
    return f"({body}\n| extend {', '.join(extends)})"


def _out(name: str) -> str:
    return _FIELD_NAMES.get(name, name)


def to_kql(correlation: Correlation, queries: Mapping[str, str]) -> str:
    """The KQL of a correlation whose referenced rules' queries are ``queries`` (reference → KQL)."""
    missing = [r for r in correlation.rules if r not in queries]
    if missing:
        raise CorrelationError(f"the correlation refers to rules that are not loaded: {', '.join(missing)}")
    if not correlation.rules:
        raise CorrelationError("the correlation refers to no rules")
    span = f"{correlation.seconds}s"
    keys = [_out(g) for g in correlation.group_by]
    if correlation.type == "temporal_ordered":
        if len(correlation.rules) != 2:
            raise CorrelationError("temporal_ordered is supported for two rules (one join)")
        if not keys:
            raise CorrelationError("temporal_ordered needs group-by fields to join on")
        first, second = (_leg(queries[r], correlation, r) for r in correlation.rules)
        return (
            f"{first[1:-1]}\n| join kind=inner {second} on {', '.join(keys)}\n"
            f"| where Timestamp1 between (Timestamp .. (Timestamp + {span}))"
        )
    legs = ",\n".join(_leg(queries[r], correlation, r) for r in correlation.rules)
    by = ", ".join([*keys, f"bin(Timestamp, {span})"])
    op = _OPS.get(correlation.op)
    if op is None:
        raise CorrelationError(f"condition operator {correlation.op} is not supported")
    if correlation.type == "event_count":
        agg, column = "event_count = count()", "event_count"
    elif correlation.type == "value_count":
        if not correlation.field:
            raise CorrelationError("value_count needs the condition's field")
        agg, column = f"value_count = dcount({_out(correlation.field)})", "value_count"
    else:  # temporal: every referenced rule in the window
        agg = "rule_count = dcount(SigmaRule), rules = make_set(SigmaRule)"
        return (
            f"union\n{legs}\n| summarize {agg} by {by}\n| where rule_count >= {len(set(correlation.rules))}"
        )
    return f"union\n{legs}\n| summarize {agg} by {by}\n| where {column} {op} {correlation.count}"
