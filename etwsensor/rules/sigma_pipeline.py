"""The pySigma processing pipeline that maps Sigma's Sysmon-shaped fields onto etwsensor's Defender rows.

Built on pySigma-backend-kusto's ``microsoft_xdr`` pipeline, with its registry handling replaced
(the decisions are tabled in docs/rules.md):

* ``TargetObject`` is Sysmon's full path of the key *or value*: ``HKLM\\…\\Settings\\AmsiEnable``.
  Defender rows keep the value name in ``RegistryValueName`` (and a deleted key or value in
  ``PreviousRegistryKey``/``PreviousRegistryValueName``), so the stock mapping to ``RegistryKey`` alone
  never matches a value-level condition. Each ``TargetObject`` test is rewritten into an equivalent test
  on the pair (key, value name): exact whenever the value name holds no backslash.
* Hive prefixes in Sysmon's or the kernel's form (``HKLM\\``, ``HKU\\``, ``\\REGISTRY\\MACHINE\\`` …) are
  written in Defender's (``HKEY_LOCAL_MACHINE\\``, ``HKEY_CURRENT_USER\\`` for per-user keys); a
  ``CurrentControlSet`` segment also matches ``ControlSet001``, the name the kernel reports.
* ``Details`` as Sysmon prints numbers (``DWORD (0x00000001)``) match ``RegistryValueData`` as Defender
  stores them (decimal); ``Binary Data`` matches ``RegistryValueType == "Binary"``, ``(Empty)`` empty data;
  a value named ``(Default)`` (Sysmon's name for a key's unnamed value) is the empty value name.
* ``EventType`` values (``SetValue`` …) become ActionTypes, and a ``registry_set``/``_add``/``_delete``/
  ``_rename`` rule only sees rows of its ActionTypes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sigma.conditions import ConditionAND, ConditionOR
from sigma.pipelines.microsoftxdr.microsoftxdr import microsoft_xdr_pipeline
from sigma.processing.conditions import IncludeFieldCondition, LogsourceCondition, RuleProcessingCondition
from sigma.processing.pipeline import ProcessingItem, ProcessingPipeline
from sigma.processing.transformations import AddConditionTransformation
from sigma.processing.transformations.base import DetectionItemTransformation
from sigma.rule import SigmaDetection, SigmaDetectionItem
from sigma.types import SigmaCasedString, SigmaRegularExpression, SigmaString, SpecialChars

REGISTRY_CATEGORIES = ("registry_set", "registry_add", "registry_delete", "registry_event", "registry_rename")
DELETED = ("RegistryKeyDeleted", "RegistryValueDeleted")
CATEGORY_ACTION_TYPES: dict[str, tuple[str, ...]] = {
    "registry_set": ("RegistryValueSet",),
    "registry_add": ("RegistryKeyCreated",),
    "registry_delete": DELETED,
    "registry_rename": ("RegistryKeyRenamed",),
}
EVENT_TYPE_ACTIONS = {
    "createkey": "RegistryKeyCreated",
    "deletekey": "RegistryKeyDeleted",
    "deletevalue": "RegistryValueDeleted",
    "setvalue": "RegistryValueSet",
    "renamekey": "RegistryKeyRenamed",
}
# Hive prefixes as Sysmon, the kernel or Sysmon-era rules write them → Defender's form (longest first).
HIVE_PREFIXES = (
    ("\\REGISTRY\\MACHINE\\", "HKEY_LOCAL_MACHINE\\"),
    ("\\REGISTRY\\USER\\", "HKEY_CURRENT_USER\\"),
    ("HKEY_LOCAL_MACHINE\\", "HKEY_LOCAL_MACHINE\\"),
    ("HKEY_USERS\\", "HKEY_CURRENT_USER\\"),
    ("HKLM\\", "HKEY_LOCAL_MACHINE\\"),
    ("HKU\\", "HKEY_CURRENT_USER\\"),
    ("HKCR\\", "HKEY_LOCAL_MACHINE\\SOFTWARE\\Classes\\"),
)
DEFAULT_VALUE = "(default)"  # Sysmon's TargetObject suffix for a key's unnamed value; Defender: ""
_CONTROL_SET = re.compile(r"(?i)(?<![A-Za-z0-9])CurrentControlSet(?=\\|$)")
_SYSMON_NUMBER = re.compile(r"(?i)^(DWORD|QWORD) \((?:0x)?([0-9a-f]{1,8})(?:-0x([0-9a-f]{1,8}))?\)$")

_STOCK_REGISTRY_ITEMS = (
    "microsoft_xdr_registry_key_replace_currentcontrolset",
    "microsoft_xdr_registry_key_replace_hklm",
    "microsoft_xdr_registry_key_replace_hku",
    "microsoft_xdr_registry_key_replace_hkcr",
    "microsoft_xdr_registry_actiontype_value",
)


# --- values -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Pattern:
    """A Sigma string value as (anchoring, literal text): ``*V*`` is ("contains", "V")."""

    op: str  # "equals", "startswith", "endswith", "contains"
    text: str
    cased: bool


def _pattern(value: SigmaString) -> _Pattern | None:
    """The value as an anchored literal, or None when it has inner wildcards or placeholders."""
    parts = list(value.s)
    lead = bool(parts) and parts[0] == SpecialChars.WILDCARD_MULTI
    trail = len(parts) > int(lead) and parts[-1] == SpecialChars.WILDCARD_MULTI
    middle = parts[int(lead) : len(parts) - int(trail)]
    if not all(isinstance(p, str) for p in middle):
        return None
    text = "".join(str(p) for p in middle)
    op = {(False, False): "equals", (False, True): "startswith", (True, False): "endswith"}.get(
        (lead, trail), "contains"
    )
    return _Pattern(op, text, isinstance(value, SigmaCasedString))


def _string(p: _Pattern, op: str | None = None, text: str | None = None) -> SigmaString:
    """A Sigma string with ``op``'s wildcards around the literal ``text`` (defaults: ``p``'s)."""
    op = op or p.op
    body = SigmaString.from_str(p.text if text is None else text)
    if op in ("endswith", "contains"):
        body = SpecialChars.WILDCARD_MULTI + body
    if op in ("startswith", "contains"):
        body = body + SpecialChars.WILDCARD_MULTI
    if p.cased:
        return SigmaCasedString.from_sigma_string(body)
    return body


def defender_key(text: str) -> str:
    """A registry path written with a Defender hive prefix (unchanged when it has none)."""
    upper = text.upper()
    for prefix, defender in HIVE_PREFIXES:
        if upper.startswith(prefix.upper()):
            return defender + text[len(prefix) :]
    return text


def control_set_variants(text: str) -> list[str]:
    """``text``, and with ``CurrentControlSet`` as ``ControlSet001`` when it names one."""
    if not _CONTROL_SET.search(text):
        return [text]
    return [text, _CONTROL_SET.sub("ControlSet001", text)]


# --- detection structure ----------------------------------------------------------------------


def _item(field: str, value: SigmaString | SigmaRegularExpression) -> SigmaDetectionItem:
    return SigmaDetectionItem(field=field, modifiers=[], value=[value])


def _all(*parts: SigmaDetection | SigmaDetectionItem) -> SigmaDetection:
    return SigmaDetection(detection_items=list(parts), item_linking=ConditionAND)


def _any(parts: list[SigmaDetection | SigmaDetectionItem]) -> SigmaDetection:
    return SigmaDetection(detection_items=parts, item_linking=ConditionOR)


_NONEMPTY = SigmaRegularExpression(".")


def _path_test(p: _Pattern, key: str, name: str) -> list[SigmaDetection | SigmaDetectionItem]:
    """Alternatives that hold exactly when ``key`` [+ ``\\`` + ``name`` if a name is set] matches ``p``
    (the value name holding no backslash). Column ``name`` is "" for key-level rows."""
    text = p.text
    head, sep, tail = text.rpartition("\\")
    empty_name = _item(name, SigmaString.from_str(""))
    out: list[SigmaDetection | SigmaDetectionItem] = []

    def key_is(op: str, t: str) -> list[SigmaDetectionItem]:
        # K endswith "" (or startswith "") always holds: no test at all
        if op in ("endswith", "startswith", "contains") and not t:
            return []
        return [_item(key, _string(p, op, t))]

    def name_is(op: str, t: str) -> SigmaDetectionItem:
        if op == "startswith" and not t:
            return _item(name, _NONEMPTY)
        if op == "equals" and t.lower() == DEFAULT_VALUE:  # Sysmon's name of a key's default value
            item = _item(name, SigmaString.from_str(""))
            item.value.append(SigmaString.from_str("(Default)"))
            return item
        return _item(name, _string(p, op, t))

    if p.op == "equals":
        out.append(_all(empty_name, _item(key, _string(p))))
        if sep and tail:
            out.append(_all(*key_is("equals", head), name_is("equals", tail)))
    elif p.op == "endswith":
        out.append(_all(empty_name, _item(key, _string(p))))
        if not sep:
            out.append(name_is("endswith", text))
        elif tail:
            out.append(_all(*key_is("endswith", head), name_is("equals", tail)))
    elif p.op == "startswith":
        out.append(_item(key, _string(p)))
        if sep:
            out.append(_all(*key_is("equals", head), name_is("startswith", tail)))
    else:  # contains
        out.append(_item(key, _string(p)))
        if not sep:
            out.append(name_is("contains", text))
        else:
            out.append(_all(*key_is("endswith", head), name_is("startswith", tail)))
    return out


@dataclass
class TargetObjectTransformation(DetectionItemTransformation):
    """Sysmon's ``TargetObject`` (key path or key path + ``\\`` + value name) as tests on Defender's key and
    value-name columns, current or, for deletions, previous."""

    category: str | None = None

    def apply(self, rule: Any) -> None:
        self.category = getattr(getattr(rule, "logsource", None), "category", None)
        super().apply(rule)

    def apply_detection_item(self, detection_item: SigmaDetectionItem) -> SigmaDetection | None:
        values: list[SigmaDetection | SigmaDetectionItem] = []
        for value in detection_item.value:
            alternatives = self._value(value)
            if alternatives is None:
                return None  # left to the stock mapping (RegistryKey), listed as a known gap
            values.append(alternatives)
        linking = ConditionAND if detection_item.value_linking is ConditionAND else ConditionOR
        return SigmaDetection(detection_items=values, item_linking=linking)

    def _value(self, value: Any) -> SigmaDetection | None:
        if not isinstance(value, SigmaString):
            return None
        p = _pattern(value)
        if p is None:
            return None
        alternatives: list[SigmaDetection | SigmaDetectionItem] = []
        for text in control_set_variants(defender_key(p.text)):
            q = _Pattern(p.op, text, p.cased)
            if self.category == "registry_delete":  # ActionType is one of DELETED
                alternatives.extend(_path_test(q, "PreviousRegistryKey", "PreviousRegistryValueName"))
                continue
            alternatives.extend(_path_test(q, "RegistryKey", "RegistryValueName"))
            if self.category in CATEGORY_ACTION_TYPES:  # no deletions
                continue
            deleted = SigmaDetectionItem(
                field="ActionType", modifiers=[], value=[SigmaString.from_str(a) for a in DELETED]
            )
            previous = _any(_path_test(q, "PreviousRegistryKey", "PreviousRegistryValueName"))
            alternatives.append(_all(deleted, previous))
        return _any(alternatives)


@dataclass
class RegistryDetailsTransformation(DetectionItemTransformation):
    """Sysmon's ``Details`` → ``RegistryValueData`` as Defender stores it."""

    def apply_detection_item(self, detection_item: SigmaDetectionItem) -> SigmaDetection:
        values: list[SigmaDetection | SigmaDetectionItem] = []
        for value in detection_item.value:
            values.append(self._value(value, detection_item))
        linking = ConditionAND if detection_item.value_linking is ConditionAND else ConditionOR
        return SigmaDetection(detection_items=values, item_linking=linking)

    @staticmethod
    def _value(value: Any, original: SigmaDetectionItem) -> SigmaDetectionItem:
        p = _pattern(value) if isinstance(value, SigmaString) else None
        if p is not None:
            m = _SYSMON_NUMBER.match(p.text.strip())
            if m and p.op in ("equals", "contains", "endswith", "startswith"):
                number = int(m.group(2), 16)
                if m.group(3) is not None:  # QWORD (0xHIGH-0xLOW)
                    number = (number << 32) | int(m.group(3), 16)
                return _item("RegistryValueData", SigmaString.from_str(str(number)))
            if p.op == "equals" and p.text.lower() == "(empty)":  # Sysmon's word for no data
                return _item("RegistryValueData", SigmaString.from_str(""))
            if p.op == "equals" and p.text.lower() == "binary data":
                return _item("RegistryValueType", SigmaString.from_str("Binary"))
            if p.op == "startswith" and p.text.upper() in ("DWORD", "DWORD (", "QWORD", "QWORD ("):
                return _item("RegistryValueType", SigmaString.from_str(p.text[:5].capitalize()))
        # Already transformed by its modifiers: the value is kept as it is, without them.
        return SigmaDetectionItem(field="RegistryValueData", modifiers=[], value=[value])


