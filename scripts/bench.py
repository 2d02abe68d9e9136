#!/usr/bin/env python3
"""etwsensor benchmarks, one core. Figures go into docs/performance.md with the command that made them.

    python scripts/bench.py decode [--etl FILE] [--repeat N]
    python scripts/bench.py replay [--events N] [--enrich]
    python scripts/bench.py evtx [--rounds N] [--inputs K] [--sigma DIR]
    python scripts/bench.py stateful [--events N]
    python scripts/bench.py memory [--events N] [--every K]
    python scripts/bench.py etl [--etl FILE] [--inputs K] [--repeat N] [--dense [--copies N]]
    python scripts/bench.py stages [--events N] [--repeat N]
                                 [--zircolite DIR --zircolite-python PY]
    python scripts/bench.py normalize|rules|sinks|startup|live|hunt|compare|idle|catalogs [their options]
                                 (scripts/bench_<stage>.py)

decode: reading + decoding the real perfview .etl (tests/data/etl), records/s and decoded events/s,
beside dissect.etl on the same file in the same run when it is installed (`pip install -e .[bench]`;
AGPL, a comparison point only, never used by etwsensor itself).

replay: end to end (recording → decode → normalize → built-in rules → alerts → a file sink) on the demo
recording scaled up to >= 1M events (bench-data/, git-ignored; made once), events/s; and the alert
latency (event read from the source → alert written by the sink) p50/p99 in streaming mode.

stateful: one replay of the scaled demo with the built-in pack and two heavier stateful rules (every
image load and file row reach their state): events/s, peak RSS, and the state held at the end.
memory: one replay of the scaled demo (as `replay`, built-in pack, file sink) with the resident set
size sampled every ``--every`` events along the way (from /proc/self/statm): peak RSS, and whether it
grows once the normalizer's bounded caches are full (default 10M events; the recording is made once).
stages: where the replay benchmark's time goes, as CPU time of the cumulative stages over the same
scaled demo: reading (recording → RawEvents), + normalizing (built-in pack's row gates), + the rules
(+ alert building), + everything `replay` does (summary, file sink); each best of ``--repeat``.
etl: `.etl` replay end to end (``pipeline.replay`` of the real perfview trace, or ``--etl FILE``, given
``--inputs`` times): records read/s (every ETW record of the file) and decoded events/s, one core.
``--dense``: the same on a trace of only the perfview trace's decodable records, ``--copies`` times
(scripts/dense_etl.py; bench-data/, git-ignored, made once), with where the CPU time goes: reading,
+ decoding, + normalizing and the rules (the whole replay).
evtx: EVTX → rows → rules, end to end as `etwsensor replay FILE.evtx` runs it, events/s on one core, with
the built-in pack and (``--sigma DIR``: the SigmaHQ rules converted to KQL) with the Sigma corpus. The
EVTX is made from the chunks of the real Sysmon/Security test files (tests/data/windows) repeated
``--rounds`` times (bench-data/, git-ignored), and replayed as ``--inputs`` inputs. With
``--zircolite DIR`` (a checkout of wagga40/Zircolite and a Python with its requirements), Zircolite runs on
the same file in the same run with its ``rules/rules_windows_sysmon_high.json`` (SigmaHQ rules in SQL).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PERFVIEW = ROOT / "tests" / "data" / "etl" / "perfview_net.4.5.2.x64.etl"


def best_of(repeat: int, run: Callable[[], int], times: list[float] | None = None) -> tuple[float, int]:
    """Fastest wall time of `repeat` runs (the least disturbed by the machine) and the count it returned;
    every run's time is appended to ``times`` when given."""
    best, count = float("inf"), 0
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        count = run()
        took = time.perf_counter() - t0
        best = min(best, took)
        if times is not None:
            times.append(took)
    return best, count


