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
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e .
exec .venv/bin/etwsensor replay examples/demo.jsonl.zst "$@"
