#!/usr/bin/env bash
# The one-time Microsoft Graph setup that Bicep cannot do: grant the app's managed identity the
# application permission Application.ReadWrite.OwnedBy, and make it an owner of each app
# registration it will create or rotate client secrets for. Idempotent: it reads first and changes
# only what is missing. Without --apply (or GRAPH_GRANT_APPLY=true) it only prints what it would do.
#
#   scripts/graph-grant.sh [--apply] [APP_CLIENT_ID ...]
#
# Environment: MANAGED_IDENTITY_PRINCIPAL_ID (required), GRAPH_ENDPOINT (default
# https://graph.microsoft.com), GRAPH_OWNED_APPS (client ids, separated by spaces or commas, added to
# the arguments): azd passes them to hooks, and run by hand the script reads each one not set from
# the azd environment (azd env get-value). GRAPH_GRANT_APPLY=true applies, from the environment only.
# Needs the Azure CLI signed in (`az login`): granting the permission takes a Privileged Role
# Administrator; adding an owner takes an owner of the app registration, an Application
# Administrator or a Cloud Application Administrator.
set -euo pipefail
. "$(dirname "$0")/azd-env.sh"

apply=${GRAPH_GRANT_APPLY:-false}
apps=()
for arg in "$@"; do
  case "$arg" in
    --apply) apply=true ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "unknown option $arg (see --help)" >&2; exit 2 ;;
    *) apps+=("$arg") ;;
  esac
done
owned=$(azd_value GRAPH_OWNED_APPS)
for app in ${owned//,/ }; do
  case " ${apps[*]+"${apps[*]}"} " in *" $app "*) ;; *) apps+=("$app") ;; esac
done

graph=$(azd_value GRAPH_ENDPOINT https://graph.microsoft.com)
graph=${graph%/}
principal=$(azd_value MANAGED_IDENTITY_PRINCIPAL_ID)
# Microsoft Graph's own application id, the same in every tenant.
graph_app_id=00000003-0000-0000-c000-000000000000
permission=Application.ReadWrite.OwnedBy
guid='^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$'

if [ "$apply" = true ]; then mode=apply; else mode=plan; fi
say() { printf '%s\n' "$*"; }
# In plan mode a failed read does not fail `azd provision`: it says what to run instead.
give_up() {
  say "graph-grant: $*" >&2
  if [ "$mode" = plan ]; then
    say "graph-grant: nothing changed; run scripts/graph-grant.sh again once that is fixed." >&2
    exit 0
  fi
  exit 1
}

command -v az >/dev/null 2>&1 || give_up "the Azure CLI (az) is not on the PATH"
[[ "$principal" =~ $guid ]] || give_up "MANAGED_IDENTITY_PRINCIPAL_ID is neither set nor in the azd environment as an object id (run azd provision first, or export it)"
for app in "${apps[@]+"${apps[@]}"}"; do
  [[ "$app" =~ $guid ]] || give_up "'$app' is not an application (client) id"
done

say "graph-grant ($mode): managed identity $principal, Graph $graph"

# 1. The application permission, as an app role assignment on Graph's service principal.
found=$(az rest --method GET \
  --uri "$graph/v1.0/servicePrincipals(appId='$graph_app_id')?\$select=id,appRoles" \
  --query "[id, appRoles[?value=='$permission'].id | [0]]" -o tsv 2>/dev/null) \
  || give_up "cannot read Microsoft Graph's service principal (is az signed in to the right tenant?)"
graph_sp=${found%%$'\t'*}
role=${found#*$'\t'}
[[ "$graph_sp" =~ $guid && "$role" =~ $guid ]] || give_up "Graph's service principal has no app role $permission"
granted=$(az rest --method GET \
  --uri "$graph/v1.0/servicePrincipals/$principal/appRoleAssignments" \
  --query "value[?resourceId=='$graph_sp' && appRoleId=='$role'] | length(@)" -o tsv 2>/dev/null) \
  || give_up "cannot read the identity's app role assignments"
if [ "$granted" != 0 ]; then
  say "ok: $permission is already granted"
elif [ "$mode" = plan ]; then
  say "would grant: $permission to $principal"
else
  az rest --method POST \
    --uri "$graph/v1.0/servicePrincipals/$principal/appRoleAssignments" \
    --headers "Content-Type=application/json" \
    --body "{\"principalId\": \"$principal\", \"resourceId\": \"$graph_sp\", \"appRoleId\": \"$role\"}" \
    -o none
  say "granted: $permission to $principal"
fi

# 2. Ownership of each app registration.
for app in "${apps[@]+"${apps[@]}"}"; do
  owners=$(az rest --method GET \
    --uri "$graph/v1.0/applications(appId='$app')/owners?\$select=id" \
    --query "value[?id=='$principal'] | length(@)" -o tsv 2>/dev/null) \
    || give_up "cannot read the owners of app registration $app (does it exist in this tenant?)"
  if [ "$owners" != 0 ]; then
    say "ok: owner of $app"
  elif [ "$mode" = plan ]; then
    say "would add: $principal as an owner of $app"
  else
    az rest --method POST \
      --uri "$graph/v1.0/applications(appId='$app')/owners/\$ref" \
      --headers "Content-Type=application/json" \
      --body "{\"@odata.id\": \"$graph/v1.0/directoryObjects/$principal\"}" \
      -o none
    say "added: $principal as an owner of $app"
  fi
done
[ "${#apps[@]}" -gt 0 ] || say "no app registrations given (arguments or GRAPH_OWNED_APPS)"
if [ "$mode" = plan ]; then
  say "plan only: run 'scripts/graph-grant.sh --apply' (or azd env set GRAPH_GRANT_APPLY true) to make these changes"
fi
