#!/usr/bin/env bash
# Set up a machine to deploy from, with what docs/deploy.md uses and nothing more: it checks for
# bash, curl, python3 (azd packages the app with it), Python 3.11, the Azure CLI (az) and the Azure
# Developer CLI (azd), and says what is missing and what each is for; then it makes .venv with the
# deployed requirements only (requirements.txt), for the guide's Python commands (sending to the
# queue, reading events). Safe to run again: it only redoes what changed.
#
#   scripts/deploy-setup.sh
#
# Not needed to deploy, so not installed: Node.js and npm, Azurite, the local stack's tools, the
# test tools (scripts/bootstrap.sh sets those up for development), and Azure Functions Core Tools
# (azd packages the app itself, and the Function App builds it from requirements.txt).
# PYTHON names the Python 3.11 to use (default: python3.11, else python3). Exits 1 when something
# is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

for arg in "$@"; do
  case "$arg" in
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument $arg (see --help)" >&2; exit 2 ;;
  esac
done

missing=0
say() { printf 'deploy-setup: %s\n' "$*"; }
lacks() {
  say "missing: $1" >&2
  missing=$((missing + 1))
}
has() { command -v "$1" >/dev/null 2>&1; }

has curl || lacks "curl (the guide's HTTP calls and your public IP address): install it with your package manager"
has python3 || lacks "python3 on the PATH (azd packages the app with it)"
has az || lacks "the Azure CLI, az (sign-in, the Graph grant, Key Vault, queries): https://learn.microsoft.com/cli/azure/install-azure-cli"
has azd || lacks "the Azure Developer CLI, azd (provisions infra/ and deploys the app): https://aka.ms/azd-install"

python=${PYTHON:-}
if [ -z "$python" ]; then
  if has python3.11; then python=python3.11; else python=python3; fi
fi
if ! "$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
  found=$("$python" --version 2>&1 || true)
  lacks "Python 3.11, the app's version, for .venv (found: ${found:-no $python}); or name one with PYTHON=/path/to/python3.11"
elif [ -x .venv/bin/python ] && [ "$(cat .venv/.requirements.sha256 2>/dev/null)" = \
    "$(cat requirements.txt requirements-dev.txt | sha256sum | cut -d' ' -f1)" ]; then
  say ".venv is ready (scripts/bootstrap.sh installed the development requirements, which include these)"
else
  stamp=.venv/.deploy-requirements.sha256
  want=$(sha256sum requirements.txt | cut -d' ' -f1)
  if [ -x .venv/bin/python ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    say ".venv is ready"
  else
    began=$SECONDS
    [ -x .venv/bin/python ] || "$python" -m venv .venv
    pinned=$(grep -cE '^[A-Za-z0-9._-]+==' requirements.txt)
    say "installing the deployed requirements into .venv: $pinned pinned packages (requirements.txt)"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
    echo "$want" > "$stamp"
    say ".venv set up in $((SECONDS - began)) s"
  fi
fi

if [ "$missing" -gt 0 ]; then
  say "$missing missing: install them, then run scripts/deploy-setup.sh again" >&2
  exit 1
fi
say "ready to deploy: bash, curl, python3, Python 3.11 with .venv, az and azd are here"
