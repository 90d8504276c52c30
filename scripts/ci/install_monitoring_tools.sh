#!/usr/bin/env bash
# Install the tools the monitoring tests run (tests/monitoring/, tests/trainer/metrics/test_callback.py):
# Prometheus with promtool and the Pushgateway from Debian, openssl (test certificates), and the npm
# packages of the dashboard schema check. Idempotent: what is already there at the pinned version is left
# alone, so CI can call this on every run.
#
# Layout:
#   /usr/bin/prometheus, promtool, prometheus-pushgateway   Debian packages (started by the tests, never
#                                                           as services)
#   .cache/npm-tools/node_modules/                          @grafana/schema and typescript (tsc), found
#                                                           there by tests/monitoring/test_dashboard.py
#
# Usage: scripts/ci/install_monitoring_tools.sh   (as root, or with the Debian packages already installed)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
NPM_TOOLS="${NPM_TOOLS_DIR:-$REPO/.cache/npm-tools}"
GRAFANA_SCHEMA_VERSION="13.2.3"
TYPESCRIPT_VERSION="7.0.2"

# ---- Debian packages -------------------------------------------------------------------------------
# shellcheck source=../lib/apt.sh
source "$REPO/scripts/lib/apt.sh"
node=()
command -v npm >/dev/null || node=(nodejs npm)  # some Node.js builds carry their own npm, not packaged apart
apt_install_services prometheus prometheus-pushgateway openssl "${node[@]}"
echo "prometheus: $(prometheus --version 2>&1 | head -n 1)"
echo "pushgateway: $(prometheus-pushgateway --version 2>&1 | head -n 1)"

# ---- npm packages of the dashboard schema check ----------------------------------------------------
installed_version() {  # $1 package name; prints its installed version under $NPM_TOOLS, or nothing
  local manifest="$NPM_TOOLS/node_modules/$1/package.json"
  [[ -f "$manifest" ]] && node -p "require('$manifest').version" 2>/dev/null || true
}
if [[ "$(installed_version @grafana/schema)" == "$GRAFANA_SCHEMA_VERSION" &&
      "$(installed_version typescript)" == "$TYPESCRIPT_VERSION" ]]; then
  echo "npm tools: present in $NPM_TOOLS"
else
  mkdir -p "$NPM_TOOLS"
  npm install --prefix "$NPM_TOOLS" --no-audit --no-fund --save-exact \
    "@grafana/schema@$GRAFANA_SCHEMA_VERSION" "typescript@$TYPESCRIPT_VERSION"
fi
echo "tsc: $("$NPM_TOOLS/node_modules/.bin/tsc" --version)"
