#!/usr/bin/env bash
# Set up a fresh machine for development: a virtual environment with the pinned requirements,
# Microsoft's Python worker for the local host, and the pinned Azurite from npm; with --with-checkov
# also checkov, which only the tests use (scripts/test.sh passes it; scripts/demo.sh does not).
# Safe to run again: it only redoes what changed, and says what it installs and how long each part
# took. From nothing on a fresh 2-core machine: about 55 s (the demo's set-up), and about 90 s with
# --with-checkov (the tests' set-up).
#
#   scripts/bootstrap.sh [--with-checkov]
set -euo pipefail
cd "$(dirname "$0")/.."

with_checkov=false
for arg in "$@"; do
  case "$arg" in
    --with-checkov) with_checkov=true ;;
    -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument $arg (see --help)" >&2; exit 2 ;;
  esac
done

began=$SECONDS
did=""
took() { echo "   done in $((SECONDS - $1)) s"; }

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
  echo "warning: $("$python" --version 2>&1) found; the app targets Python 3.11" >&2
fi
if [ ! -x .venv/bin/python ]; then
  if [ "$with_checkov" = true ]; then expect=90; else expect=55; fi
  echo "== first set-up: about $expect s on a fresh 2-core machine"
  echo "== creating .venv with $("$python" --version 2>&1)"
  step=$SECONDS
  "$python" -m venv .venv
  took "$step"
  did=1
fi
stamp=.venv/.requirements.sha256
want=$(cat requirements.txt requirements-dev.txt | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  pinned=$(cat requirements.txt requirements-dev.txt | grep -cE '^[A-Za-z0-9._-]+==')
  echo "== installing Python requirements into .venv: $pinned pinned packages (requirements.txt, deployed;"
  echo "   requirements-dev.txt: the stand-ins, tests, linters) and what they depend on"
  step=$SECONDS
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
  echo "$want" > "$stamp"
  took "$step"
  did=1
fi
# checkov (the Bicep scan in tests/test_checkov.py) pins an older pycep-parser than the tests use,
# so it gets an environment of its own, from its own pinned list; only the tests need it.
checkov_env=.devstack/tools/checkov
checkov_stamp=$checkov_env/.requirements.sha256
checkov_want=$(sha256sum infra/checkov-requirements.txt | cut -d' ' -f1)
if [ "$with_checkov" = true ] && { [ ! -x "$checkov_env/bin/checkov" ] || [ ! -f "$checkov_stamp" ] \
    || [ "$(cat "$checkov_stamp")" != "$checkov_want" ]; }; then
  echo "== installing checkov (infra/checkov-requirements.txt, pinned) into $checkov_env"
  step=$SECONDS
  "$python" -m venv "$checkov_env"
  "$checkov_env/bin/python" -m pip install --quiet --disable-pip-version-check -r infra/checkov-requirements.txt
  echo "$checkov_want" > "$checkov_stamp"
  took "$step"
  did=1
fi
# Microsoft's Python worker (azure-functions-runtime, and the protocol's generated modules from the
# v1 worker's wheel): the local host runs the app through it. Apart from .venv: see the file.
worker_dir=.devstack/tools/functions-worker
worker_stamp=$worker_dir/.requirements.sha256
worker_want=$(sha256sum devstack/worker-requirements.txt | cut -d' ' -f1)
if [ ! -f "$worker_stamp" ] || [ "$(cat "$worker_stamp")" != "$worker_want" ]; then
  echo "== installing Microsoft's Python worker (devstack/worker-requirements.txt, pinned) into $worker_dir"
  step=$SECONDS
  rm -rf "$worker_dir"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps --ignore-requires-python \
    --target "$worker_dir" -r devstack/worker-requirements.txt
  echo "$worker_want" > "$worker_stamp"
  took "$step"
  did=1
fi
azurite_version=$(.venv/bin/python -c 'from devstack.azurite import AZURITE_VERSION; print(AZURITE_VERSION)')
if [ ! -d ".devstack/tools/azurite-$azurite_version/node_modules/azurite" ]; then
  echo "== installing Azurite $azurite_version (npm, pinned) into .devstack/tools"
  step=$SECONDS
  .venv/bin/python -c 'from pathlib import Path; from devstack.azurite import install_azurite; install_azurite(Path(".devstack/tools"))'
  took "$step"
  did=1
fi
have=".venv, the Python worker, Azurite $azurite_version"
[ "$with_checkov" = true ] && have="$have, checkov"
if [ -n "$did" ]; then
  echo "== set up in $((SECONDS - began)) s ($have)"
else
  echo "== set up already ($have): nothing to install"
fi
