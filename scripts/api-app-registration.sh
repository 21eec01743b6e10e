#!/usr/bin/env bash
# Create (or bring up to date) the Entra ID app registration of the HTTP API, which App Service
# authentication checks tokens against: application id URI api://<client id>, v2 access tokens,
# the app roles Onboarding.Submit, Onboarding.Read and Onboarding.Admin (rotate, offboard,
# reactivate a replaced API key; for users and applications), a delegated
# scope user_impersonation that the Azure CLI may request without a consent prompt, and its service
# principal. Then it stores the client id in the azd environment (API_CLIENT_ID); run
# `azd provision` afterwards. Idempotent: ids of existing roles and scopes are kept.
#
#   scripts/api-app-registration.sh [--assign-me]
#
# --assign-me also gives the signed-in user Onboarding.Submit and Onboarding.Admin, for trying the
# API from a shell.
# Environment: AZURE_ENV_NAME (names the registration palette-onboarding-api-<env>), GRAPH_ENDPOINT
# (default https://graph.microsoft.com); each one not set is read from the azd environment. Needs
# the Azure CLI signed in with the right to create app registrations, and azd on the PATH.
set -euo pipefail
. "$(dirname "$0")/azd-env.sh"

assign_me=false
for arg in "$@"; do
  case "$arg" in
    --assign-me) assign_me=true ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument $arg (see --help)" >&2; exit 2 ;;
  esac
done

graph=$(azd_value GRAPH_ENDPOINT https://graph.microsoft.com)
graph=${graph%/}
env_name=$(azd_value AZURE_ENV_NAME)
display_name="palette-onboarding-api-$env_name"
# The Azure CLI's own application id (the same in every tenant): pre-authorized for the scope.
azure_cli_app_id=04b07795-8ddb-461a-bbee-02f9e1bf7b46
say() { printf 'api-app-registration: %s\n' "$*"; }
if [ -z "$env_name" ]; then
  say "no azd environment: run azd env new (docs/deploy.md, step 1) from the repository first" >&2
  exit 1
fi
new_id() { python3 -c 'import uuid; print(uuid.uuid4())'; }

app_id=$(az ad app list --display-name "$display_name" --query "[0].appId" -o tsv)
if [ -z "$app_id" ]; then
  app_id=$(az ad app create --display-name "$display_name" --sign-in-audience AzureADMyOrg --query appId -o tsv)
  say "created $display_name ($app_id)"
else
  say "found $display_name ($app_id)"
fi
uri="$graph/v1.0/applications(appId='$app_id')"

existing() { az rest --method GET --uri "$uri" --query "$1" -o tsv; }
submit_id=$(existing "appRoles[?value=='Onboarding.Submit'].id | [0]")
read_id=$(existing "appRoles[?value=='Onboarding.Read'].id | [0]")
admin_id=$(existing "appRoles[?value=='Onboarding.Admin'].id | [0]")
scope_id=$(existing "api.oauth2PermissionScopes[?value=='user_impersonation'].id | [0]")
[ -n "$submit_id" ] || submit_id=$(new_id)
[ -n "$read_id" ] || read_id=$(new_id)
[ -n "$admin_id" ] || admin_id=$(new_id)
[ -n "$scope_id" ] || scope_id=$(new_id)

patch() { az rest --method PATCH --uri "$uri" --headers "Content-Type=application/json" --body "$1" -o none; }
patch "$(cat <<JSON
{
  "identifierUris": ["api://$app_id"],
  "appRoles": [
    {"id": "$submit_id", "value": "Onboarding.Submit", "isEnabled": true,
     "allowedMemberTypes": ["User", "Application"], "displayName": "Submit onboardings",
     "description": "Submit Palette onboarding requests and read their state."},
    {"id": "$read_id", "value": "Onboarding.Read", "isEnabled": true,
     "allowedMemberTypes": ["User", "Application"], "displayName": "Read onboardings",
     "description": "Read the state of Palette onboarding requests."},
    {"id": "$admin_id", "value": "Onboarding.Admin", "isEnabled": true,
     "allowedMemberTypes": ["User", "Application"], "displayName": "Administer onboarded accounts",
     "description": "Rotate an account's secret now, offboard an account, reactivate a replaced API key."}
  ],
  "api": {
    "requestedAccessTokenVersion": 2,
    "oauth2PermissionScopes": [
      {"id": "$scope_id", "value": "user_impersonation", "type": "User", "isEnabled": true,
       "adminConsentDisplayName": "Call the Palette onboarding API",
       "adminConsentDescription": "Call the Palette onboarding API as the signed-in user.",
       "userConsentDisplayName": "Call the Palette onboarding API",
       "userConsentDescription": "Call the Palette onboarding API as you."}
    ]
  }
}
JSON
)"
# Pre-authorizing refers to the scope, so it goes in once the scope exists.
patch "{\"api\": {\"preAuthorizedApplications\": [{\"appId\": \"$azure_cli_app_id\", \"delegatedPermissionIds\": [\"$scope_id\"]}]}}"
say "identifier URI api://$app_id, roles Onboarding.Submit, Onboarding.Read and Onboarding.Admin, scope user_impersonation"

sp_id=$(az ad sp list --filter "appId eq '$app_id'" --query "[0].id" -o tsv)
if [ -z "$sp_id" ]; then
  sp_id=$(az ad sp create --id "$app_id" --query id -o tsv)
  say "created its service principal ($sp_id)"
fi

if [ "$assign_me" = true ]; then
  me=$(az ad signed-in-user show --query id -o tsv)
  for role in "Onboarding.Submit:$submit_id" "Onboarding.Admin:$admin_id"; do
    name=${role%%:*} role_id=${role#*:}
    held=$(az rest --method GET --uri "$graph/v1.0/users/$me/appRoleAssignments" \
      --query "value[?resourceId=='$sp_id' && appRoleId=='$role_id'] | length(@)" -o tsv)
    if [ "$held" = 0 ]; then
      az rest --method POST --uri "$graph/v1.0/users/$me/appRoleAssignments" \
        --headers "Content-Type=application/json" \
        --body "{\"principalId\": \"$me\", \"resourceId\": \"$sp_id\", \"appRoleId\": \"$role_id\"}" -o none
      say "gave you ($me) $name"
    else
      say "you ($me) hold $name already"
    fi
  done
fi

azd env set API_CLIENT_ID "$app_id"
say "API_CLIENT_ID=$app_id is in the azd environment: run azd provision to turn sign-in on"
