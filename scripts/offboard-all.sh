#!/usr/bin/env bash
# Offboard every account the app manages, through its HTTP API: the step before tearing a
# deployment down, since `azd down` removes the app but not what it made in Palette and Entra ID
# (cloud accounts, API keys, SSH keys, the app registrations' client secrets). It lists
# GET /api/accounts (every page) and the requests still in flight. Without --apply it only prints
# what it would offboard. With --apply it sends DELETE /api/accounts/{name} for each managed
# account, waits for each offboarding to finish and reports what it removed and left, or why it
# failed (an account a Palette cluster still uses fails, and nothing of it is removed).
#
#   scripts/offboard-all.sh [--apply] [--remove-ssh-keys] [--keep-api-keys] [--timeout SECONDS]
#                           [--api URL] [--function-key KEY] [--no-sign-in] [--cacert FILE]
#
# The caller needs the app role Onboarding.Admin. Each of these comes from its option, else the
# environment, else the azd environment and the Azure CLI (signed in as the caller):
#   --api URL           ONBOARDING_API_URL; else azd's SERVICE_API_URI (with or without /api)
#   a bearer token      ONBOARDING_API_TOKEN; else az account get-access-token for the scope
#                       api://<API_CLIENT_ID>/user_impersonation (the azd environment's client id).
#                       --no-sign-in sends none: the local host has no App Service authentication
#   --function-key KEY  ONBOARDING_FUNCTION_KEY; else the app's default key (az functionapp keys
#                       list, AZURE_RESOURCE_GROUP and AZURE_FUNCTION_NAME of the azd environment)
#   --cacert FILE       a CA to trust besides the system's (the local stack's REQUESTS_CA_BUNDLE)
# --remove-ssh-keys also removes the SSH key the app uploaded for each account (when no other
# account uses it); --keep-api-keys keeps the Palette API keys it made. --timeout (default 3600 s)
# bounds the wait. Exits 0 when the plan was printed or, with --apply, every offboarding succeeded;
# 1 otherwise (each failure is named), 2 for a bad argument. Needs python3 (its standard library
# only) and, to look values up, az and azd.
set -euo pipefail
. "$(dirname "$0")/azd-env.sh"

apply=false remove_ssh_keys=false remove_api_keys=true sign_in=true timeout=3600
api=${ONBOARDING_API_URL:-} function_key=${ONBOARDING_FUNCTION_KEY:-} cacert=""
usage() { echo "offboard-all: $* (see --help)" >&2; exit 2; }
while [ "$#" -gt 0 ]; do
  case "$1" in
    --apply) apply=true ;;
    --remove-ssh-keys) remove_ssh_keys=true ;;
    --keep-api-keys) remove_api_keys=false ;;
    --no-sign-in) sign_in=false ;;
    --api|--function-key|--cacert|--timeout)
      [ "$#" -ge 2 ] || usage "$1 needs a value"
      case "$1" in
        --api) api=$2 ;;
        --function-key) function_key=$2 ;;
        --cacert) cacert=$2 ;;
        --timeout) timeout=$2 ;;
      esac
      shift ;;
    -h|--help) sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) usage "unknown argument $1" ;;
  esac
  shift
done
[[ "$timeout" =~ ^[0-9]+$ ]] || usage "--timeout takes whole seconds"
[ -z "$cacert" ] || [ -f "$cacert" ] || usage "--cacert $cacert is not a file"

fail() { echo "offboard-all: $*" >&2; exit 1; }
need_az() { command -v az >/dev/null 2>&1 || fail "the Azure CLI (az) is not on the PATH, and $1"; }

[ -n "$api" ] || api=$(azd_value SERVICE_API_URI)
[ -n "$api" ] || fail "no API URL: pass --api URL (or set ONBOARDING_API_URL), or run it where azd has the deployment's environment"

if [ -z "$function_key" ]; then
  group=$(azd_value AZURE_RESOURCE_GROUP) app=$(azd_value AZURE_FUNCTION_NAME)
  [ -n "$group" ] && [ -n "$app" ] \
    || fail "no function key: pass --function-key KEY (or set ONBOARDING_FUNCTION_KEY), or run it where azd has the deployment's environment"
  need_az "no function key was given"
  function_key=$(az functionapp keys list -g "$group" -n "$app" --query functionKeys.default -o tsv) \
    || fail "could not read the function key of $app (az login, and Contributor on $group?)"
fi

token=${ONBOARDING_API_TOKEN:-}
if [ -z "$token" ] && [ "$sign_in" = true ]; then
  client=$(azd_value API_CLIENT_ID)
  [ -n "$client" ] \
    || fail "no token: set ONBOARDING_API_TOKEN, or run it where azd has API_CLIENT_ID (docs/deploy.md, step 2); --no-sign-in for the local host"
  need_az "no token was given"
  token=$(az account get-access-token --scope "api://$client/user_impersonation" --query accessToken -o tsv) \
    || fail "could not get a token for api://$client (az login as someone who holds Onboarding.Admin)"
fi

OFFBOARD_API=$api OFFBOARD_TOKEN=$token OFFBOARD_FUNCTION_KEY=$function_key OFFBOARD_CACERT=$cacert \
OFFBOARD_APPLY=$apply OFFBOARD_REMOVE_SSH_KEYS=$remove_ssh_keys OFFBOARD_REMOVE_API_KEYS=$remove_api_keys \
OFFBOARD_TIMEOUT_SECONDS=$timeout \
  exec python3 "$(dirname "$0")/offboard_all.py"
