#!/usr/bin/env bash
# The fast tier against the newest transformers, peft and accelerate the package registry serves, in a venv of
# its own (.venv-newest), beside the pinned one that scripts/setup.sh makes. Report-only: it prints the
# versions and the outcome and exits 0 whatever the tests say (NEWEST_STRICT=1 makes a failure its exit
# code). docs/development.md says why it reports rather than fails CI, and why .ci/run does not call it.
#
#   scripts/ci/newest.sh                  the fast tier (-m "not slow")
#   scripts/ci/newest.sh tests/trainer/train/test_private_surface.py     any pytest arguments instead
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO"
scripts/setup.sh --test  # the pinned venv: torch and the test tools come from there
VENV=.venv-newest
PY="$(.venv/bin/python -c 'import sys; print(sys.executable)')"
if [[ ! -x "$VENV/bin/python" ]]; then
  "$(readlink -f "$PY")" -m venv "$VENV"
fi
# torch (several GB) is reused from the pinned venv: its site-packages is on the path after this venv's own,
# so what is installed here (the newest releases) wins, and pip finds torch already there.
pinned_site="$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
newest_site="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "$pinned_site" > "$newest_site/zz-pinned-venv.pth"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet --upgrade --upgrade-strategy only-if-needed transformers peft accelerate
"$VENV/bin/python" -m pip install --quiet --no-deps -e .
versions="$("$VENV/bin/python" -c 'import torch, transformers, peft, accelerate
print("torch", torch.__version__, "transformers", transformers.__version__, "peft", peft.__version__,
      "accelerate", accelerate.__version__)')"
echo "newest: $versions"
(( $# )) || set -- -m "not slow"
set +e
HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false "$VENV/bin/python" -m pytest -p no:cacheprovider "$@"
status=$?
set -e
if (( status == 0 )); then
  echo "newest releases: the selected tests pass with $versions"
else
  echo "newest releases: tests FAIL with $versions (exit $status); pinned versions are in constraints.txt"
fi
if [[ "${NEWEST_STRICT:-0}" == 1 ]]; then exit "$status"; fi
exit 0