def bench_decode(etl: Path, repeat: int) -> dict[str, object]:
    from etwsensor.sources.etl_source import EtlSource

    decoded = 0

    def ours() -> int:
        nonlocal decoded
        src = EtlSource(etl)
        decoded = sum(1 for _ in src.events())
        return src.stats.totals()["events"]

    secs, records = best_of(repeat, ours)
    result: dict[str, object] = {
        "file": str(etl.relative_to(ROOT) if etl.is_relative_to(ROOT) else etl),
        "records": records,
        "decoded_events": decoded,
        "etwsensor_seconds": round(secs, 3),
        "etwsensor_records_per_s": round(records / secs),
        "etwsensor_decoded_events_per_s": round(decoded / secs),
    }
    # The payload decoder alone, on the records of the providers we decode (no file reading).
    from etwsensor.decode.decoder import Decoder
    from etwsensor.decode.schema import load_providers
    from etwsensor.sources.etl import EtlReader

    known = {p.guid for p in load_providers()}
    recs = [r for r in EtlReader(etl).records() if r.guid in known] * 20

    def decode_only() -> int:
        decode = Decoder().decode
        return sum(1 for r in recs if decode(r) is not None)

    dsecs, n = best_of(repeat, decode_only)
    result["decoder_only_events"] = n
    result["decoder_only_events_per_s"] = round(n / dsecs)
    try:
        from dissect.etl import ETL  # type: ignore[import-not-found]
    except ImportError:
        result["dissect_etl"] = "not installed (pip install -e .[bench])"
        return result

    def theirs() -> int:
        with etl.open("rb") as fh:
            return sum(1 for _ in ETL(fh))

    dsecs, drecords = best_of(repeat, theirs)
    result.update(
        dissect_etl_records=drecords,
        dissect_etl_seconds=round(dsecs, 3),
        dissect_etl_records_per_s=round(drecords / dsecs),
    )
    return result


DEMO = ROOT / "examples" / "demo.jsonl.zst"


