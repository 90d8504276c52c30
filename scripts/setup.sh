#!/usr/bin/env bash
# Set up a fresh machine for higgs-audio-trainer: Debian packages, a virtualenv in .venv with the
# project and its pinned dependencies. Idempotent and quick when nothing changed.
#
#   scripts/setup.sh          runtime (enough for the demo)
#   scripts/setup.sh --test   also the test tools (pytest, ruff, espeak-ng, sox; the monitoring and
#                             Kubernetes tools come from scripts/ci/*.sh, which scripts/test.sh runs)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
WANT_TEST=0
[[ "${1:-}" == "--test" ]] && WANT_TEST=1

# shellcheck source=lib/apt.sh
source "$REPO/scripts/lib/apt.sh"
apt_packages=(libsndfile1)
(( WANT_TEST )) && apt_packages+=(espeak-ng sox)
apt_install_missing "${apt_packages[@]}"

PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
if [[ ! -x .venv/bin/python ]]; then
  "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
fi

# Reinstall only when the dependency declaration or the tested pins changed (the stamp holds their hash).
# constraints.txt holds the versions the tests run against: a fresh install gets those, not the newest.
extra=""; (( WANT_TEST )) && extra="[test]"
stamp=".venv/.installed-$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)${extra:+-test}"
if [[ ! -f "$stamp" ]]; then
  .venv/bin/python -m pip install --quiet -c constraints.txt -e ".${extra}"
  touch "$stamp"
fi
echo "setup done: $(.venv/bin/python -c 'import torch, transformers, peft; print("torch", torch.__version__, "transformers", transformers.__version__, "peft", peft.__version__)')"
