"""Sigma correlation rules (event_count, value_count, temporal, temporal_ordered) loaded beside the
rules they refer to, replayed over a row file through `etwsensor replay`, and checked by `rules check`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.rules.test_stateful import _row, cli

BASE = {
    "run.kql": "// id: run-key-set\n// name: Run key set\n"
    'DeviceRegistryEvents\n| where RegistryKey has @"\\CurrentVersion\\Run"\n',
    "temp.kql": "// id: temp-file\n// name: File in Temp\n"
    'DeviceFileEvents\n| where FolderPath has @"\\Temp\\"\n',
}
IDS = {  # Sigma rule ids are UUIDs
    "event_count": "0e95725d-7320-415d-80f7-004da920fc01",
    "value_count": "0e95725d-7320-415d-80f7-004da920fc02",
    "temporal": "0e95725d-7320-415d-80f7-004da920fc03",
    "temporal_ordered": "0e95725d-7320-415d-80f7-004da920fc04",
    "value_sum": "0e95725d-7320-415d-80f7-004da920fc05",
}
RUN = r"HKLM\Software\Microsoft\Windows\CurrentVersion\Run"


def _correlation(kind: str, rules: list[str], condition: str, extra: str = "", span: str = "5m") -> str:
    refs = "".join(f"    - {r}\n" for r in rules)
    return (
        f"title: {kind} correlation\nid: {IDS[kind]}\nlevel: high\ncorrelation:\n  type: {kind}\n"
        f"  rules:\n{refs}  group-by:\n    - ComputerName\n    - InitiatingProcessId\n"
        f"  timespan: {span}\n{condition}{extra}"
    )


def _file_row(i: int, seconds: float, pid: int, path: str) -> dict[str, Any]:
    return dict(
        _row(i, seconds, pid, None, "DeviceFileEvents"), FolderPath=path, FileName=path.rsplit("\\", 1)[1]
    )


def _replay(tmp_path: Path, correlation: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rules = tmp_path / "rules"
    rules.mkdir(parents=True)
    for name, text in BASE.items():
        (rules / name).write_text(text)
    (rules / "corr.yml").write_text(correlation)
    data = tmp_path / "rows.ndjson"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    r = cli("replay", str(data), "--no-builtin", "--rules", str(rules), cache=tmp_path)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


def test_event_count(tmp_path: Path) -> None:
    rows = [_row(i, 10 * i, 7, f"{RUN}\\v{i}") for i in range(1, 5)] + [_row(9, 50, 8, f"{RUN}\\x")]
    alerts = _replay(
        tmp_path, _correlation("event_count", ["run-key-set"], "  condition:\n    gte: 3\n"), rows
    )
    # generate defaults to false: the Run key rule alerts only through the correlation
    assert [a["rule"]["id"] for a in alerts] == [IDS["event_count"]]
    assert alerts[0]["row"]["InitiatingProcessId"] == 7 and alerts[0]["row"]["event_count"] == 3
    assert alerts[0]["report_ids"] == [1, 2, 3]


def test_value_count_counts_distinct_values(tmp_path: Path) -> None:
    rows = [_row(i, i, 7, f"{RUN}\\same") for i in range(1, 4)] + [_row(4, 5, 7, f"{RUN}\\other")]
    condition = "  condition:\n    gte: 2\n    field: RegistryKey\n"
    alerts = _replay(tmp_path, _correlation("value_count", ["run-key-set"], condition), rows)
    assert len(alerts) == 1 and alerts[0]["row"]["value_count"] == 2
    high = _replay(
        tmp_path / "b", _correlation("value_count", ["run-key-set"], condition.replace("2", "3")), rows
    )
    assert high == []


def test_temporal_needs_every_rule_in_the_window(tmp_path: Path) -> None:
    rows = [
        _file_row(1, 0, 7, r"C:\Users\a\AppData\Local\Temp\x.ps1"),
        _row(2, 30, 7, f"{RUN}\\x"),
        _row(3, 40, 8, f"{RUN}\\y"),  # another process: only one of the two rules
    ]
    extra = "  generate: true\n"
    alerts = _replay(tmp_path, _correlation("temporal", ["temp-file", "run-key-set"], "", extra), rows)
    corr = [a for a in alerts if a["rule"]["id"] == IDS["temporal"]]
    assert len(corr) == 1 and corr[0]["row"]["InitiatingProcessId"] == 7
    assert sorted(corr[0]["row"]["rules"]) == ["run-key-set", "temp-file"]
    assert len(alerts) == 4  # generate: true keeps the three single-rule alerts


def test_temporal_ordered_needs_the_order_and_the_timespan(tmp_path: Path) -> None:
    rows = [
        _row(1, 0, 7, f"{RUN}\\before"),  # the Run key first: not the order asked
        _file_row(2, 10, 7, r"C:\Temp\a.txt"),
        _row(3, 70, 7, f"{RUN}\\within"),
        _file_row(4, 100, 9, r"C:\Temp\b.txt"),
        _row(5, 400, 9, f"{RUN}\\too-late"),
    ]
    alerts = _replay(
        tmp_path, _correlation("temporal_ordered", ["temp-file", "run-key-set"], "", span="2m"), rows
    )
    assert [(a["rule"]["id"], a["report_ids"]) for a in alerts] == [(IDS["temporal_ordered"], [2, 3])]


def test_unsupported_correlations_are_reported(tmp_path: Path) -> None:
    for name, text in BASE.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "sum.yml").write_text(
        _correlation("value_sum", ["run-key-set"], "  condition:\n    gte: 3\n    field: FileSize\n")
    )
    (tmp_path / "missing.yml").write_text(_correlation("event_count", ["nope"], "  condition:\n    gte: 3\n"))
    r = cli("rules", "check", str(tmp_path), cache=tmp_path)
    assert r.returncode == 1
    assert f"{tmp_path / 'sum.yml'}:1:1: correlation type value_sum is not supported" in r.stdout
    assert (
        f"{tmp_path / 'missing.yml'}:1:1: the correlation refers to rules that are not loaded: nope"
        in r.stdout
    )


SIGMA_RUN = """title: Run key set (Sigma)
id: 5b0e3c1a-7320-415d-80f7-004da920fc10
name: run_key_set
status: test
logsource:
  category: registry_set
  product: windows
detection:
  selection:
    TargetObject|contains: '\\CurrentVersion\\Run\\'
  condition: selection
level: medium
"""


def test_a_correlation_refers_to_a_sigma_rule_by_its_name(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir(parents=True)
    (rules / "run.yml").write_text(SIGMA_RUN)
    corr = _correlation("event_count", ["run_key_set"], "  condition:\n    gte: 3\n")
    (rules / "corr.yml").write_text(corr)
    rows = [dict(_row(i, 10 * i, 7, RUN), RegistryValueName=f"v{i}") for i in range(1, 5)]
    data = tmp_path / "rows.ndjson"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    r = cli("replay", str(data), "--no-builtin", "--rules", str(rules), cache=tmp_path)
    assert r.returncode == 0, r.stderr
    alerts = [json.loads(line) for line in r.stdout.splitlines()]
    assert [a["rule"]["id"] for a in alerts] == [IDS["event_count"]]  # the referenced rule is not generated
