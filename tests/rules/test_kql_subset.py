"""The fast front end for converted Sigma rules gives duckdb-kql's own IR, or steps aside."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from etwsensor.rules import RuleSet
from etwsensor.rules.frontend import parse
from etwsensor.rules.kql_subset import parse_where_query

DATA = Path(__file__).resolve().parents[1] / "data"


def _query(path: Path) -> str:
    return "\n".join(line for line in path.read_text("utf-8").splitlines() if not line.startswith("//"))


def _corpus() -> list[str]:
    texts = [_query(p) for p in sorted((DATA / "kql" / "sigma").glob("*.kql"))]
    texts += [_query(p) for p in sorted((DATA / "sigma" / "converted").glob("*.kql"))]
    rs, _ = RuleSet.load([DATA / "sigma" / "rules"], builtin=False)
    return texts + [r.query for r in rs.rules]


def test_same_ir_as_the_full_front_end_on_converted_sigma_rules() -> None:
    texts = _corpus()
    fast_count = 0
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 20000))  # long or-chains compare recursively
    try:
        for kql in texts:
            fast = parse_where_query(kql)
            if fast is None:
                continue
            fast_count += 1
            assert fast == parse(kql), kql[:200]
    finally:
        sys.setrecursionlimit(limit)
    assert fast_count >= len(texts) - 2  # the grammar-rejected rule and nothing else of this kind leaves


@pytest.mark.parametrize(
    "kql",
    [
        'DeviceProcessEvents\n| where FolderPath endswith ":\\*."',  # not a KQL escape: Kql.g4 must say where
        'let x = "a";\nDeviceProcessEvents\n| where FolderPath has x',
        'DeviceNetworkEvents\n| where ipv4_is_in_range(RemoteIP, "10.0.0.0/8")',
        "DeviceProcessEvents\n| where FolderPath in (\"a\")",
        'DeviceProcessEvents\n| where FolderPath contains "a" | project FolderPath',
        'DeviceProcessEvents\n| where (FolderPath contains "a"',
        "DeviceProcessEvents\n| where not FolderPath",
    ],
)
def test_anything_else_goes_to_the_full_front_end(kql: str) -> None:
    assert parse_where_query(kql) is None


def test_literals_and_operators() -> None:
    kql = (
        'DeviceRegistryEvents\n| where (RegistryKey endswith "a\\\\b\\"c" or RegistryValueName =~ "") and '
        'not((ActionType in~ ("X", "Y") and isempty(RegistryValueData))) and InitiatingProcessId == -3 '
        'and RegistryKey matches regex "(?i)^x\\\\d$" and RegistryKey has_all ("p", "q") and FileSize >= 1.5'
    )
    assert parse_where_query(kql.replace("FileSize", "InitiatingProcessFileSize")) == parse(
        kql.replace("FileSize", "InitiatingProcessFileSize")
    )