@dataclass
class EventTypeTransformation(DetectionItemTransformation):
    """Sysmon's registry ``EventType`` (``SetValue`` …) → Defender's ActionType."""

    def apply_detection_item(self, detection_item: SigmaDetectionItem) -> SigmaDetectionItem:
        mapped: list[Any] = []
        for value in detection_item.value:
            p = _pattern(value) if isinstance(value, SigmaString) else None
            action = EVENT_TYPE_ACTIONS.get(p.text.lower()) if p is not None and p.op == "equals" else None
            mapped.append(SigmaString.from_str(action) if action else value)
        detection_item.field = "ActionType"
        detection_item.value = mapped
        return detection_item


def _registry_items() -> list[ProcessingItem]:
    def registry() -> list[RuleProcessingCondition]:
        return [LogsourceCondition(category=c) for c in REGISTRY_CATEGORIES]

    items = [
        ProcessingItem(
            identifier="etwsensor_registry_target_object",
            transformation=TargetObjectTransformation(),
            field_name_conditions=[IncludeFieldCondition(["TargetObject", "ObjectName"])],
            rule_conditions=registry(),
            rule_condition_linking=any,
        ),
        ProcessingItem(
            identifier="etwsensor_registry_details",
            transformation=RegistryDetailsTransformation(),
            field_name_conditions=[IncludeFieldCondition(["Details"])],
            rule_conditions=registry(),
            rule_condition_linking=any,
        ),
        ProcessingItem(
            identifier="etwsensor_registry_event_type",
            transformation=EventTypeTransformation(),
            field_name_conditions=[IncludeFieldCondition(["EventType"])],
            rule_conditions=registry(),
            rule_condition_linking=any,
        ),
    ]
    for category, actions in CATEGORY_ACTION_TYPES.items():
        items.append(
            ProcessingItem(
                identifier=f"etwsensor_registry_action_type_{category}",
                transformation=AddConditionTransformation(
                    {"ActionType": list(actions)}, name=f"_etwsensor_{category}"
                ),
                rule_conditions=[LogsourceCondition(category=category)],
            )
        )
    return items


def etwsensor_pipeline() -> ProcessingPipeline:
    """``microsoft_xdr`` with etwsensor's registry mapping in place of the stock one."""
    pipeline = microsoft_xdr_pipeline()
    ours = _registry_items()
    for item in ours:
        item.set_pipeline(pipeline)
    items = [i for i in pipeline.items if i.identifier not in _STOCK_REGISTRY_ITEMS]
    # After the query table is set, before the stock field mappings.
    pipeline.items = [items[0], *ours, *items[1:]]
    pipeline.name = "etwsensor: Sigma (Sysmon fields) to Defender rows"
    return pipeline
