# shellcheck shell=bash
# apt_install_missing PKG...: install the Debian packages that are not installed yet (one apt-get update,
# only when something is missing), as root or through sudo; a held apt/dpkg lock is waited for (APT_LOCK_TIMEOUT
# seconds, default 600). Sourced by scripts/setup.sh and scripts/ci/*.sh.
apt_install_missing() {
  local missing=() pkg sudo=""
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  (( ${#missing[@]} )) || return 0
  [[ $(id -u) -ne 0 ]] && sudo="sudo"
  # Another apt or dpkg (unattended-upgrades on a fresh machine, a second install) holding the lock: wait for
  # it, up to APT_LOCK_TIMEOUT seconds, instead of failing at once.
  local wait=(-o "DPkg::Lock::Timeout=${APT_LOCK_TIMEOUT:-600}")
  $sudo apt-get "${wait[@]}" update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get "${wait[@]}" install -y -qq --no-install-recommends "${missing[@]}"
}

# apt_install_services PKG...: apt_install_missing for packages that ship a daemon. Where an init system
# runs, installing them would start the daemon (on all addresses); the tests start their own on loopback,
# so a policy-rc.d answering 101 stops that start for the length of the install.
apt_install_services() {
  local policy=/usr/sbin/policy-rc.d added=0 status=0
  if [[ ! -e $policy && $(id -u) -eq 0 ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && added=1
  fi
  apt_install_missing "$@" || status=$?
  (( added )) && rm -f "$policy"
  return "$status"
}
