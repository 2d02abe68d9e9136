"""Hunt benchmark: rows/s loaded into DuckDB, Parquet written, and the hunting corpus's query time over
1M and 10M demo-derived rows, on one core. A dev tool: the corpus is read from ../shared beside the checkout.

    python scripts/bench.py hunt [--rows 1000000 10000000] [--corpus DIR] [--memory-limit 2GB]

Rows: the demo trace's rows (all of them built, as `hunt` loads them) repeated, each copy 10 minutes
later (Timestamp and every other datetime shifted) and spread over 10 device names; ReportId stays unique.
* load: ``RowLoader`` (what ``hunt`` uses) into an on-disk DuckDB database, rows/s and the peak RSS of the
  process while loading (DuckDB's ``memory_limit`` set, so the figure shows what batching bounds);
* the same end to end: ``load_inputs`` of the scaled demo recording (bench-data/, shared with ``bench.py
  replay``): decode + normalize + load;
* Parquet: ``copy_to_dataset`` (the COPY that ``export``'s writer runs on its staged rows) writing the
  loaded tables as the Hive dataset, rows/s and bytes (``export`` itself = load + this);
* the corpus: every query of the hunting corpus that ``scripts/kql_coverage.py`` counts as running, over
  the loaded rows; translation (duckdb-kql) and execution (DuckDB) times apart: total, median, p90, slowest.
Sizes after the first are copies of the first database made in SQL (Timestamp and ReportId shifted per copy),
so only the first size measures loading.
DuckDB runs with ``threads=1`` and the process is pinned to one CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
CORPUS = SHARED / "data" / "kql" / "m365d-hunting-queries"
DEMO = ROOT / "examples" / "demo.jsonl.zst"
WORK = ROOT / "bench-data" / "hunt"


def demo_rows() -> list[tuple[str, dict[str, Any]]]:
    from etwsensor.pipeline import ReplaySummary, input_rows

    return list(input_rows(DEMO, None, ReplaySummary()))


def scaled(base: list[tuple[str, dict[str, Any]]], n: int) -> Iterator[tuple[str, dict[str, Any]]]:
    """``n`` rows: copies of the demo rows, copy k shifted by 10k minutes, on device ws{k % 10}."""
    made = 0
    k = 0
    while True:
        delta = timedelta(minutes=10 * k)
        device = f"ws{k % 10:02d}.bench.invalid"
        for table, row in base:
            out = {c: (v + delta if isinstance(v, datetime) else v) for c, v in row.items()}
            out["DeviceName"] = device
            out["ReportId"] = made
            yield table, out
            made += 1
            if made >= n:
                return
        k += 1


class PeakRss:
    """Samples the process's resident set size every 50 ms (Linux /proc) while it runs."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def now() -> int:
        try:
            with open("/proc/self/statm") as fh:
                return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.now())
            time.sleep(0.05)

    def __enter__(self) -> PeakRss:
        self.peak = self.now()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def corpus_queries(con: Any) -> list[tuple[str, str]]:
    """The corpus queries that run on etwsensor's tables (the ones kql_coverage counts as ran)."""
    import duckdb

    from etwsensor.hunt.query import HuntQueryError, translate
    from etwsensor.tables import schemas

    sys.path.insert(0, str(Path(__file__).parent))
    from kql_coverage import AH_TABLE

    ours = set(schemas())
    out = []
    for path in sorted(CORPUS.glob("*.kql")):
        text = path.read_text(encoding="utf-8")
        code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("//"))
        if not set(AH_TABLE.findall(code)) <= ours:
            continue
        try:
            translate(con, text, None)
        except (HuntQueryError, duckdb.Error):
            continue
        out.append((path.name, text))
    return out


def derive(db: Path, source: Path, copies: int, memory_limit: str) -> Any:
    """A database of ``copies`` copies of the rows in ``source`` (DuckDB SQL, no Python per row): copy k
    has Timestamp shifted past the previous copy's newest row and ReportId offset, like the loaded copies."""
    from etwsensor.hunt.store import connect
    from etwsensor.tables import schemas

    for p in (db, db.with_suffix(".duckdb.wal")):
        p.unlink(missing_ok=True)
    con = connect(db)
    con.execute("SET threads=1")
    con.execute(f"SET memory_limit='{memory_limit}'")
    con.execute(f"ATTACH '{source}' AS src (READ_ONLY)")
    for name in schemas():
        span = con.execute(f'SELECT max(Timestamp) - min(Timestamp) FROM src."{name}"').fetchone()
        rows = con.execute(f'SELECT max(ReportId) + 1 FROM src."{name}"').fetchone()
        if not span or span[0] is None or not rows:
            continue
        for k in range(copies):
            con.execute(
                f'INSERT INTO "{name}" SELECT * REPLACE (Timestamp + ? * ? AS Timestamp,'
                f' ReportId + ? AS ReportId) FROM src."{name}"',
                [k + 1, span[0], k * rows[0]],
            )
    con.execute("DETACH src")
    con.execute("CHECKPOINT")
    return con


