"""scripts/dense_etl.py, the dense .etl benchmark input: the real trace's decodable records, repeated.

Replayed through `etwsensor replay`, a file of N copies must give exactly N times what the real trace
gives (decoded events, rows per table and action, alerts per rule), or the benchmark would not measure
the real trace's events.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from typer.testing import CliRunner

from etwsensor.cli import app
from etwsensor.sources.etl import EtlReader

ROOT = Path(__file__).parents[2]
ETL = ROOT / "tests" / "data" / "etl" / "perfview_net.4.5.2.x64.etl"
COPIES = 3


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dense_etl", ROOT / "scripts" / "dense_etl.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["dense_etl"] = module
    spec.loader.exec_module(module)
    return module


def replay(path: Path, out: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    r = CliRunner().invoke(app, ["replay", str(path), "--json-summary", "--sink", f"file:{out}"])
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    assert r.exit_code == 0, r.stderr
    summary = json.loads(r.stderr.strip().splitlines()[-1])
    alerts = [json.loads(line) for line in out.read_text("utf-8").splitlines()] if out.exists() else []
    return summary, alerts


@pytest.fixture(scope="module")
def dense(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    script = load_script()
    folder = tmp_path_factory.mktemp("dense")
    files = {}
    for copies in (1, COPIES):
        files[copies] = folder / f"dense-{copies}.etl"
        made = script.write_dense_etl(ETL, files[copies], copies)
        assert made["copies"] == copies
    return files


def counts(summary: dict[str, Any], times: int = 1) -> dict[str, Any]:
    return {
        "events": summary["events"] * times,
        "rows": {t: n * times for t, n in summary["rows"].items()},
        "rows_by_action": {
            t: {a: n * times for a, n in actions.items()} for t, actions in summary["rows_by_action"].items()
        },
        "alerts_by_rule": {r: n * times for r, n in summary["alerts_by_rule"].items()},
    }


def test_one_copy_replays_as_the_real_trace(dense: dict[int, Path], tmp_path: Path) -> None:
    real, real_alerts = replay(ETL, tmp_path / "real.ndjson")
    one, one_alerts = replay(dense[1], tmp_path / "one.ndjson")
    assert real["events"] > 7000 and real_alerts  # the trace has something to compare
    assert counts(one) == counts(real)
    assert one["damage"] == [] and one["decode_errors"] == 0
    assert [(a["rule"], a["time"], a["row"]) for a in one_alerts] == [
        (a["rule"], a["time"], a["row"]) for a in real_alerts
    ]


def test_copies_replay_as_that_many_real_traces(dense: dict[int, Path], tmp_path: Path) -> None:
    one, one_alerts = replay(dense[1], tmp_path / "one.ndjson")
    many, many_alerts = replay(dense[COPIES], tmp_path / "many.ndjson")
    assert counts(many) == counts(one, COPIES)
    assert many["damage"] == [] and many["suppressed_by_rule"] == {}
    assert len(many_alerts) == COPIES * len(one_alerts)
    # every copy's alerts come later than the previous copy's, on the same rows
    rows = [{k: v for k, v in a["row"].items() if k != "Timestamp"} for a in many_alerts]
    assert rows == [{k: v for k, v in a["row"].items() if k != "Timestamp"} for a in one_alerts] * COPIES
    assert [a["time"] for a in many_alerts] == sorted(a["time"] for a in many_alerts)


def test_the_dense_file_holds_only_decodable_records_in_time_order(dense: dict[int, Path]) -> None:
    from etwsensor.decode import Decoder

    known = Decoder().known_guids
    real = [r for r in EtlReader(ETL).records() if r.guid in known]
    reader = EtlReader(dense[COPIES])
    records = list(reader.records())
    assert reader.damage == [] and reader.stats.compressed_buffers == 0
    assert reader.header.buffers_written == reader.stats.buffers
    # the logfile header record, then the decodable records COPIES times, payloads unchanged
    assert len(records) == 1 + COPIES * len(real)
    assert [r.payload for r in records[1:]] == [r.payload for r in real] * COPIES
    assert all(a.ts <= b.ts for a, b in itertools.pairwise(records))
    step = records[1 + len(real)].ts - records[1].ts
    assert all(
        (c.ts - r.ts, c.pid, c.tid, c.cpu, c.guid) == (step, r.pid, r.tid, r.cpu, r.guid)
        for r, c in zip(records[1 : 1 + len(real)], records[1 + len(real) : 1 + 2 * len(real)], strict=True)
    )
