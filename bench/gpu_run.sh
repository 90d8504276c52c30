#!/usr/bin/env bash
# bench/bench_gpu.py in one call on a lent GPU machine (an H200 runs every variant at full size; see the
# script's docstring for an H100). Run from the repository root:
#
#     bash bench/gpu_run.sh [more bench_gpu.py flags, e.g. --num_layers 14]
#
# The machine's image has torch 2.11 but transformers 5.17; our code needs >= 5.18 (pyproject.toml). Fill
# .whl/ here first (about 19 MB; .whl/ must be ignored by git and named in the call's carry):
#
#     echo /.whl/ >> .git/info/exclude
#     .venv/bin/python -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#         --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#         -d .whl transformers==5.24.0 peft==0.21.2 regex==2026.11.19 tokenizers==0.23.3 safetensors==0.8.0
#
# (transformers 5.24 checks at import that regex >= 2025.10.22 and wants tokenizers >= 0.23.1 and safetensors
# >= 0.8; 5.25 needs huggingface-hub >= 2.4, which the image lacks: stay on 5.24 there.)
# The wheels are installed into /tmp/site, without network. Output lands in $OUT: gpu.json (rewritten after
# every variant, so a cut-short run still returns what it measured), gpu.log, env.txt.
# BUDGET (default 400 s) bounds the sweep; TIMEOUT (default 450 s) is the hard stop of the whole script.
set -uo pipefail
OUT=${OUT:-/tmp/bench-gpu-out}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || { echo "installing the carried wheels failed" >&2; exit 1; }
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
{
    "$PYTHON" -c 'import sys, torch, transformers, peft, accelerate; print("python", sys.version.split()[0]); print("torch", torch.__version__, "cuda", torch.version.cuda); print("transformers", transformers.__version__); print("peft", peft.__version__); print("accelerate", accelerate.__version__)'
    nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,driver_version --format=csv 2>&1
    nvidia-smi 2>&1
} 2>&1 | tee "$OUT/env.txt"
PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false timeout "${TIMEOUT:-450}" \
    "$PYTHON" bench/bench_gpu.py --budget_seconds "${BUDGET:-400}" --out "$OUT/gpu.json" "$@" 2>&1 | tee "$OUT/gpu.log"
