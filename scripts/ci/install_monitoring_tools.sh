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
packages=()
command -v prometheus >/dev/null || packages+=(prometheus)  # brings promtool
command -v promtool >/dev/null || packages+=(prometheus)
command -v prometheus-pushgateway >/dev/null || packages+=(prometheus-pushgateway)
command -v openssl >/dev/null || packages+=(openssl)
command -v npm >/dev/null || packages+=(nodejs npm)
if ((${#packages[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "missing Debian packages: ${packages[*]}; run this script as root, or install them" >&2
    exit 1
  fi
  # Where an init system runs, the packages would start Prometheus and the Pushgateway as services on all
  # addresses; the tests start their own on loopback. policy-rc.d answering 101 stops that start.
  policy=/usr/sbin/policy-rc.d
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy"
    trap 'rm -f "$policy"' EXIT
  fi
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${packages[@]}"
fi
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
