#!/usr/bin/env bash
# The azd postdeploy hook: subscribe the rotation_near_expiry function to Key Vault's
# SecretNearExpiry events, once the function exists. Event Grid checks the destination function
# when a subscription is created, so the first `azd provision` (before any code is deployed)
# cannot declare it. After the first deploy this script deploys infra/app/rotation-events.bicep on
# its own and sets ROTATION_EVENTS_ENABLED=true in the azd environment; from then on every
# `azd provision` declares the subscription itself (main.bicep), and this script does nothing.
#
#   scripts/rotation-events.sh
#
# Environment (azd passes its environment to hooks; run by hand, each one not set is read from the
# azd environment): AZURE_RESOURCE_GROUP, AZURE_FUNCTION_NAME, EVENTGRID_SYSTEM_TOPIC_NAME,
# ROTATION_EVENT_SECRET_PREFIXES (a JSON array), API_PRIVATE, ROTATION_EVENTS_ENABLED. Needs the
# Azure CLI signed in (`az login`) with Contributor on the resource group, and azd on the PATH.
set -euo pipefail
. "$(dirname "$0")/azd-env.sh"
cd "$(dirname "$0")/.."

function_name=rotation_near_expiry
say() { printf 'rotation-events: %s\n' "$*"; }

if [ "$(azd_value ROTATION_EVENTS_ENABLED false)" = true ]; then
  say "the subscription is part of every azd provision (ROTATION_EVENTS_ENABLED=true); nothing to do"
  exit 0
fi
if [ "$(azd_value API_PRIVATE false)" = true ]; then
  say "the app is behind a private endpoint, where Event Grid cannot deliver; the daily rotation sweep (ROTATION_SCHEDULE) covers expiring secrets"
  exit 0
fi
for name in AZURE_RESOURCE_GROUP AZURE_FUNCTION_NAME EVENTGRID_SYSTEM_TOPIC_NAME ROTATION_EVENT_SECRET_PREFIXES; do
  printf -v "$name" '%s' "$(azd_value "$name")"
  if [ -z "${!name}" ]; then
    say "$name is neither set nor in the azd environment: run azd provision first" >&2
    exit 1
  fi
done

if ! az account show --query id -o tsv >/dev/null 2>&1; then
  say "the Azure CLI is not signed in: run az login, then bash scripts/rotation-events.sh"
  exit 0
fi

# The host indexes a new deployment within a minute or so (ROTATION_EVENTS_WAIT_SECONDS apart, 6 tries).
wait_seconds=${ROTATION_EVENTS_WAIT_SECONDS:-20}
found=false
for attempt in 1 2 3 4 5 6; do
  if az functionapp function show -g "$AZURE_RESOURCE_GROUP" -n "$AZURE_FUNCTION_NAME" \
      --function-name "$function_name" --query name -o tsv >/dev/null 2>&1; then
    found=true
    break
  fi
  [ "$attempt" = 6 ] || sleep "$wait_seconds"
done
if [ "$found" != true ]; then
  say "$AZURE_FUNCTION_NAME has no function $function_name yet; the subscription waits for a deploy that has it (the daily rotation sweep covers expiring secrets meanwhile)"
  exit 0
fi

say "subscribing $function_name to SecretNearExpiry on $EVENTGRID_SYSTEM_TOPIC_NAME (secrets starting with $ROTATION_EVENT_SECRET_PREFIXES)"
az deployment group create -g "$AZURE_RESOURCE_GROUP" -n rotation-events \
  --template-file infra/app/rotation-events.bicep \
  --parameters systemTopicName="$EVENTGRID_SYSTEM_TOPIC_NAME" functionAppName="$AZURE_FUNCTION_NAME" \
               functionName="$function_name" secretNamePrefixes="$ROTATION_EVENT_SECRET_PREFIXES" \
  -o none
azd env set ROTATION_EVENTS_ENABLED true
say "done; every later azd provision keeps the subscription (ROTATION_EVENTS_ENABLED=true)"
