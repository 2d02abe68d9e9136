"""ECS and OCSF alert formats, as a user asks for them: `replay --format` and `--sink URL#format=…`.

Every demo alert is checked in all three formats: etwsensor's against its pydantic model, ECS against
Elastic's own field list (tests/data/ecs/ecs_fields.json, from the @elastic/ecs package), OCSF against the
JSON Schema of Detection Finding generated from the OCSF 1.5.0 schema (ocsf-json-schema package).
"""

from __future__ import annotations

import json
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from ocsf_json_schema import OcsfJsonSchemaEmbedded, get_ocsf_schema

from etwsensor.alerts import Alert
from etwsensor.alerts.ecs import to_ecs
from etwsensor.alerts.formats import envelope
from etwsensor.alerts.ocsf import OCSF_VERSION, to_ocsf
from etwsensor.sinks.base import Outgoing
from etwsensor.sinks.formatted import split_format
from etwsensor.sinks.syslog import format_message
from etwsensor.sinks.urls import SinkConfigError

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo.jsonl.zst"
ECS_FIELDS = ROOT / "tests" / "data" / "ecs" / "ecs_fields.json"

# ECS types → the JSON types a document may carry for them.
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "keyword": (str,), "wildcard": (str,), "constant_keyword": (str,), "match_only_text": (str,),
    "text": (str,), "ip": (str,), "date": (str,), "long": (int,), "unsigned_long": (int,),
    "integer": (int,), "short": (int,), "byte": (int,), "float": (float, int), "scaled_float": (float, int),
    "double": (float, int), "boolean": (bool,), "object": (dict,), "flattened": (dict,), "nested": (list,),
}  # fmt: skip


@cache
def ecs_fields() -> dict[str, dict[str, Any]]:
    fields: dict[str, dict[str, Any]] = json.loads(ECS_FIELDS.read_text("utf-8"))["fields"]
    return fields


@cache
def ocsf_validator() -> Draft202012Validator:
    schema = OcsfJsonSchemaEmbedded(get_ocsf_schema(version=OCSF_VERSION))
    return Draft202012Validator(schema.get_class_schema(class_name="detection_finding", profiles=[]))


def ecs_violations(doc: dict[str, Any]) -> list[str]:
    """Every leaf that is not an ECS field of the right type (custom fields live under etwsensor.*)."""
    problems: list[str] = []

    def walk(node: Any, path: str) -> None:
        if path == "etwsensor" or path.startswith("etwsensor."):
            return
        field = ecs_fields().get(path)
        if isinstance(node, dict) and (field is None or field["type"] not in ("object", "flattened")):
            for key, value in node.items():
                walk(value, f"{path}.{key}" if path else key)
            return
        if field is None:
            problems.append(f"{path}: not an ECS field")
            return
        values = node if isinstance(node, list) else [node]
        if isinstance(node, list) and not field["array"]:
            problems.append(f"{path}: ECS does not expect an array")
        for v in values:
            is_bool = field["type"] == "boolean"
            if not isinstance(v, _JSON_TYPES[field["type"]]) or isinstance(v, bool) != is_bool:
                problems.append(f"{path}: {v!r} is not ECS type {field['type']}")
            if field["allowed"] and v not in field["allowed"]:
                problems.append(f"{path}: {v!r} is not an allowed value")

    walk(doc, "")
    return problems


def replay(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "etwsensor", "replay", str(DEMO), *args],
        capture_output=True, text=True, check=False,
    )  # fmt: skip


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


Formatted = dict[str, list[dict[str, Any]]]


