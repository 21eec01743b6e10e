#!/usr/bin/env bash
# The demo: start the local stack and the app, submit the sample requests in examples/,
# print the events as they arrive and the resulting Palette state.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/python -m devstack demo "$@"
