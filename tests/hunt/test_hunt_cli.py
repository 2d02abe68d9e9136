"""`etwsensor hunt`, `export` and `schema` as a user runs them, on the bundled demo trace."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from etwsensor.cli import app
from etwsensor.tables import schemas

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo.jsonl.zst"


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def run(*args: str, stdin: str | None = None) -> Result:
    """In-process, as the installed command runs (one test below goes through a real process)."""
    r = CliRunner().invoke(app, list(args), input=stdin)
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return Result(r.exit_code, r.stdout, r.stderr)


def ndjson(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def demo_rows() -> list[dict[str, object]]:
    """The demo's rows as `normalize` prints them: the independent reference for what hunt loads."""
    r = run("normalize", str(DEMO))
    assert r.returncode == 0, r.stderr
    return ndjson(r.stdout)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ds") / "dataset"
    for _ in range(2):  # appended twice: a dataset grows by new parts
        r = run("export", str(DEMO), "-o", str(out))
        assert r.returncode == 0, r.stderr
    return out


def test_summarize_counts_equal_the_normalized_rows(demo_rows: list[dict[str, object]]) -> None:
    q = "DeviceImageLoadEvents | summarize n = count() by FileName"
    cmd = [sys.executable, "-m", "etwsensor", "hunt", q, str(DEMO)]
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    got = {row["FileName"]: row["n"] for row in ndjson(r.stdout)}
    want = Counter(row["FileName"] for row in demo_rows if row["$table"] == "DeviceImageLoadEvents")
    assert got == dict(want) and sum(want.values()) > 100


def test_rows_keep_defender_types_and_values(demo_rows: list[dict[str, object]]) -> None:
    r = run("hunt", "DeviceProcessEvents | getschema", str(DEMO))
    assert r.returncode == 0, r.stderr
    types = {row["ColumnName"]: row["ColumnType"] for row in ndjson(r.stdout)}
    assert types == {c.name: c.type for c in schemas()["DeviceProcessEvents"].columns}
    r = run("hunt", "DeviceProcessEvents | sort by ReportId asc", str(DEMO))
    got = ndjson(r.stdout)
    want = [{k: v for k, v in row.items() if k != "$table"} for row in demo_rows
            if row["$table"] == "DeviceProcessEvents"]  # fmt: skip
    assert len(got) == len(want) == 75
    # Datetimes: hunt prints Kusto's 7-digit form, normalize microseconds; compare as instants.
    for g, w in zip(got, sorted(want, key=lambda x: int(str(x["ReportId"]))), strict=True):
        for key, value in w.items():
            if isinstance(value, str) and value.endswith("Z") and key.endswith(("Time", "Timestamp")):
                assert str(g[key]).rstrip("0Z").rstrip(".") == value.rstrip("0Z").rstrip("."), key
            else:
                assert g[key] == value, key


def test_now_is_the_newest_row_time_unless_pinned() -> None:
    q = "union DeviceProcessEvents, DeviceFileEvents, DeviceEvents | summarize newest = max(Timestamp)"
    q += " | extend n = now()"
    row = ndjson(run("hunt", q, str(DEMO)).stdout)[0]
    assert row["n"] == row["newest"] == "2026-11-20T09:09:42.3953970Z"  # the last GetAsyncKeyState window
    q2 = "DeviceProcessEvents | where Timestamp > ago(1d) | count"
    pinned = ndjson(run("hunt", q2, str(DEMO), "--now", "2026-11-25T00:00:00Z").stdout)[0]
    assert pinned == {"Count": 0}
    assert ndjson(run("hunt", q2, str(DEMO)).stdout)[0] == {"Count": 75}


def test_query_errors_point_at_line_and_column(tmp_path: Path) -> None:
    r = run("hunt", "DeviceProcessEvents\n| where FileNam == 'x'", str(DEMO))
    assert r.returncode == 1 and "<query>:2:9: unknown column 'FileNam'" in r.stderr
    assert r.stdout == ""
    q = tmp_path / "bad.kql"
    q.write_text("DeviceProcessEvents\n| wher x\n", encoding="utf-8")
    r = run("hunt", str(q), str(DEMO))
    assert r.returncode == 1 and f"{q}:2:" in r.stderr and "syntax error" in r.stderr
    r = run("hunt", "DeviceNetworkEvents | take 1", str(DEMO))
    assert r.returncode == 1 and "<query>:1:1: unknown table 'DeviceNetworkEvents'" in r.stderr
    assert "Traceback" not in r.stderr


def test_query_from_a_file_and_from_stdin(tmp_path: Path) -> None:
    q = tmp_path / "q.kql"
    q.write_text("// comment line\nDeviceRegistryEvents\n| count\n", encoding="utf-8")
    assert ndjson(run("hunt", str(q), str(DEMO)).stdout) == [{"Count": 54}]
    assert ndjson(run("hunt", "-", str(DEMO), stdin="DeviceFileEvents | count").stdout) == [{"Count": 150}]


