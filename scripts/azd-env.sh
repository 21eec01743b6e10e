# Sourced by the deployment scripts (not run on its own): a value of the azd environment, whether
# the script runs as an azd hook (azd exports the environment's values to hooks) or by hand (they
# are then read with `azd env get-value`, in this repository, wherever the script is run from).
#
#   . "$(dirname "$0")/azd-env.sh"
#   principal=$(azd_value MANAGED_IDENTITY_PRINCIPAL_ID)

azd_project_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# azd_value NAME [DEFAULT]: $NAME when it is set and not empty; else the azd environment's NAME
# (azd on the PATH, an environment selected that has it); else DEFAULT (or nothing).
azd_value() {
  local name=$1 fallback=${2:-} value=${!1:-}
  if [ -z "$value" ] && command -v azd >/dev/null 2>&1; then
    value=$(cd "$azd_project_dir" && azd env get-value "$name" 2>/dev/null) || value=""
  fi
  printf '%s' "${value:-$fallback}"
}