@pytest.fixture(scope="module")
def demo_alerts(tmp_path_factory: pytest.TempPathFactory) -> Formatted:
    """The demo replayed once into three file sinks, one per format; the default format is OCSF here."""
    out = tmp_path_factory.mktemp("formats")
    own, ecs, ocsf = out / "own.ndjson", out / "ecs.ndjson", out / "ocsf.ndjson"
    proc = replay(
        "--format", "ocsf",
        "--sink", f"file:{own}#format=etwsensor",
        "--sink", f"file:{ecs}#format=ecs",
        "--sink", f"file:{ocsf}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return {"etwsensor": lines(own), "ecs": lines(ecs), "ocsf": lines(ocsf)}


def test_every_demo_alert_is_sent_in_each_sinks_own_format(demo_alerts: Formatted) -> None:
    own, ecs, ocsf = demo_alerts["etwsensor"], demo_alerts["ecs"], demo_alerts["ocsf"]
    assert len(own) == len(ecs) == len(ocsf) >= 14
    ids = [a["alert_id"] for a in own]
    assert ids == [d["event"]["id"] for d in ecs] == [d["metadata"]["uid"] for d in ocsf]
    for alert in own:
        Alert.model_validate(alert)
    # every built-in rule that fires on the demo is present in all three
    assert {a["rule"]["id"] for a in own} == {d["rule"]["id"] for d in ecs} == {
        d["finding_info"]["analytic"]["uid"] for d in ocsf
    }


def test_ecs_documents_use_only_ecs_fields_with_their_types(demo_alerts: Formatted) -> None:
    for doc in demo_alerts["ecs"]:
        assert ecs_violations(doc) == [], doc["rule"]["name"]
        assert doc["event"]["kind"] == "alert"
        assert doc["threat"]["framework"] == "MITRE ATT&CK"
        assert "T1056.001" in doc["threat"]["technique"]["subtechnique"]["id"]


def test_ocsf_documents_validate_against_the_detection_finding_schema(
    demo_alerts: Formatted,
) -> None:
    validator = ocsf_validator()
    for doc in demo_alerts["ocsf"]:
        errors = [f"{e.json_path}: {e.message[:120]}" for e in validator.iter_errors(doc)]
        assert errors == [], doc["finding_info"]["title"]
        assert doc["class_uid"] == 2004 and doc["type_uid"] == 200401
        assert doc["finding_info"]["attacks"][0]["sub_technique"]["uid"] == "T1056.001"
        assert doc["evidences"][0]["process"]


def test_the_validators_catch_a_wrong_document(demo_alerts: Formatted) -> None:
    ecs = json.loads(json.dumps(demo_alerts["ecs"][0]))
    ecs["process"]["pid"] = "not a number"
    ecs["event"]["kind"] = "finding"
    ecs["processs"] = {"name": "typo"}
    assert len(ecs_violations(ecs)) == 3
    ocsf = json.loads(json.dumps(demo_alerts["ocsf"][0]))
    del ocsf["finding_info"]["uid"]
    ocsf["severity_id"] = 42
    assert len(list(ocsf_validator().iter_errors(ocsf))) == 2


def test_each_table_maps_to_its_ecs_and_ocsf_objects(demo_alerts: Formatted) -> None:
    by_table: dict[str, tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = {}
    for own, ecs, ocsf in zip(demo_alerts["etwsensor"], demo_alerts["ecs"], demo_alerts["ocsf"], strict=True):
        by_table.setdefault(own["table"], (own, ecs, ocsf))
    own, ecs, ocsf = by_table["DeviceRegistryEvents"]
    key, value = own["row"]["RegistryKey"], own["row"]["RegistryValueName"]
    assert ecs["registry"]["path"] == f"{key}\\{value}" and ecs["registry"]["value"] == value
    assert ecs["registry"]["hive"] in ("HKLM", "HKCU", "HKU")
    assert ocsf["evidences"][0]["reg_value"]["name"] == value
    own, ecs, ocsf = by_table["DeviceProcessEvents"]
    assert ecs["process"]["command_line"] == own["row"]["ProcessCommandLine"]
    assert ecs["process"]["pid"] == own["ids"]["ProcessId"]
    assert ecs["process"]["parent"]["pid"] == own["ids"]["InitiatingProcessId"]
    assert ocsf["evidences"][0]["process"]["cmd_line"] == own["row"]["ProcessCommandLine"]
    own, ecs, ocsf = by_table["DeviceFileEvents"]
    assert ecs["file"]["name"] == own["row"]["FileName"]
    assert ocsf["evidences"][0]["file"]["name"] == own["row"]["FileName"]
    own, ecs, _ = by_table["DeviceImageLoadEvents"]
    assert ecs["dll"]["name"] and ecs["process"]["pid"] == own["ids"]["InitiatingProcessId"]


def test_syslog_headers_carry_severity_host_and_rule_in_every_format(
    demo_alerts: Formatted,
) -> None:
    own = demo_alerts["etwsensor"][0]
    for doc in (own, to_ecs(own), to_ocsf(own)):
        facts = envelope(doc)
        assert facts.severity == own["rule"]["severity"]
        assert facts.host == own["host"]["name"]
        assert facts.rule_id == own["rule"]["id"]
        message = format_message(Outgoing(b"{}", doc), 10, "local", 1)
        assert message.startswith(b"<%d>1 " % (10 * 8 + 2))  # authpriv.crit for "high"
        assert f" {own['host']['name']} etwsensor 1 {own['rule']['id'].replace('-', '')} ".encode() in message


def test_format_names_are_checked_before_anything_is_opened(tmp_path: Path) -> None:
    assert split_format("file:a.ndjson#format=ECS") == ("file:a.ndjson", "ecs")
    assert split_format("stdout", "ocsf") == ("stdout", "ocsf")
    with pytest.raises(SinkConfigError, match="unknown alert format 'splunk'"):
        split_format("stdout#format=splunk")
    proc = replay("--sink", f"file:{tmp_path / 'x.ndjson'}#format=cef")
    assert proc.returncode == 2 and "unknown alert format 'cef'" in proc.stderr
    assert not (tmp_path / "x.ndjson").exists()
