# shellcheck shell=bash
# apt_install_missing PKG...: install the Debian packages that are not installed yet (one apt-get update,
# only when something is missing), as root or through sudo. Sourced by scripts/setup.sh and scripts/ci/*.sh.
apt_install_missing() {
  local missing=() pkg sudo=""
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  (( ${#missing[@]} )) || return 0
  [[ $(id -u) -ne 0 ]] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
}
