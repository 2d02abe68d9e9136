"""Sigma YAML loaded natively: conversion, the registry mapping, metadata, failures and coverage.

The rules in tests/data/sigma/rules are SigmaHQ rules whose earlier conversion (pySigma-backend-kusto's stock
microsoft_xdr pipeline) is kept in tests/data/sigma/converted: the differential baseline.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from etwsensor.rules import RuleSet
from etwsensor.rules.sigma import SigmaFailure, convert_document
from etwsensor.tables import schema

SIGMA = Path(__file__).resolve().parents[1] / "data" / "sigma"
RULES = SIGMA / "rules"
NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def run(*args: str, cache: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ETWSENSOR_CACHE_DIR=str(cache))
    return subprocess.run(
        [sys.executable, "-m", "etwsensor", *args], capture_output=True, text=True, env=env, check=False
    )


def converted_kql(name: str) -> str:
    text = (SIGMA / "converted" / f"{name}.kql").read_text("utf-8")
    return "\n".join(line for line in text.splitlines() if not line.startswith("//")).strip()


def row(table: str, **columns: Any) -> dict[str, Any]:
    r = schema(table).empty_row()
    r.update(Timestamp=NOW, DeviceName="ws1", DeviceId="d1", ReportId=1)
    r.update(columns)
    return r


def registry_row(
    key: str, name: str, data: str = "", action: str = "RegistryValueSet", **more: Any
) -> dict[str, Any]:
    return row(
        "DeviceRegistryEvents",
        ActionType=action,
        RegistryKey=key,
        RegistryValueName=name,
        RegistryValueData=data,
        InitiatingProcessFolderPath=r"C:\Windows\System32\reg.exe",
        InitiatingProcessFileName="reg.exe",
        **more,
    )


def fires(rs: RuleSet, rule_id: str, table: str, r: dict[str, Any]) -> bool:
    return any(m.rule.id == rule_id for m in rs.evaluate(table, r, NOW))


@pytest.fixture(scope="module")
def native() -> RuleSet:
    rs, failures = RuleSet.load([RULES], builtin=False)
    assert failures == []
    return rs


@pytest.fixture(scope="module")
def stock(tmp_path_factory: pytest.TempPathFactory) -> RuleSet:
    """The same rules as the stock conversion wrote them (.kql, with their headers)."""
    rs, failures = RuleSet.load([SIGMA / "converted"], builtin=False)
    assert failures == []
    return rs


def sigma_id(name: str) -> str:
    return str(yaml.safe_load((RULES / f"{name}.yml").read_text("utf-8"))["id"])


def stock_id(name: str) -> str:
    return name  # .kql without an id header: the file stem


# --- conversion ---------------------------------------------------------------------------------


def test_reconstructed_rules_convert_back_to_the_corpus_kql() -> None:
    """The test rules are faithful: the stock pipeline turns each into the KQL kept from the corpus."""
    from sigma.backends.kusto import KustoBackend
    from sigma.collection import SigmaCollection
    from sigma.pipelines.microsoftxdr import microsoft_xdr_pipeline

    for path in sorted(RULES.glob("*.yml")):
        backend = KustoBackend(processing_pipeline=microsoft_xdr_pipeline())
        (query,) = backend.convert(SigmaCollection.from_yaml(path.read_text("utf-8")))
        assert query.strip() == converted_kql(path.stem), path.name


def test_non_registry_rules_convert_exactly_as_the_stock_pipeline(native: RuleSet) -> None:
    for rule in native.rules:
        name = Path(rule.source).stem
        if not rule.category.startswith("registry_"):
            assert rule.query.strip() == converted_kql(name), name


def test_metadata_from_the_sigma_rule(native: RuleSet) -> None:
    rule = native.get("55e29995-75e7-451a-bef0-6225e2f13597")
    assert rule is not None
    assert rule.name == "Potential Credential Dumping Via LSASS SilentProcessExit Technique"
    assert (rule.severity, rule.confidence) == ("high", "high")  # level critical
    assert rule.status == "test" and rule.format == "sigma" and rule.category == "registry_event"
    assert rule.tactics == ("CredentialAccess",) and rule.techniques == ("T1003.001",)
    assert rule.false_positives == ("Unlikely",)
    assert rule.author == "Florian Roth (Nextron Systems)"
    assert rule.source.endswith("registry_event_silentprocessexit_lsass.yml")


def test_loader_api_is_a_function_of_a_document() -> None:
    document = yaml.safe_load((RULES / "registry_set_amsi_disable.yml").read_text("utf-8"))
    rule = convert_document(document)
    assert rule.id == "aa37cbb0-da36-42cb-a90f-fdf216fc7467" and rule.level == "high"
    assert rule.kql.startswith("DeviceRegistryEvents\n| where ")
    assert rule.logsource == {"category": "registry_set", "product": "windows"}
    with pytest.raises(SigmaFailure) as caught:
        convert_document({"title": "x", "correlation": {"type": "event_count"}})
    assert caught.value.reason == "correlation rule"


def test_conversions_are_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ETWSENSOR_CACHE_DIR", str(tmp_path))
    RuleSet.load([RULES / "registry_set_amsi_disable.yml"], builtin=False)
    cached = list((tmp_path / "rules" / "sigma").glob("*.json"))
    assert len(cached) == 1
    assert json.loads(cached[0].read_text())["id"] == "aa37cbb0-da36-42cb-a90f-fdf216fc7467"
    again, failures = RuleSet.load([RULES / "registry_set_amsi_disable.yml"], builtin=False)
    assert failures == [] and again.rules[0].query == json.loads(cached[0].read_text())["kql"]


# --- failures -----------------------------------------------------------------------------------------


def test_check_reports_each_unconvertible_rule_with_file_line_and_reason(tmp_path: Path) -> None:
    r = run("rules", "check", str(RULES), str(SIGMA / "bad"), cache=tmp_path)
    assert r.returncode == 1
    lines = sorted(r.stdout.splitlines())
    bad = SIGMA / "bad"
    assert lines == [
        f"{bad / 'bad_modifier.yml'}:9:21: Sigma rule not converted (unsupported modifier): "
        "Unknown modifier 'sideways'",
        f"{bad / 'linux_process.yml'}:4:1: Sigma rule not converted (unsupported logsource): "
        "product 'linux' (category 'process_creation'): Windows only",
        f"{bad / 'powershell_service.yml'}:4:1: Sigma rule not converted (unsupported logsource): "
        "logsource product windows, service powershell has no Defender table",
        f"{bad / 'unknown_field.yml'}:9:9: Sigma rule not converted (field not in the Defender table): "
        "field 'Signed' has no column in the rule's Defender table",
    ]
    assert "11 compiled, 4 failed" in r.stderr  # the good ones still load


def test_a_broken_yaml_sigma_file_is_a_failure_not_a_crash(tmp_path: Path) -> None:
    bad = tmp_path / "broken.yml"
    bad.write_text("title: x\nlogsource: {product: windows\ndetection: [\n")
    rs, failures = RuleSet.load([bad, RULES / "registry_set_amsi_disable.yml"], builtin=False)
    assert len(rs.rules) == 1 and len(failures) == 1 and failures[0].file == str(bad)


# --- the registry mapping -------------------------------------------------------------------------------


def test_value_level_target_object_matches_key_plus_value_name(native: RuleSet, stock: RuleSet) -> None:
    """Sysmon: TargetObject HKLM\\SOFTWARE\\Microsoft\\Windows Script\\Settings\\AmsiEnable,
    DWORD (0x00000000). Defender keeps the value name apart and the DWORD in decimal: only the native
    rule fires."""
    r = registry_row(r"HKEY_LOCAL_MACHINE\SOFTWARE\Microsoft\Windows Script\Settings", "AmsiEnable", "0")
    table = "DeviceRegistryEvents"
    assert fires(native, sigma_id("registry_set_amsi_disable"), table, r)
    assert not fires(stock, stock_id("registry_set_amsi_disable"), table, r)
    other = registry_row(r"HKEY_LOCAL_MACHINE\SOFTWARE\Microsoft\Windows Script\Settings", "AmsiEnable", "1")
    assert not fires(native, sigma_id("registry_set_amsi_disable"), table, other)
    created = registry_row(
        r"HKEY_LOCAL_MACHINE\SOFTWARE\Microsoft\Windows Script\Settings",
        "AmsiEnable",
        "0",
        "RegistryKeyCreated",
    )
    assert not fires(
        native, sigma_id("registry_set_amsi_disable"), table, created
    )  # registry_set: value sets


def test_control_set_as_the_kernel_names_it(native: RuleSet) -> None:
    rid = sigma_id("registry_set_allow_rdp_remote_assistance_feature")
    for control_set in ("CurrentControlSet", "ControlSet001"):
        key = rf"HKEY_LOCAL_MACHINE\System\{control_set}\Control\Terminal Server"
        assert fires(native, rid, "DeviceRegistryEvents", registry_row(key, "fAllowToGetHelp", "1")), (
            control_set
        )
    key = r"HKEY_LOCAL_MACHINE\System\ControlSet001\Services\WinDefend"
    assert fires(
        native,
        sigma_id("registry_set_disable_windows_defender_service"),
        "DeviceRegistryEvents",
        registry_row(key, "Start", "4"),
    )


def test_key_level_conditions_still_match_keys(native: RuleSet, stock: RuleSet) -> None:
    rid = sigma_id("registry_event_silentprocessexit_lsass")
    key = r"HKEY_LOCAL_MACHINE\SOFTWARE\Microsoft\Windows NT\CurrentVersion\SilentProcessExit\lsass.exe"
    created = registry_row(key, "", action="RegistryKeyCreated")
    value = registry_row(key, "ReportingMode", "1")
    for r in (created, value):
        assert fires(native, rid, "DeviceRegistryEvents", r)
        assert fires(stock, stock_id("registry_event_silentprocessexit_lsass"), "DeviceRegistryEvents", r)
    elsewhere = registry_row(r"HKEY_LOCAL_MACHINE\SOFTWARE\Microsoft\Windows NT\CurrentVersion", "lsass.exe")
    assert not fires(native, rid, "DeviceRegistryEvents", elsewhere)


def test_deleted_keys_are_read_from_the_previous_key(native: RuleSet, stock: RuleSet) -> None:
    rid = sigma_id("registry_delete_removal_amsi_registry_key")
    key = r"HKEY_LOCAL_MACHINE\SOFTWARE\Microsoft\AMSI\Providers\{2781761E-28E0-4109-99FE-B9D127C57AFE}"
    deleted = registry_row("", "", action="RegistryKeyDeleted", PreviousRegistryKey=key)
    assert fires(native, rid, "DeviceRegistryEvents", deleted)
    assert not fires(
        stock, stock_id("registry_delete_removal_amsi_registry_key"), "DeviceRegistryEvents", deleted
    )
    by_defender = dict(deleted, InitiatingProcessFolderPath=r"C:\Program Files\Windows Defender\MsMpEng.exe")
    assert not fires(native, rid, "DeviceRegistryEvents", by_defender)  # the rule's filter


def test_value_name_with_contains_and_endswith_on_one_target(native: RuleSet) -> None:
    rid = sigma_id("registry_event_runonce_persistence")
    key = (
        r"HKEY_LOCAL_MACHINE\SOFTWARE\Microsoft\Active Setup\Installed Components"
        r"\{C9E9A340-D1F1-11D0-821E-444553540600}"
    )
    assert fires(
        native, rid, "DeviceRegistryEvents", registry_row(key, "StubPath", r"C:\Users\Public\evil.exe")
    )
    edge = (
        r'"C:\Program Files\Microsoft\Edge\Application\1\Installer\setup.exe" --configure-user-settings'
        " --verbose-logging --system-level --msedge --channel=stable"
    )
    assert not fires(native, rid, "DeviceRegistryEvents", registry_row(key, "StubPath", edge))


@pytest.mark.parametrize(
    ("value", "modifier", "key", "name", "expected"),
    [
        (
            r"HKLM\SOFTWARE\Policies\Microsoft\Windows Defender",
            "startswith",
            r"HKEY_LOCAL_MACHINE\SOFTWARE\Policies\Microsoft\Windows Defender\Real-Time Protection",
            "X",
            True,
        ),
        (
            r"HKLM\SOFTWARE\Policies\Microsoft\Windows Defender\DisableAntiSpyware",
            "",
            r"HKEY_LOCAL_MACHINE\SOFTWARE\Policies\Microsoft\Windows Defender",
            "DisableAntiSpyware",
            True,
        ),
        (
            r"\REGISTRY\MACHINE\SOFTWARE\Policies\Microsoft\Windows Defender\DisableAntiSpyware",
            "",
            r"HKEY_LOCAL_MACHINE\SOFTWARE\Policies\Microsoft\Windows Defender",
            "DisableAntiSpyware",
            True,
        ),
        (
            r"HKU\S-1-5-21-1-2-3-1001\Software\Microsoft\Windows\CurrentVersion\Run\evil",
            "",
            r"HKEY_CURRENT_USER\S-1-5-21-1-2-3-1001\Software\Microsoft\Windows\CurrentVersion\Run",
            "evil",
            True,
        ),
        (
            r"\CurrentVersion\Run\\",
            "contains",
            r"HKEY_CURRENT_USER\S-1-5-21-1\Software\Microsoft\Windows\CurrentVersion\Run",
            "evil",
            True,
        ),
        (
            r"\CurrentVersion\Run\\",
            "contains",
            r"HKEY_CURRENT_USER\S-1-5-21-1\Software\Microsoft\Windows\CurrentVersion\Run",
            "",
            False,
        ),
        (
            r"\CurrentVersion\Run",
            "endswith",
            r"HKEY_CURRENT_USER\S-1-5-21-1\Software\Microsoft\Windows\CurrentVersion\Run",
            "evil",
            False,
        ),
        (
            r"Run\evil",
            "contains",
            r"HKEY_LOCAL_MACHINE\Software\Microsoft\Windows\CurrentVersion\Run",
            "evil.exe",
            True,
        ),
    ],
)
def test_target_object_forms(
    tmp_path: Path, value: str, modifier: str, key: str, name: str, expected: bool
) -> None:
    field = f"TargetObject|{modifier}" if modifier else "TargetObject"
    rule = tmp_path / "r.yml"
    rule.write_text(
        yaml.safe_dump(
            {
                "title": "t",
                "id": "0b0e0000-0000-4000-8000-00000000000a",
                "logsource": {"product": "windows", "category": "registry_event"},
                "detection": {"selection": {field: value.replace("\\\\", "\\")}, "condition": "selection"},
            }
        )
    )
    rs, failures = RuleSet.load([rule], builtin=False)
    assert failures == []
    assert fires(rs, rs.rules[0].id, "DeviceRegistryEvents", registry_row(key, name)) is expected


# --- alerts and coverage ---------------------------------------------------------------------------------


def test_replay_alert_carries_the_sigma_metadata(tmp_path: Path) -> None:
    rows = tmp_path / "rows.ndjson"
    rows.write_text(
        json.dumps(
            {
                "$table": "DeviceRegistryEvents",
                "Timestamp": "2026-11-20T09:00:00Z",
                "DeviceName": "ws9",
                "DeviceId": "d9",
                "ActionType": "RegistryValueSet",
                "RegistryKey": r"HKEY_LOCAL_MACHINE\SOFTWARE\Microsoft\Windows Script\Settings",
                "RegistryValueName": "AmsiEnable",
                "RegistryValueData": "0",
                "ReportId": 7,
            }
        )
        + "\n"
    )
    r = run("replay", str(rows), "--rules", str(RULES), "--no-builtin", cache=tmp_path)
    assert r.returncode == 0, r.stderr
    (alert,) = [json.loads(line) for line in r.stdout.splitlines()]
    assert alert["rule"] == {
        "id": "aa37cbb0-da36-42cb-a90f-fdf216fc7467",
        "name": "AMSI Disabled via Registry Modification",
        "version": "1.0.0",
        "severity": "high",
        "confidence": "medium",
        "tactics": ["DefenseImpairment"],
        "techniques": ["T1685"],
        "references": [],
        "false_positives": ["Unlikely"],
        "status": "experimental",
        "source": str(RULES / "registry_set_amsi_disable.yml"),
    }


def test_coverage_on_etl_rows_and_on_defender_rows(tmp_path: Path) -> None:
    r = run("rules", "coverage", str(RULES), "--no-builtin", "--json", "--source", "etl", cache=tmp_path)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    verdicts = {Path(x["source"]).stem: x for x in report["rules"]}
    pe = verdicts["proc_creation_win_hktl_execution_via_pe_metadata"]
    assert pe["verdict"] == "cannot fire" and pe["killing_columns"] == ["ProcessVersionInfoCompanyName"]
    amsi = verdicts["proc_creation_win_amsi_registry_tampering"]
    assert amsi["verdict"] == "degraded" and amsi["missing_columns"] == ["ProcessVersionInfoOriginalFileName"]
    assert verdicts["registry_set_amsi_disable"]["verdict"] == "ok"
    summary = report["summary"]
    assert (summary["ok"], summary["degraded"], summary["cannot_fire"]) == (9, 1, 1)
    assert summary["per_category"]["process_creation"] == {"ok": 0, "degraded": 1, "cannot_fire": 1}
    assert summary["per_missing_column"][0] == {
        "column": "ProcessVersionInfoCompanyName",
        "cannot_fire": 1,
        "degraded": 0,
    }
    rows = run("rules", "coverage", str(RULES), "--no-builtin", "--json", "--source", "rows", cache=tmp_path)
    assert json.loads(rows.stdout)["summary"]["ok"] == 11
    text = run("rules", "coverage", str(RULES), "--no-builtin", "--source", "etl", cache=tmp_path)
    assert "cannot fire\t37c1333a-a0db-48be-b64b-7393b2386e3b\tprocess_creation" in text.stdout
    live = json.loads(run("rules", "coverage", str(RULES), "--no-builtin", "--json", cache=tmp_path).stdout)
    assert live["summary"]["ok"] == 11  # image facts fill the version info on live traces
    assert run("rules", "coverage", "--source", "nope", cache=tmp_path).returncode == 2


def test_coverage_counts_queries_on_tables_no_input_produces(tmp_path: Path) -> None:
    q = tmp_path / "net.kql"
    q.write_text('DeviceNetworkEvents | where RemoteUrl has "evil"')
    a = tmp_path / "action.kql"
    a.write_text('DeviceRegistryEvents | where ActionType == "RegistryKeyRenamed" and RegistryKey has "Run"')
    r = run("rules", "coverage", str(tmp_path), "--no-builtin", "--json", cache=tmp_path / "c")
    summary = json.loads(r.stdout)["summary"]
    assert summary["per_missing_table"] == [{"table": "DeviceNetworkEvents", "cannot_fire": 1}]
    assert summary["per_missing_action_type"] == [{"action_type": "RegistryKeyRenamed", "cannot_fire": 1}]
    assert summary["cannot_fire"] == 2


def test_rules_for_other_log_sources_do_not_fail_a_run(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    for name in ("linux_process.yml", "powershell_service.yml"):
        (rules / name).write_text((SIGMA / "bad" / name).read_text())
    (rules / "amsi.yml").write_text((RULES / "registry_set_amsi_disable.yml").read_text())
    rows = tmp_path / "rows.ndjson"
    rows.write_text('{"$table": "DeviceRegistryEvents", "Timestamp": "2026-11-20T09:00:00Z"}\n')
    r = run("replay", str(rows), "--rules", str(rules), "--no-builtin", cache=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "2 Sigma rule(s) for log sources etwsensor does not produce were not loaded" in r.stderr
    (rules / "unknown_field.yml").write_text((SIGMA / "bad" / "unknown_field.yml").read_text())
    broken = run("replay", str(rows), "--rules", str(rules), "--no-builtin", cache=tmp_path)
    assert broken.returncode == 1 and "unknown_field.yml:9:9:" in broken.stderr
    check = run("rules", "check", "--json", str(rules), cache=tmp_path)
    failed = json.loads(check.stdout)["failed"]
    assert check.returncode == 1 and [f.get("applicable", True) for f in failed] == [False, False, True]


def test_explain_shows_the_converted_kql(tmp_path: Path) -> None:
    r = run("rules", "explain", "--json", str(RULES / "registry_set_amsi_disable.yml"), cache=tmp_path)
    info = json.loads(r.stdout)
    assert info["format"] == "sigma" and 'RegistryValueName =~ "AmsiEnable"' in info["query"]
    assert info["branches"][0]["prefilter"]  # the value-name split keeps needles for the prefilter


MSCFILE = "_Classes\\mscfile\\shell\\open\\command\\(Default)"


@pytest.mark.parametrize(
    ("detection", "name", "data", "expected"),
    [
        ({"TargetObject|endswith": MSCFILE}, "", "cmd.exe", True),
        ({"TargetObject|endswith": MSCFILE}, "x", "cmd.exe", False),
        ({"TargetObject|endswith": "\\open\\command\\DelegateExecute", "Details": "(Empty)"},
         "DelegateExecute", "", True),
        ({"TargetObject|endswith": "\\open\\command\\DelegateExecute", "Details": "(Empty)"},
         "DelegateExecute", "x", False),
    ],
)  # fmt: skip
def test_default_value_and_empty_data_as_sysmon_names_them(
    tmp_path: Path, detection: dict[str, str], name: str, data: str, expected: bool
) -> None:
    """Sysmon writes a key's unnamed value as `\\(Default)` and no data as `(Empty)`: SigmaHQ's
    registry_set_bypass_uac_using_eventviewer and _delegateexecute rules depend on both."""
    rule = tmp_path / "r.yml"
    document = {
        "title": "t",
        "id": "0b0e0000-0000-4000-8000-00000000000b",
        "logsource": {"product": "windows", "category": "registry_set"},
        "detection": {"selection": detection, "condition": "selection"},
    }
    rule.write_text(yaml.safe_dump(document))
    rs, failures = RuleSet.load([rule], builtin=False)
    assert failures == []
    key = r"HKEY_CURRENT_USER\S-1-5-21-1-500_Classes\mscfile\shell\open\command"
    assert fires(rs, rs.rules[0].id, "DeviceRegistryEvents", registry_row(key, name, data)) is expected