def scaled_demo(path: Path, events: int) -> dict[str, int]:
    """The demo recording repeated, each copy 10 minutes later (every datetime shifted), to >= events."""
    from collections import Counter
    from datetime import datetime, timedelta

    import msgspec

    from etwsensor.sources.recording import RecordingReader, RecordingWriter

    reader = RecordingReader(DEMO)
    demo = list(reader.events())
    mix = Counter(f"{e.provider}/{e.name}" for e in demo)
    copies = -(-events // len(demo))
    path.parent.mkdir(parents=True, exist_ok=True)
    with RecordingWriter(path, reader.header) as w:
        for k in range(copies):
            delta = timedelta(minutes=10 * k)
            for e in demo:
                fields = {n: v + delta if isinstance(v, datetime) else v for n, v in e.fields.items()}
                w.write(msgspec.structs.replace(e, ts=e.ts + delta, fields=fields))
    return {name: n * copies for name, n in mix.most_common()}


def enrich_disk(root: Path) -> Path:
    """A collected disk for the demo: every image and file path its rows name, each a copy of one of the
    real PE files in tests/data/pe (in turn), laid out as KAPE does (one folder per drive)."""
    import shutil

    from etwsensor.normalize import iter_rows

    if root.exists():
        return root
    pe_files = sorted((ROOT / "tests" / "data" / "pe").iterdir())
    paths: set[str] = set()
    for _, row in iter_rows(DEMO):
        for col in ("FolderPath", "InitiatingProcessFolderPath"):
            p = row.get(col)
            if isinstance(p, str) and len(p) > 3 and p[1:3] == ":\\":
                paths.add(p.lower())
    for i, p in enumerate(sorted(paths)):
        target = root / p[0].upper() / Path(*p[3:].split("\\"))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(pe_files[i % len(pe_files)], target)
    return root


def bench_replay(
    events: int, repeat: int, enrich: bool = False, rules: list[Path] | None = None
) -> dict[str, object]:
    from bench_rules import calibration_ns

    from etwsensor.normalize import Normalizer
    from etwsensor.pipeline import Detector, replay
    from etwsensor.rules import RuleSet
    from etwsensor.sinks import open_sink
    from etwsensor.sources import open_source

    path = ROOT / "bench-data" / f"replay-{events // 1000}k.jsonl.zst"
    mix = scaled_demo(path, events) if not path.exists() else None
    ruleset, _ = RuleSet.load(rules or [], builtin=True)  # the built-in pack, plus --rules
    alerts_file = ROOT / "bench-data" / "replay-alerts.ndjson"
    disk = str(enrich_disk(ROOT / "bench-data" / "enrich-disk")) if enrich else None
    alerts: list[int] = []
    calibration: list[float] = []

    def run() -> int:
        """Throughput: exactly what `etwsensor replay FILE --sink file:…` runs."""
        calibration.append(calibration_ns())  # how fast the machine is just now: it is shared
        sink = open_sink(f"file:{alerts_file}")
        summary = replay([path], Detector(ruleset, str(path)), [sink], files_from=disk)
        sink.close()
        alerts.append(sum(summary.alerts.values()))
        return summary.events

    times: list[float] = []
    secs, n = best_of(repeat, run, times)

    # Latency, in a separate pass: the same stages, with a stopwatch from each event leaving the source
    # to each of its alerts leaving the sink (the stopwatch itself would cost the throughput pass ~3 %).
    latencies: list[float] = []
    src = open_source(path)
    facts, worker = None, None
    if disk is not None:  # as live tracing does: a worker thread, rows wait at most 10 ms
        from etwsensor.enrich import CollectedFiles, Enricher, FactsWorker, parse_files_from

        worker = FactsWorker(CollectedFiles(parse_files_from(disk)))
        worker.start()
        facts = Enricher(worker, wait_seconds=0.010)
    normalizer = Normalizer(src.header, facts=facts)
    detector = Detector(ruleset, str(path))
    sink = open_sink(f"file:{alerts_file}")
    clock = None
    now = time.perf_counter
    for ev in src.events():
        t_read = now()
        clock = ev.ts if clock is None or ev.ts > clock else clock
        for table, row in normalizer.process(ev):
            for alert in detector.on_row(table, row, clock):
                sink.send(alert)
                latencies.append(now() - t_read)
    sink.close()
    if worker is not None:
        worker.close()
    lat = sorted(latencies)
    result: dict[str, object] = {
        "file": str(path.relative_to(ROOT)),
        "rules": len(ruleset.rules),
        "events": n,
        "seconds": round(secs, 2),
        "events_per_s": round(n / secs),
        "events_per_s_each_run": [round(n / t) for t in times],
        "calibration_ns_each_run": [round(c) for c in calibration],
        "alerts": alerts[-1],
        "alert_latency_ms_p50": round(lat[len(lat) // 2] * 1000, 3) if lat else None,
        "alert_latency_ms_p99": round(lat[int(len(lat) * 0.99)] * 1000, 3) if lat else None,
        "peak_rss_mb": peak_rss_mb(),  # the whole bench process: the runs and the latency pass
    }
    if facts is not None:
        result["enrich"] = {"throughput_pass": "replay --files-from (every row waits for its facts)",
                            "latency_pass": "live-like: worker thread, rows wait at most 10 ms",
                            "latency_pass_stats": facts.stats()}  # fmt: skip
    if mix is not None:
        result["event_mix"] = mix
    return result


def peak_rss_mb() -> int:
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def rss_mb() -> float:
    """The resident set size now (Linux: /proc/self/statm), in MB."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / (1 << 20)


def bench_memory(events: int, every: int) -> dict[str, object]:
    """One replay of the scaled demo (built-in pack, alerts to a file), the RSS sampled every ``every``
    events: it must stay flat once the bounded caches are full."""
    from bench_rules import calibration_ns

    from etwsensor.pipeline import Detector, replay
    from etwsensor.rules import RuleSet
    from etwsensor.sinks import open_sink

    path = ROOT / "bench-data" / f"replay-{events // 1000}k.jsonl.zst"
    if not path.exists():
        scaled_demo(path, events)
    gc.collect()
    ruleset, _ = RuleSet.load([], builtin=True)
    calibration = calibration_ns()
    samples: list[tuple[int, float]] = [(0, rss_mb())]
    peak_before = peak_rss_mb()
    next_sample = every

    def progress(n_events: int, _rows: int, _alerts: int) -> None:
        nonlocal next_sample
        if n_events >= next_sample:
            samples.append((n_events, rss_mb()))
            next_sample += every

    sink = open_sink(f"file:{ROOT / 'bench-data' / 'memory-alerts.ndjson'}")
    t0 = time.perf_counter()
    summary = replay([path], Detector(ruleset, str(path)), [sink], progress=progress)
    secs = time.perf_counter() - t0
    sink.close()
    samples.append((summary.events, rss_mb()))
    later = [mb for n, mb in samples if n >= min(2_000_000, summary.events // 2)]
    return {
        "file": str(path.relative_to(ROOT)),
        "events": summary.events,
        "rows": summary.rows.total(),
        "alerts": sum(summary.alerts.values()),
        "seconds": round(secs, 1),
        "events_per_s": round(summary.events / secs),
        "calibration_ns": round(calibration),
        "peak_rss_mb_before_replay": peak_before,
        "peak_rss_mb": peak_rss_mb(),
        "rss_mb_from_2m_events_min_max": [round(min(later), 1), round(max(later), 1)] if later else None,
        "rss_mb_samples": [[n, round(mb, 1)] for n, mb in samples],
    }


def bench_stages(events: int, repeat: int) -> dict[str, object]:
    """CPU seconds of reading, reading + normalizing, + rules, and the whole replay (best of
    ``repeat``, interleaved), and each stage's share of the whole."""
    from bench_rules import calibration_ns

    from etwsensor.normalize import Normalizer
    from etwsensor.pipeline import Detector, replay
    from etwsensor.rules import RuleSet
    from etwsensor.sinks import open_sink
    from etwsensor.sources import open_source

    path = ROOT / "bench-data" / f"replay-{events // 1000}k.jsonl.zst"
    if not path.exists():
        scaled_demo(path, events)
    ruleset, _ = RuleSet.load([], builtin=True)
    gates = ruleset.row_gates()

    def read() -> None:
        for _ in open_source(path).events():
            pass

    def normalize() -> None:
        src = open_source(path)
        process = Normalizer(src.header, gates=gates).process
        for ev in src.events():
            process(ev)

    def rules() -> None:
        src = open_source(path)
        process = Normalizer(src.header, gates=gates).process
        on_row = Detector(ruleset, str(path)).on_row
        for ev in src.events():
            for table, row in process(ev):
                on_row(table, row, ev.ts)

    def whole() -> None:
        sink = open_sink(f"file:{ROOT / 'bench-data' / 'stages-alerts.ndjson'}")
        replay([path], Detector(ruleset, str(path)), [sink])
        sink.close()

    stages = {"read": read, "normalize": normalize, "rules": rules, "replay": whole}
    best = dict.fromkeys(stages, float("inf"))
    calibration: list[float] = []
    for _ in range(repeat):
        calibration.append(calibration_ns())
        for name, run in stages.items():
            gc.collect()
            t0 = time.process_time()
            run()
            best[name] = min(best[name], time.process_time() - t0)
    n = sum(1 for _ in open_source(path).events())
    total = best["replay"]
    shares = {"read": best["read"], "normalize": best["normalize"] - best["read"],
              "rules_and_alerts": best["rules"] - best["normalize"],
              "summary_sink_and_glue": best["replay"] - best["rules"]}  # fmt: skip
    return {
        "file": str(path.relative_to(ROOT)),
        "events": n,
        "cpu_seconds_cumulative": {k: round(v, 3) for k, v in best.items()},
        "us_per_event": {k: round(v / n * 1e6, 3) for k, v in shares.items()},
        "share_percent": {k: round(100 * v / total, 1) for k, v in shares.items()},
        "events_per_s_cpu": round(n / total),
        "calibration_ns_each_run": [round(c) for c in calibration],
    }


def bench_etl(etl: Path, inputs: int, repeat: int) -> dict[str, object]:
    """`.etl` replay end to end (what `etwsensor replay FILE.etl` runs, alerts to no sink): every record
    of the file is read and its kind counted, those of the providers etwsensor knows are decoded."""
    from bench_rules import calibration_ns

    from etwsensor.pipeline import Detector, replay
    from etwsensor.rules import RuleSet
    from etwsensor.sources.etl import EtlReader

    reader = EtlReader(etl)
    records = sum(1 for _ in reader.records(ordered=False))
    ruleset, _ = RuleSet.load([], builtin=True)
    calibration: list[float] = []
    alerts: list[int] = []

    def run() -> int:
        calibration.append(calibration_ns())
        summary = replay([etl] * inputs, Detector(ruleset, str(etl)), [])
        alerts.append(sum(summary.alerts.values()))
        return summary.events

    times: list[float] = []
    secs, decoded = best_of(repeat, run, times)
    return {
        "file": str(etl.relative_to(ROOT) if etl.is_relative_to(ROOT) else etl),
        "inputs": inputs,
        "records": records * inputs,
        "decoded_events": decoded,
        "seconds": round(secs, 3),
        "records_per_s": round(records * inputs / secs),
        "decoded_events_per_s": round(decoded / secs),
        "records_per_s_each_run": [round(records * inputs / t) for t in times],
        "calibration_ns_each_run": [round(c) for c in calibration],
        "alerts": alerts[-1],
        "peak_rss_mb": peak_rss_mb(),
    }


def etl_stages(etl: Path, repeat: int) -> dict[str, object]:
    """CPU seconds of reading the decodable records, + decoding them, and the whole replay (best of
    ``repeat``, interleaved), and each stage's share."""
    from etwsensor.pipeline import Detector, replay
    from etwsensor.rules import RuleSet
    from etwsensor.sources.etl import EtlReader
    from etwsensor.sources.etl_source import EtlSource

    ruleset, _ = RuleSet.load([], builtin=True)
    known = EtlSource(etl).decoder.known_guids

    def read() -> None:
        for _ in EtlReader(etl).records(only=known):
            pass

    def decode() -> None:
        for _ in EtlSource(etl).events():
            pass

    def whole() -> None:
        replay([etl], Detector(ruleset, str(etl)), [])

    stages = {"read": read, "decode": decode, "replay": whole}
    best = dict.fromkeys(stages, float("inf"))
    for _ in range(repeat):
        for name, run in stages.items():
            gc.collect()
            t0 = time.process_time()
            run()
            best[name] = min(best[name], time.process_time() - t0)
    shares = {"read": best["read"], "decode": best["decode"] - best["read"],
              "normalize_rules_and_glue": best["replay"] - best["decode"]}  # fmt: skip
    return {
        "cpu_seconds_cumulative": {k: round(v, 3) for k, v in best.items()},
        "share_percent": {k: round(100 * v / best["replay"], 1) for k, v in shares.items()},
    }


# Stateful rules heavier than the built-in pack's: every image load and every file row reach the state.
STATEFUL_RULES = {
    "loads_per_process.kql": "DeviceImageLoadEvents\n"
    "| summarize loads = count(), dlls = dcount(FileName), some = make_set(FileName, 16)\n"
    "    by DeviceId, InitiatingProcessId, InitiatingProcessFileName, bin(Timestamp, 5m)\n"
    "| where dlls >= 40\n",
    "process_then_file.kql": "DeviceProcessEvents\n"
    "| join kind=inner (DeviceFileEvents | project DeviceId, InitiatingProcessId, FilePath = FolderPath,\n"
    "    WrittenAt = Timestamp) on DeviceId, $left.ProcessId == $right.InitiatingProcessId\n"
    "| where WrittenAt between (Timestamp .. (Timestamp + 2m))\n",
}


def bench_stateful(events: int) -> dict[str, object]:
    """One replay of the scaled demo with the built-in pack (two stateful rules) and two heavier stateful
    rules: events/s, peak RSS, and what the stateful rules hold at the end of the input (before the
    flush), which must not grow with the number of events."""
    import resource
    import tempfile

    from bench_rules import calibration_ns

    from etwsensor.pipeline import Detector, replay
    from etwsensor.rules import RuleSet

    path = ROOT / "bench-data" / f"replay-{events // 1000}k.jsonl.zst"
    if not path.exists():
        scaled_demo(path, events)
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in STATEFUL_RULES.items():
            (Path(tmp) / name).write_text(text)
        ruleset, failures = RuleSet.load([Path(tmp)], builtin=True)
    assert not failures, failures
    calibration = calibration_ns()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    summary = replay([path], Detector(ruleset, str(path)), [])
    secs = time.perf_counter() - t0
    return {
        "file": str(path.relative_to(ROOT)),
        "events": summary.events,
        "rows": summary.rows.total(),
        "seconds": round(secs, 2),
        "events_per_s": round(summary.events / secs),
        "calibration_ns": round(calibration),
        "peak_rss_mb_before_replay": round(rss_before / 1024),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "alerts": sum(summary.alerts.values()),
        "stateful_rules_at_end": summary.state,
    }


WINDOWS_DATA = ROOT / "tests" / "data" / "windows"


def bench_evtx_file(path: Path, rounds: int) -> dict[str, int]:
    """An EVTX of real records: the chunks of the test files (the DNS file's last chunk only, so DNS
    queries do not drown the rest), ``rounds`` times. EVTX chunks are self-contained; readers walk
    them to the end of the file."""
    import gzip
    from collections import Counter

    chunks: list[bytes] = []
    header = b""
    for f in sorted(WINDOWS_DATA.glob("*.evtx.gz")):
        data = gzip.decompress(f.read_bytes())
        header = header or data[:4096]
        own = [
            data[o : o + 65536] for o in range(4096, len(data), 65536) if data[o : o + 8] == b"ElfChnk\x00"
        ]
        chunks.extend(own[-1:] if "dns" in f.name else own)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        fh.write(header)
        for _ in range(rounds):
            for chunk in chunks:
                fh.write(chunk)
    from etwsensor.sources.evtx import EvtxSource

    src = EvtxSource(path)
    for _ in src.events():
        pass
    mix = Counter[str]()
    for c in src.stats.by_event.values():  # every record, also those no table takes (counted, not built)
        mix[f"{c.provider.removeprefix('Microsoft-Windows-')} {c.id}"] += c.count
    return dict(mix.most_common())


def bench_evtx(
    rounds: int, inputs: int, repeat: int, sigma: Path | None, zircolite: Path | None, zpython: str
) -> dict[str, object]:
    from bench_rules import calibration_ns

    from etwsensor.pipeline import Detector, replay
    from etwsensor.rules import RuleSet

    path = ROOT / "bench-data" / f"sysmon-{rounds}.evtx"
    mix = bench_evtx_file(path, rounds)
    per_file = sum(mix.values())
    paths = [path] * inputs
    result: dict[str, object] = {"file": str(path.relative_to(ROOT)), "events_per_file": per_file,
                                 "inputs": inputs, "event_mix_per_file": mix}  # fmt: skip
    packs: list[tuple[str, RuleSet]] = [("builtin", RuleSet.load([], builtin=True)[0])]
    if sigma is not None and sigma.is_dir():
        ruleset, failures = RuleSet.load([sigma], builtin=False)
        result["sigma_rules"], result["sigma_rules_failed"] = len(ruleset.rules), len(failures)
        packs.append(("sigma", ruleset))
    for name, ruleset in packs:
        calibration: list[float] = []
        alerts: list[int] = []

        def run(
            ruleset: RuleSet = ruleset, calibration: list[float] = calibration, alerts: list[int] = alerts
        ) -> int:
            calibration.append(calibration_ns())
            summary = replay(paths, Detector(ruleset, str(path)), [])
            alerts.append(sum(summary.alerts.values()))
            return summary.events

        times: list[float] = []
        secs, n = best_of(repeat, run, times)
        result[name] = {
            "events": n,
            "seconds": round(secs, 2),
            "events_per_s": round(n / secs),
            "events_per_s_each_run": [round(n / t) for t in times],
            "calibration_ns_each_run": [round(c) for c in calibration],
            "alerts": alerts[-1],
        }
    if zircolite is not None:
        result["zircolite"] = bench_zircolite(zircolite, zpython, path, per_file, repeat)
    return result


def bench_zircolite(checkout: Path, python: str, path: Path, events: int, repeat: int) -> dict[str, object]:
    """Zircolite on the same EVTX (one input: it loads every file into one SQLite database anyway)."""
    import subprocess
    import tempfile

    ruleset = checkout / "rules" / "rules_windows_sysmon_high.json"
    times: list[float] = []
    out = ""
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [python, "zircolite.py", "--evtx", str(path), "--ruleset", str(ruleset), "-q", "--nolog",
                   "-o", str(Path(tmp) / "detected.json")]  # fmt: skip
            t0 = time.perf_counter()
            done = subprocess.run(cmd, cwd=checkout, capture_output=True, text=True, check=False)
            times.append(time.perf_counter() - t0)
            out = (done.stdout + done.stderr)[-2000:]
            if done.returncode != 0:
                return {"error": f"exit {done.returncode}", "output": out}
    import re

    best = min(times)
    own = re.search(r"Duration\s+([0-9.]+)s", out)  # its own timing, without interpreter start-up
    return {"ruleset": str(ruleset.relative_to(checkout)), "events": events, "seconds": round(best, 2),
            "events_per_s": round(events / best), "events_per_s_each_run": [round(events / t) for t in times],
            "own_duration_s": float(own.group(1)) if own else None,
            "events_per_s_by_own_duration": round(events / float(own.group(1))) if own else None,
            "output_tail": out[-700:]}  # fmt: skip


# Stage benchmarks that live in their own scripts: `bench.py normalize …` runs scripts/bench_normalize.py ….
STAGE_SCRIPTS = {
    "normalize": "bench_normalize.py",
    "rules": "bench_rules.py",
    "sinks": "bench_sinks.py",
    "startup": "bench_startup.py",
    "live": "bench_live.py",
    "hunt": "bench_hunt.py",
    "compare": "bench_compare.py",
    "idle": "bench_idle.py",
    "catalogs": "bench_catalogs.py",
}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in STAGE_SCRIPTS:
        import runpy

        script = Path(__file__).with_name(STAGE_SCRIPTS[sys.argv[1]])
        sys.argv = [str(script), *sys.argv[2:]]
        runpy.run_path(str(script), run_name="__main__")
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "what", choices=["decode", "replay", "evtx", "stateful", "memory", "etl", "stages"], help="what"
    )
    ap.add_argument("--every", type=int, default=500_000, help="memory: events between two RSS samples")
    ap.add_argument("--rounds", type=int, default=100, help="evtx: copies of the test chunks in the file")
    ap.add_argument("--inputs", type=int, default=None, help="evtx (10), etl (1): times the file is given")
    ap.add_argument(
        "--sigma", type=Path, default=None, help="evtx: SigmaHQ rules converted to KQL (a folder)"
    )
    ap.add_argument("--zircolite", type=Path, default=None, help="evtx: a Zircolite checkout to compare with")
    ap.add_argument("--zircolite-python", default=sys.executable, help="evtx: a Python with its requirements")
    ap.add_argument("--etl", type=Path, default=PERFVIEW)
    ap.add_argument("--dense", action="store_true", help="etl: only the decodable records of --etl, repeated")
    ap.add_argument(
        "--copies", type=int, default=28, help="etl --dense: times the decodable records are written"
    )
    ap.add_argument(
        "--events", type=int, default=None, help="replay, stateful (1M), memory (10M): demo events"
    )
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--enrich", action="store_true", help="replay: with image facts from a collected disk")
    ap.add_argument("--rules", type=Path, action="append", help="replay: rules loaded with the built-in pack")
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core, as the figures claim
    machine = {"python": platform.python_version(), "cpu": platform.processor() or platform.machine()}
    if args.what == "evtx":
        result = bench_evtx(
            args.rounds, args.inputs or 10, args.repeat, args.sigma, args.zircolite, args.zircolite_python
        )
    elif args.what == "decode":
        result = bench_decode(args.etl, args.repeat)
    elif args.what == "stateful":
        result = bench_stateful(args.events or 1_000_000)
    elif args.what == "memory":
        result = bench_memory(args.events or 10_000_000, args.every)
    elif args.what == "stages":
        result = bench_stages(args.events or 200_000, args.repeat)
    elif args.what == "etl" and args.dense:
        from dense_etl import write_dense_etl

        dense = ROOT / "bench-data" / f"{args.etl.stem}.dense-x{args.copies}.etl"
        made = write_dense_etl(args.etl, dense, args.copies) if not dense.exists() else None
        result = bench_etl(dense, args.inputs or 1, args.repeat)
        result["stages"] = etl_stages(dense, args.repeat)
        if made is not None:
            result["made"] = made
    elif args.what == "etl":
        result = bench_etl(args.etl, args.inputs or 1, args.repeat)
    else:
        result = bench_replay(args.events or 1_000_000, args.repeat, args.enrich, args.rules)
    json.dump({"bench": args.what, "machine": machine, **result}, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
