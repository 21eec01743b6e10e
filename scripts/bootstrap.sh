#!/usr/bin/env bash
# Set up a fresh machine for development: a virtual environment with the pinned requirements,
# and the pinned Azurite from npm. Safe to run again: it only redoes what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
  echo "warning: $("$python" --version 2>&1) found; the app targets Python 3.11" >&2
fi
if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  "$python" -m venv .venv
fi
stamp=.venv/.requirements.sha256
want=$(cat requirements.txt requirements-dev.txt | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "== installing Python requirements"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
  echo "$want" > "$stamp"
fi
echo "== checking Azurite (npm, pinned)"
.venv/bin/python -c 'from pathlib import Path; from devstack.azurite import install_azurite; install_azurite(Path(".devstack/tools"))'
