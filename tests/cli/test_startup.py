"""Start-up: `etwsensor --version` and `--help` load none of the heavy modules, and every lazily loaded
subcommand still resolves (its module is imported when it runs). Speed itself is measured by
`python scripts/bench.py startup`, not here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import zstandard

from etwsensor.cli import Commands

HEAVY = ("duckdb_kql", "duckdb", "structlog", "rich", "pydantic", "httpx", "msgspec", "etwsensor.rules",
         "etwsensor.sources", "etwsensor.normalize", "etwsensor.sinks", "etwsensor.hunt")  # fmt: skip


def modules_after(*argv: str, env: dict[str, str] | None = None) -> set[str]:
    code = (
        "import sys, json\n"
        "from etwsensor.cli import main\n"
        f"sys.argv = ['etwsensor', *{list(argv)!r}]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "sys.stdout.write('\\n' + json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    ).stdout
    return set(json.loads(out.strip().splitlines()[-1]))


@pytest.mark.parametrize("argv", [("--version",), ("--help",)])
def test_version_and_help_import_nothing_heavy(argv: tuple[str, ...]) -> None:
    loaded = modules_after(*argv)
    assert not sorted(m for m in loaded if m.startswith(HEAVY)), "heavy modules at start-up"


def test_a_lazy_command_imports_its_module_when_it_runs() -> None:
    loaded = modules_after("rules", "list")
    assert "etwsensor.rules.cli" in loaded and "etwsensor.hunt.cli" not in loaded


@pytest.mark.parametrize("name", sorted(Commands.lazy))
def test_every_lazy_command_resolves_and_has_help(name: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "etwsensor", name, "--help"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert f"etwsensor {name} [OPTIONS]" in proc.stdout and "╭" not in proc.stdout  # plain text like the rest


def test_a_warm_replay_does_not_import_the_kql_parser(tmp_path: Path) -> None:
    """Every rule's IR comes from the cache: duckdb-kql's parser (ANTLR) is not loaded, only its IR;
    nothing logs and no network sink is opened, so neither structlog nor httpx is loaded; the rule and
    provider files were read before, so PyYAML is not loaded either."""
    demo = Path(__file__).resolve().parents[2] / "examples" / "demo.jsonl.zst"
    lines = zstandard.ZstdDecompressor().stream_reader(demo.open("rb")).read().split(b"\n")
    six = tmp_path / "six.jsonl"
    six.write_bytes(b"\n".join(lines[:7]) + b"\n")  # the header and six events
    env = {**os.environ, "ETWSENSOR_CACHE_DIR": str(tmp_path / "cache")}
    cold = modules_after("replay", str(six), env=env)
    assert "antlr4" in cold and "duckdb_kql" in cold  # nothing cached yet: the rules were parsed
    warm = modules_after("replay", str(six), env=env)
    assert "etwsensor.rules.ruleset" in warm and "duckdb_kql.ir" in warm
    assert not sorted(
        m for m in warm if m.startswith("antlr4") or m == "duckdb_kql" or m.startswith("duckdb_kql._")
    )
    assert not sorted(m for m in warm if m.startswith(("structlog", "httpx", "rich", "yaml")))


@pytest.mark.parametrize("verbose", [False, True])
def test_logging_configured_before_structlog_is_loaded_applies_on_the_first_line(verbose: bool) -> None:
    code = (
        "import sys\n"
        "from etwsensor.logging import configure, get_logger\n"
        "from etwsensor.redact import register\n"
        "register('hunter2')\n"
        "log = get_logger('etwsensor.test')\n"
        f"configure(verbose={verbose})\n"
        "assert 'structlog' not in sys.modules\n"
        "log.debug('quiet unless verbose', n=1)\n"
        "log.warning('token=hunter2 seen', n=2)\n"
        "assert 'structlog' in sys.modules\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    lines = [json.loads(line) for line in proc.stderr.splitlines()]  # JSON lines: stderr is not a terminal
    assert [line["event"].split()[0] for line in lines] == (
        ["quiet", "token=***"] if verbose else ["token=***"]
    )
    assert lines[-1]["level"] == "warning" and lines[-1]["n"] == 2 and "timestamp" in lines[-1]
