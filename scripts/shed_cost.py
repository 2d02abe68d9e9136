#!/usr/bin/env python3
"""`etwsensor replay FILE [--max-cpu PCT]` on a simulated full core, for counting instructions per shed event.

    PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file=OUT python scripts/shed_cost.py FILE [PCT]
    PYTHONHASHSEED=0 valgrind ... python scripts/shed_cost.py FILE.etl --part PART

The CPU ceiling's clocks are replaced by a simulated machine where every reading of the clocks is half a
second of wall time and half a second of CPU (a full core): the ceiling's decisions, and so the events it
sheds, depend only on the events read, not on how slow the run is (under callgrind, ~50x slower). Prints
the summary's events and shed counts as JSON on stdout. ``--device-name`` is given, so the .etl is not read
ahead for its host name. Two files of N and M copies (scripts/dense_etl.py) take the fixed costs (start-up,
rules, the ceiling's set-up) out: instructions(M) - instructions(N) over the events (and events shed)
between them.

``--part`` (none, identify, decode-shed or decode-others): the parts apart, on an .etl file's records of
known providers (read into a list and decoded once first, so every run has the same fixed cost): nothing
more, ``Decoder.identify`` of every record, ``decode`` of the records of kinds that may be shed, or of the
others. A run's instructions less those of ``none``, over its records, is that part's cost per record.
"""

from __future__ import annotations

import json
import sys
from itertools import count
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parts(path: Path, part: str) -> None:
    from etwsensor.budget import SHED_KINDS
    from etwsensor.decode import Decoder
    from etwsensor.sources.etl import EtlReader

    decoder = Decoder()
    records = list(EtlReader(path).records(only=decoder.known_guids))
    kinds = {(p, e) for k in SHED_KINDS for p, events in k.events.items() for e in events}
    shed = [r for r in records if decoder.identify(r) in kinds]
    others = [r for r in records if decoder.identify(r) not in kinds]
    for r in records:
        decoder.decode(r)  # every plan compiled
    if part == "identify":
        for r in records:
            decoder.identify(r)
    elif part in ("decode-shed", "decode-others"):
        for r in shed if part == "decode-shed" else others:
            decoder.decode(r)
    elif part != "none":
        raise SystemExit(f"unknown part {part!r}")
    doc = {"part": part, "records": len(records), "shed_kinds": len(shed), "others": len(others)}
    json.dump(doc, sys.stdout)
    sys.stdout.write("\n")


def main() -> None:
    if sys.argv[2:3] == ["--part"]:
        parts(Path(sys.argv[1]), sys.argv[3])
        return
    from typer.testing import CliRunner

    from etwsensor import budget
    from etwsensor.cli import app

    path = Path(sys.argv[1])
    ceiling = sys.argv[2:3]
    wall, cpu = count(), count()
    budget.SYSTEM_CLOCKS = budget.Clocks(lambda: next(wall) / 2, lambda: next(cpu) / 2, lambda s: None)
    args = ["replay", str(path), "--json-summary", "--sink", "file:/dev/null", "--device-name", "bench"]
    r = CliRunner().invoke(app, args + (["--max-cpu", ceiling[0]] if ceiling else []))
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    summary = json.loads(r.stderr.strip().splitlines()[-1])
    shed = summary["shed"]
    out = {"events": summary["events"], "rows": sum(summary["rows"].values()), "alerts": summary["alerts"],
           "shed": shed.get("shed", {}), "shed_total": shed.get("shed_total", 0)}  # fmt: skip
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
