#!/usr/bin/env python3
"""`etwsensor replay FILE [--max-cpu PCT]` on a simulated full core, for counting instructions per shed event.

    PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file=OUT python scripts/shed_cost.py FILE [PCT]

The CPU ceiling's clocks are replaced by a simulated machine where every reading of the clocks is half a
second of wall time and half a second of CPU (a full core): the ceiling's decisions, and so the events it
sheds, depend only on the events read, not on how slow the run is (under callgrind, ~50× slower). Prints
the summary's events and shed counts as JSON on stdout; the instructions of a run with and without PCT,
divided by the events shed, are what a shed event saves. ``--device-name`` is given, so the .etl is not
read ahead for its host name.
"""

from __future__ import annotations

import json
import sys
from itertools import count
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
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
