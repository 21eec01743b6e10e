#!/usr/bin/env bash
# Run every check CI runs: lint, types, then the whole test suite against the local stack.
# Extra arguments go to pytest (e.g. scripts/test.sh -k palette -x).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh --with-checkov   # checkov too: tests/test_checkov.py runs it
echo "== ruff"
.venv/bin/ruff check .
echo "== mypy"
.venv/bin/mypy
echo "== pytest"
# Two workers, each with its own local stack on its own loopback ports; a test file stays on one
# worker (its module fixtures, such as a hosted app, are built once). Most tests wait on I/O, so
# two workers take about half the time on two cores.
.venv/bin/python -m pytest -n 2 --dist loadfile "$@"