def test_formats(tmp_path: Path) -> None:
    q = "DeviceProcessEvents | summarize n = count(), names = make_set(FileName) by AccountName"
    q += " | sort by n desc"
    rows = ndjson(run("hunt", q, str(DEMO), "-f", "ndjson").stdout)
    assert rows[0]["AccountName"] == "alice" and isinstance(rows[0]["names"], list)
    text = run("hunt", q, str(DEMO), "-f", "csv").stdout
    table = list(csv.DictReader(io.StringIO(text)))
    assert [t["AccountName"] for t in table] == [r["AccountName"] for r in rows]
    assert json.loads(table[0]["names"]) == rows[0]["names"]
    out = tmp_path / "r.parquet"
    r = run("hunt", q, str(DEMO), "-f", "parquet", "-o", str(out))
    assert r.returncode == 0, r.stderr
    got = duckdb.sql(f"SELECT AccountName, n FROM read_parquet('{out}') ORDER BY n DESC").fetchall()
    assert got == [(r["AccountName"], r["n"]) for r in rows]
    shown = run("hunt", q, str(DEMO), "-f", "table").stdout
    assert "AccountName" in shown and "alice" in shown
    assert run("hunt", q, str(DEMO), "-f", "parquet").returncode == 2
    assert run("hunt", q, str(DEMO), "-f", "xml").returncode == 2


def test_db_is_kept_and_grows_input_by_input(tmp_path: Path) -> None:
    db = tmp_path / "h.duckdb"
    rows = tmp_path / "extra.ndjson"
    rows.write_text(
        json.dumps(
            {"$table": "DeviceProcessEvents", "FileName": "extra.exe", "Timestamp": "2026-11-20T10:00:00Z"}
        )
        + "\n",
        encoding="utf-8",
    )
    count = "DeviceProcessEvents | count"
    assert ndjson(run("hunt", count, str(DEMO), "--db", str(db)).stdout) == [{"Count": 75}]
    again = run("hunt", count, str(DEMO), "--db", str(db))
    assert ndjson(again.stdout) == [{"Count": 75}] and "already in" in again.stderr
    assert ndjson(run("hunt", count, str(rows), "--db", str(db)).stdout) == [{"Count": 76}]
    assert ndjson(run("hunt", count, "--db", str(db)).stdout) == [{"Count": 76}]  # no inputs: the db alone
    newest = ndjson(run("hunt", "DeviceProcessEvents | summarize max(Timestamp) | extend n = now()", "--db",
                        str(db)).stdout)[0]  # fmt: skip
    assert newest["n"] == "2026-11-20T10:00:00Z"


def test_damaged_inputs_are_reported_and_the_rest_is_queried(tmp_path: Path) -> None:
    rows = tmp_path / "rows.ndjson"
    rows.write_text(
        '{"$table": "DeviceFileEvents", "FileName": "a.txt"}\nnot json\n{"$table": "Nope"}\n',
        encoding="utf-8",
    )
    junk = tmp_path / "junk.etl"
    junk.write_bytes(b"\x00" * 100)
    r = run("hunt", "DeviceFileEvents | count", str(rows), str(junk))
    assert r.returncode == 3 and ndjson(r.stdout) == [{"Count": 1}]
    assert "damaged:" in r.stderr and "Traceback" not in r.stderr
    assert run("hunt", "DeviceFileEvents | count", str(tmp_path / "missing.etl")).returncode == 2
    assert run("hunt", "DeviceFileEvents | count", str(tmp_path)).returncode == 2  # a dir, not a dataset


def test_export_layout_parts_and_types(dataset: Path, demo_rows: list[dict[str, object]]) -> None:
    parts = sorted(dataset.glob("table=*/date=*/device=*/part-*.parquet"))
    tables = {p.parts[-4] for p in parts}
    assert tables == {f"table={row['$table']}" for row in demo_rows}  # the tables the demo has rows of
    assert {p.parts[-3] for p in parts} == {"date=2026-11-20"}
    assert {p.parts[-2] for p in parts} == {"device=ws01.synthetic-demo.invalid"}
    assert len(parts) == 2 * len(tables)  # two exports, unique part names, nothing overwritten
    meta = duckdb.sql(f"SELECT DISTINCT compression FROM parquet_metadata('{parts[0]}')").fetchall()
    assert meta == [("ZSTD",)]
    proc = next(p for p in parts if "table=DeviceProcessEvents" in str(p))
    described = duckdb.sql(
        f"DESCRIBE SELECT * FROM read_parquet('{proc}', hive_partitioning=false)"
    ).fetchall()
    assert [d[0] for d in described] == [c.name for c in schemas()["DeviceProcessEvents"].columns]
    assert dict((d[0], d[1]) for d in described)["Timestamp"] == "TIMESTAMP WITH TIME ZONE"