def bench_corpus(con: Any) -> dict[str, Any]:
    """Every runnable corpus query over the connection's rows: translation and execution times apart."""
    from etwsensor.hunt.query import translate
    from etwsensor.hunt.store import newest_time

    now = newest_time(con)
    times: dict[str, float] = {}
    translating = 0.0
    failed: dict[str, str] = {}
    for name, text in corpus_queries(con):
        t0 = time.perf_counter()
        sql, params = translate(con, text, now)
        t1 = time.perf_counter()
        try:
            (con.execute(sql, params) if params else con.execute(sql)).fetchall()
        except Exception as exc:  # a query that ran on the demo and not here: report it
            failed[name] = str(exc).splitlines()[0][:120]
            continue
        translating += t1 - t0
        times[name] = time.perf_counter() - t1
    ordered = sorted(times.values())
    slow = sorted(times.items(), key=lambda kv: -kv[1])[:3]
    return {
        "corpus_queries": len(times),
        "corpus_failed": failed,
        "corpus_execution_total_seconds": round(sum(ordered), 1),
        "corpus_translation_total_seconds": round(translating, 1),
        "corpus_execution_median_seconds": round(statistics.median(ordered), 3) if ordered else None,
        "corpus_execution_p90_seconds": round(ordered[int(len(ordered) * 0.9)], 3) if ordered else None,
        "corpus_slowest_seconds": {k: round(v, 2) for k, v in slow},
    }


def bench_rows(n: int, base: list[tuple[str, dict[str, Any]]], memory_limit: str) -> dict[str, Any]:
    from etwsensor.hunt.dataset import copy_to_dataset
    from etwsensor.hunt.store import RowLoader, connect

    WORK.mkdir(parents=True, exist_ok=True)
    db = WORK / f"hunt-{n // 1000}k.duckdb"
    for p in (db, db.with_suffix(".duckdb.wal")):
        p.unlink(missing_ok=True)
    # Making the row dicts alone, to tell the loader's own cost from the generator's.
    t0 = time.perf_counter()
    for _ in scaled(base, n):
        pass
    gen_secs = time.perf_counter() - t0

    con = connect(db)
    con.execute("SET threads=1")
    con.execute(f"SET memory_limit='{memory_limit}'")
    rss_before = PeakRss.now()
    with PeakRss() as rss:
        t0 = time.perf_counter()
        loader = RowLoader(con)
        for table, row in scaled(base, n):
            loader.add(table, row)
        loader.flush()
        con.execute("CHECKPOINT")
        load_secs = time.perf_counter() - t0
    result: dict[str, Any] = {
        "rows": n,
        "load_seconds": round(load_secs, 1),
        "load_rows_per_s": round(n / load_secs),
        "load_rows_per_s_without_making_the_rows": round(n / max(load_secs - gen_secs, 1e-9)),
        "rss_mb_before_load": round(rss_before / 2**20),
        "rss_mb_peak_while_loading": round(rss.peak / 2**20),
        "duckdb_memory_limit": memory_limit,
        "db_mb": round(db.stat().st_size / 2**20),
    }

    out = WORK / f"dataset-{n // 1000}k"
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    for name in loader.loaded:
        copy_to_dataset(con, name, name, out)
    pq_secs = time.perf_counter() - t0
    size = sum(f.stat().st_size for f in out.rglob("*.parquet"))
    result["parquet_seconds"] = round(pq_secs, 1)
    result["parquet_rows_per_s"] = round(n / pq_secs)
    result["parquet_mb"] = round(size / 2**20, 1)
    result["parquet_files"] = sum(1 for _ in out.rglob("*.parquet"))
    shutil.rmtree(out, ignore_errors=True)

    if CORPUS.is_dir():
        result.update(bench_corpus(con))
    con.close()
    return result


def bench_recording(events: int) -> dict[str, Any]:
    """End to end: the scaled demo recording (as bench.py replay makes it) → decode → normalize → DuckDB."""
    from bench import scaled_demo

    from etwsensor.hunt.store import connect, load_inputs

    path = ROOT / "bench-data" / f"replay-{events // 1000}k.jsonl.zst"
    if not path.exists():
        scaled_demo(path, events)
    con = connect()
    con.execute("SET threads=1")
    t0 = time.perf_counter()
    report = load_inputs(con, [path])
    secs = time.perf_counter() - t0
    rows = sum(report.rows.values())
    return {
        "file": str(path.relative_to(ROOT)),
        "events": report.events,
        "rows": rows,
        "seconds": round(secs, 1),
        "rows_per_s": round(rows / secs),
        "events_per_s": round(report.events / secs),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--events", type=int, default=1_000_000, help="the recording for the end-to-end load")
    ap.add_argument("--memory-limit", default="2GB")
    ap.add_argument("--corpus", type=Path, default=None)
    args = ap.parse_args()
    if args.corpus is not None:
        global CORPUS
        CORPUS = args.corpus
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core, as the figures claim
    from bench_rules import calibration_ns

    base = demo_rows()
    doc: dict[str, Any] = {"bench": "hunt", "demo_rows": len(base), "calibration_ns": round(calibration_ns())}
    doc["recording"] = bench_recording(args.events)
    first = args.rows[0]
    doc[f"rows_{first}"] = bench_rows(first, base, args.memory_limit)
    print(json.dumps(doc[f"rows_{first}"]), file=sys.stderr)
    for n in args.rows[1:]:  # larger sizes: copies of the first database, made in SQL
        t0 = time.perf_counter()
        con = derive(WORK / f"hunt-{n // 1000}k.duckdb", WORK / f"hunt-{first // 1000}k.duckdb", n // first,
                     args.memory_limit)  # fmt: skip
        got = {"rows": n, "derived_from": first, "derive_seconds": round(time.perf_counter() - t0, 1)}
        if CORPUS.is_dir():
            got.update(bench_corpus(con))
        con.close()
        doc[f"rows_{n}"] = got
        print(json.dumps(got), file=sys.stderr)
    doc["calibration_ns_after"] = round(calibration_ns())
    json.dump(doc, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
