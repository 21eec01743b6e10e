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
# checkov (the Bicep scan in tests/test_checkov.py) pins an older pycep-parser than the tests use,
# so it gets an environment of its own, from its own pinned list.
checkov_env=.devstack/tools/checkov
checkov_stamp=$checkov_env/.requirements.sha256
checkov_want=$(sha256sum infra/checkov-requirements.txt | cut -d' ' -f1)
if [ ! -x "$checkov_env/bin/checkov" ] || [ ! -f "$checkov_stamp" ] || [ "$(cat "$checkov_stamp")" != "$checkov_want" ]; then
  echo "== installing checkov (pinned, in $checkov_env)"
  "$python" -m venv "$checkov_env"
  "$checkov_env/bin/python" -m pip install --quiet --disable-pip-version-check -r infra/checkov-requirements.txt
  echo "$checkov_want" > "$checkov_stamp"
fi
echo "== checking Azurite (npm, pinned)"
.venv/bin/python -c 'from pathlib import Path; from devstack.azurite import install_azurite; install_azurite(Path(".devstack/tools"))'