def test_hunt_reads_a_dataset_with_partition_pruning(dataset: Path) -> None:
    q = "union DeviceProcessEvents, DeviceFileEvents | summarize n = count() by DeviceName"
    r = run("hunt", q, str(dataset))
    assert r.returncode == 0, r.stderr
    assert ndjson(r.stdout) == [{"DeviceName": "ws01.synthetic-demo.invalid", "n": 2 * (75 + 150)}]
    none = run("hunt", "DeviceProcessEvents | count", str(dataset), "--device", "other-host")
    assert ndjson(none.stdout) == [{"Count": 0}] and "0 Parquet file(s)" in none.stderr
    later = run("hunt", "DeviceProcessEvents | count", str(dataset), "--since", "2026-11-21T00:00:00Z")
    assert ndjson(later.stdout) == [{"Count": 0}] and "0 Parquet file(s)" in later.stderr
    mixed = run(
        "hunt",
        "DeviceProcessEvents | count",
        str(dataset),
        str(DEMO),
        "--device",
        "WS01.synthetic-demo.invalid",
    )
    assert ndjson(mixed.stdout) == [{"Count": 3 * 75}]
    cut = run("hunt", "DeviceProcessEvents | count", str(dataset), "--since", "2026-11-20T09:05:00Z")
    direct = run(
        "hunt", "DeviceProcessEvents | where Timestamp >= datetime(2026-11-20T09:05:00Z) | count", str(DEMO)
    )
    assert ndjson(cut.stdout)[0]["Count"] == 2 * ndjson(direct.stdout)[0]["Count"] > 0


def test_schema_kusto_matches_the_tables() -> None:
    r = run("schema", "--kusto")
    assert r.returncode == 0, r.stderr
    commands = [line for line in r.stdout.splitlines() if line.strip()]
    assert len(commands) == len(schemas())
    for line in commands:
        head, cols = line.split(" (", 1)
        name = head.removeprefix(".create-merge table ")
        pairs = [c.split(":") for c in cols.rstrip(")").split(", ")]
        assert pairs == [[c.name, c.type] for c in schemas()[name].columns]
    doc = json.loads(run("schema", "--json", "-t", "devicefileevents").stdout)
    assert list(doc) == ["DeviceFileEvents"]
    assert run("schema", "-t", "Nope").returncode == 2


def test_deprecated_function_names_run_and_strings_stay_as_written() -> None:
    q = """DeviceProcessEvents | summarize s = makeset(FileName), l = makelist(ProcessId) by AccountName
| extend t = "makeset(x)", j = parsejson('{"k": "makelist(y)"}')
| where AccountName == "system" """
    r = run("hunt", q, str(DEMO))
    assert r.returncode == 0, r.stderr
    (row,) = ndjson(r.stdout)
    assert row["s"] == ["TiWorker.exe"] and len(row["l"]) == 6
    assert row["t"] == "makeset(x)" and row["j"] == {"k": "makelist(y)"}


def test_sql_shows_the_translation_and_runs_nothing() -> None:
    r = run("hunt", "--sql", "DeviceProcessEvents | summarize n = count() by FileName | top 3 by n")
    assert r.returncode == 0, r.stderr
    assert "SELECT" in r.stdout and '"DeviceProcessEvents"' in r.stdout and "LIMIT 3" in r.stdout
    bad = run("hunt", "--sql", "DeviceProcessEvents | wher x")
    assert bad.returncode == 1 and "<query>:1:" in bad.stderr


def test_windows_event_logs_are_inputs_too(tmp_path: Path) -> None:
    """What replay reads, hunt reads: a Sysmon EVTX (tests/data/windows) gives hunt the rows replay counts."""
    import gzip

    evtx = tmp_path / "sysmon-12-processcreate.evtx"
    source = ROOT / "tests" / "data" / "windows" / "sysmon-12-processcreate.evtx.gz"
    evtx.write_bytes(gzip.decompress(source.read_bytes()))
    replay = ["replay", str(evtx), "--json-summary", "--sink", f"file:{tmp_path}/a"]
    replayed = subprocess.run([sys.executable, "-m", "etwsensor", *replay], capture_output=True, text=True)
    want = json.loads(replayed.stderr.strip().splitlines()[-1])["rows"]
    q = "union withsource=T DeviceProcessEvents, DeviceImageLoadEvents, DeviceFileEvents"
    r = run("hunt", q + " | summarize n = count() by T", str(evtx))
    assert r.returncode == 0, r.stderr
    got = {row["T"]: row["n"] for row in ndjson(r.stdout)}
    assert got == {t: n for t, n in want.items() if n} and sum(got.values()) > 0
