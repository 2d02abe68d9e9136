#!/usr/bin/env bash
# Install etwsensor into .venv and replay the bundled demo recording (examples/demo.jsonl.zst) with the
# built-in rules: JSON alerts on stdout, the summary on stderr. Needs only python3 (>= 3.11) with venv.
# Extra arguments go to `etwsensor replay` (e.g. --json-summary, --sink file:alerts.ndjson).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# Reinstall only when the project's metadata changed since the last install (an editable install sees
# code changes by itself).
stamp=.venv/.etwsensor-demo-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || ! .venv/bin/python -c "import etwsensor" 2>/dev/null; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e .
  touch "$stamp"
fi
exec .venv/bin/etwsensor replay examples/demo.jsonl.zst "$@"
