#!/usr/bin/env bash
# The README's second command (and CI's, through .ci/run): set up everything the tests need on a
# fresh machine, start nothing by hand, run ruff and the whole pytest suite.
#   scripts/test.sh               everything
#   scripts/test.sh -m "not slow" the fast tier (inner loop, a newcomer's first run): no Go build and no
#                                 Docker engine, whose tests are all slow; any pytest arguments pass through,
#                                 and only the tools the selected tests use are installed
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
scripts/setup.sh --test
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

# Install the external tools only for the tests selected (Docker's engine and base image, Helm and checkov,
# Prometheus are gigabytes): pytest lists what it would run; if it cannot, everything is installed.
if selected=$(.venv/bin/python -m pytest --collect-only -q -p no:cacheprovider "$@" 2>/dev/null | grep "::"); then
  needs() { grep -qE "^($1)" <<<"$selected"; }
else
  needs() { true; }
fi
if needs "tests/image/test_image.py"; then bash scripts/ci/install_docker_tools.sh
elif needs "tests/image/"; then bash scripts/ci/install_docker_tools.sh --lint-only
fi
needs "tests/chart/" && bash scripts/ci/install_k8s_tools.sh
needs "tests/monitoring/|tests/trainer/metrics/|tests/trainer/generate/" && bash scripts/ci/install_monitoring_tools.sh
needs "tests/trainer/commands/test_status.py" && bash scripts/ci/install_apiserver.sh
# The cluster tier (tests/cluster/): ../shared/cluster's kube-apiserver and training operator need etcd, kubectl
# and openssl; helm installs the chart.
if needs "tests/cluster/test_training_jobs.py|tests/cluster/test_status.py"; then
  source scripts/lib/apt.sh
  apt_install_services etcd-server
  apt_install_missing kubectl openssl xz-utils util-linux curl
  bash scripts/ci/install_k8s_tools.sh
fi
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
