#!/usr/bin/env bash
# The README's second command (and CI's, through .ci/run): set up everything the tests need on a
# fresh machine, start nothing by hand, run ruff and the whole pytest suite.
#   scripts/test.sh               everything
#   scripts/test.sh -m "not slow" the fast tests (inner loop); any pytest arguments pass through
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
scripts/setup.sh --test
for tool in scripts/ci/install_*.sh; do
  [[ -f "$tool" ]] && bash "$tool"
done
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
.venv/bin/ruff check .
set +e
.venv/bin/python -m pytest "$@"
status=$?
set -e
if [[ $status -eq 5 ]]; then
  echo "pytest collected no tests: that is a failure here" >&2
  exit 1
fi
exit $status
