#!/usr/bin/env bash
# Set up .venv, install etwsensor with its dev extras, then lint (ruff), type-check (mypy) and test (pytest).
# Works from a clean clone: needs only python3 (>= 3.11) with venv. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
echo "== ruff" >&2
.venv/bin/ruff check .
echo "== mypy" >&2
.venv/bin/mypy
echo "== pytest" >&2
.venv/bin/pytest -q "$@"
