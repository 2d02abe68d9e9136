#!/usr/bin/env python3
"""Mutation fuzzing of the four input kinds (.etl, recording .jsonl, recording .jsonl.zst, row file
.ndjson) through the replay pipeline: no input may raise; damage must be reported, never a traceback.

    python scripts/fuzz_inputs.py --cases 2000 --seed 7      # the long run (CI runs a few hundred)

The seeds are the project's own data: the demo recording, a row file written here, and the first
buffers of the perfview .etl in tests/data. tests/sources/test_fuzz_inputs.py imports ``cases`` and
``run_case`` from here with a small count.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("etl", "jsonl", "jsonl.zst", "ndjson")
_ETL = ROOT / "tests" / "data" / "etl" / "perfview_net.4.5.2.x64.etl"
_DEMO = ROOT / "examples" / "demo.jsonl.zst"


def _demo_lines(count: int = 120) -> list[bytes]:
    import zstandard

    with _DEMO.open("rb") as fh:
        reader = io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(fh))  # type: ignore[arg-type]
        return [reader.readline() for _ in range(count)]


def _row_lines() -> list[bytes]:
    rows = [
        {"$table": "DeviceProcessEvents", "Timestamp": "2026-11-20T09:00:00Z", "DeviceName": "ws1",
         "ActionType": "ProcessCreated", "FileName": "powershell.exe", "ProcessId": 42,
         "ProcessCommandLine": "powershell -c GetAsyncKeyState", "FolderPath": "C:\\x\\p.exe"},
        {"$table": "DeviceFileEvents", "Timestamp": "2026-11-20T09:00:01Z", "ActionType": "FileCreated",
         "FileName": "keys.log", "FolderPath": "C:\\Users\\bob\\keys.log", "FileSize": 12},
        {"$table": "DeviceRegistryEvents", "Timestamp": "2026-11-20T09:00:02Z",
         "ActionType": "RegistryValueSet", "RegistryKey": "HKEY_CURRENT_USER\\Software\\Run",
         "RegistryValueData": "x"},
    ]  # fmt: skip
    return [json.dumps(r).encode() + b"\n" for r in rows]


def seeds() -> dict[str, bytes]:
    """One small valid input per kind."""
    import zstandard

    demo = b"".join(_demo_lines())
    etl = _ETL.read_bytes()[: 3 * 65536] if _ETL.exists() else b""
    return {
        "etl": etl,
        "jsonl": demo,
        "jsonl.zst": zstandard.ZstdCompressor().compress(demo[: len(demo) // 2])
        + zstandard.ZstdCompressor().compress(demo[len(demo) // 2 :]),
        "ndjson": b"".join(_row_lines() * 3),
    }


_NASTY = [
    b"[" * 5000, b"{\"a\":" * 3000, b"\\ud800", b"\"\\udfff\"", b"\xff\xfe", b"\x00" * 64, b"1e400",
    b"-1", b"null", b"{}", b"[]", b"\"provider\": {\"x\": 1}", b"\"provider\": [1]", b"\n\n\n",
    b"\x28\xb5\x2f\xfd", b"\xff" * 16, b"9" * 400,
]  # fmt: skip


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One to four random mutations: flips, cuts, splices of nasty tokens, duplicated or dropped spans."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if not buf:
            buf += rng.choice(_NASTY)
            continue
        op = rng.randrange(6)
        at = rng.randrange(len(buf))
        if op == 0:  # flip bytes
            for _ in range(rng.randint(1, 8)):
                buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
        elif op == 1:  # cut short
            del buf[at:]
        elif op == 2:  # splice a nasty token
            buf[at:at] = rng.choice(_NASTY)
        elif op == 3:  # drop a span
            del buf[at : at + rng.randint(1, 256)]
        elif op == 4:  # duplicate a span
            end = min(len(buf), at + rng.randint(1, 512))
            buf[at:at] = buf[at:end]
        else:  # overwrite with random bytes
            for i in range(at, min(len(buf), at + rng.randint(1, 32))):
                buf[i] = rng.randrange(256)
    return bytes(buf)


def cases(count: int, seed: int) -> Iterator[tuple[str, bytes]]:
    """``count`` mutated inputs, round robin over the kinds, reproducible from ``seed``."""
    rng = random.Random(seed)
    base = seeds()
    kinds = [k for k in KINDS if base[k]]
    for n in range(count):
        kind = kinds[n % len(kinds)]
        yield kind, mutate(base[kind], rng)


def run_case(kind: str, data: bytes, directory: Path, ruleset: object) -> None:
    """Replay one input through the whole pipeline; raises only if etwsensor lets an error escape."""
    from etwsensor.pipeline import Detector, replay

    path = directory / f"case.{kind}"
    path.write_bytes(data)
    collected: list[dict[str, object]] = []

    class Collect:
        def send(self, alert: dict[str, object]) -> None:
            collected.append(alert)

    detector = Detector(ruleset, str(path))  # type: ignore[arg-type]
    replay([path], detector, [Collect()])
    for alert in collected:  # every alert must encode: the sinks would choke on it otherwise
        from etwsensor.sinks.base import alert_json

        alert_json(alert)


def main() -> int:
    import tempfile

    from etwsensor.rules import RuleSet

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", type=Path, help="Write each failing input into this folder.")
    args = ap.parse_args()
    ruleset, _ = RuleSet.load([], builtin=True)
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        for n, (kind, data) in enumerate(cases(args.cases, args.seed)):
            try:
                run_case(kind, data, Path(tmp), ruleset)
            except Exception:
                failures += 1
                print(f"case {n} ({kind}): {traceback.format_exc(limit=3)}", file=sys.stderr)
                if args.keep:
                    args.keep.mkdir(parents=True, exist_ok=True)
                    (args.keep / f"case{n}.{kind}").write_bytes(data)
    print(f"{args.cases} cases, {failures} failures (seed {args.seed})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
