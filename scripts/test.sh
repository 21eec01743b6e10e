#!/usr/bin/env bash
# Run every check CI runs: lint, types, then the whole test suite against the local stack.
# Extra arguments go to pytest (e.g. scripts/test.sh -k palette -x).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
echo "== ruff"
.venv/bin/ruff check .
echo "== mypy"
.venv/bin/mypy
echo "== pytest"
.venv/bin/python -m pytest "$@"
