#!/usr/bin/env bash
# The GPU run of issue 28 in one device call (about 10 minutes on one H100 or H200): the released configuration
# and each change, one bench/bench_gpu.py process per run, every one profiled, all figures in one JSON.
# Run from the repository root:
#
#     bash bench/gpu_run.sh              # on the lent GPU
#     DRY_RUN=1 bash bench/gpu_run.sh    # on a CPU: the tiny preset, 2 steps each, the same runs and files
#
# Runs (each is bench_gpu.py's `baseline` with options; `released` also runs two of its variants):
#   released      the released configuration: full fine-tuning (fp32 masters where they fit, else bf16),
#                 plus the variants weight_dtype (bf16 weights) and compile_regions (torch.compile per layer)
#   routing       + the routing option ($ROUTING_OPTION=$ROUTING_VALUE)
#   token_budget  + --max_tokens_per_batch $TOKEN_BUDGET (one micro-batch per step: the same tokens per step)
#   fsdp_1gpu     + --fsdp true, under torchrun with one process (FSDP needs a process group)
# Option names are read from `higgs-audio-trainer train --help` at run time: a run whose option this checkout
# lacks is recorded as skipped. Override the names with ROUTING_OPTION / TOKEN_BUDGET_OPTION.
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
# The wheels are installed into /tmp/site, without network. Output lands in $OUT: gpu_run.json (every run's
# figures, its profile summary and the ratios against `released`), one <run>.json and <run>.log per run,
# env.txt. BUDGET (default 90 s; 180 s for `released`) bounds each run's sweep, which is killed 60 s past it;
# TOTAL (default 540 s) bounds the whole script, so that one device call of 600 s holds it.
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
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
STEPS=()
PROFILE_STEPS=${PROFILE_STEPS:-2}
if [ "${DRY_RUN:-0}" = 1 ]; then
    STEPS=(--preset tiny --steps 2 --warmup_steps 1)
    PROFILE_STEPS=1
fi
TOKEN_BUDGET=${TOKEN_BUDGET:-10400}  # the released step's 8 x 325 tokens x 4 accumulation steps, in one micro-batch
ROUTING_VALUE=${ROUTING_VALUE:-true}
BUDGET=${BUDGET:-90}  # seconds of bench_gpu.py's sweep per run (twice that for `released`)
TOTAL=${TOTAL:-540}   # the whole script's bound: a run that would start later is skipped

HELP=$("$PYTHON" -m trainer train --help 2>&1)
has_option() { grep -q -- "--$1\b" <<<"$HELP"; }
first_option() {  # the first option of train --help whose name contains $1
    grep -o -- "--[a-z0-9_]*$1[a-z0-9_]*" <<<"$HELP" | head -n 1 | sed 's/^--//'
}
ROUTING_OPTION=${ROUTING_OPTION:-$(first_option routing)}
TOKEN_BUDGET_OPTION=${TOKEN_BUDGET_OPTION:-max_tokens_per_batch}
# The routing is on by default in this checkout: every run but `routing` turns it off, so that `released` is
# transformers' own layer and each other run changes one thing against it.
RELEASED=()
if [ -n "$ROUTING_OPTION" ] && has_option "$ROUTING_OPTION"; then RELEASED=(--option "$ROUTING_OPTION=false"); fi

RUNS=()
run() {  # run NAME LAUNCHER... -- bench_gpu.py flags
    local name=$1; shift
    local launcher=()
    while [ "$1" != "--" ]; do launcher+=("$1"); shift; done
    shift
    local left=$((TOTAL - SECONDS)) budget=$BUDGET
    if [ "$name" = released ]; then budget=$((2 * BUDGET)); fi  # three variants
    if [ "$left" -lt 60 ]; then skip "$name" "the script's TOTAL of $TOTAL s is spent"; return; fi
    RUNS+=("$name")
    echo "== $name: ${launcher[*]} bench/bench_gpu.py $*" | tee -a "$OUT/gpu_run.log"
    timeout "$(( left < budget + 60 ? left : budget + 60 ))" "${launcher[@]}" bench/bench_gpu.py "${STEPS[@]}" \
        --budget_seconds "$budget" --profile_steps "$PROFILE_STEPS" --out "$OUT/$name.json" "$@" >"$OUT/$name.log" 2>&1
    echo "   exit $?" | tee -a "$OUT/gpu_run.log"
}
skip() {
    RUNS+=("$1")
    echo "{\"skipped\": \"$2\"}" >"$OUT/$1.json"
    echo "== $1: skipped ($2)" | tee -a "$OUT/gpu_run.log"
}

: >"$OUT/gpu_run.log"
run released "$PYTHON" -- --variants baseline,weight_dtype,compile_regions "${RELEASED[@]}" "$@"
if [ -n "$ROUTING_OPTION" ] && has_option "$ROUTING_OPTION"; then
    run routing "$PYTHON" -- --variants baseline --option "$ROUTING_OPTION=$ROUTING_VALUE" "$@"
else
    skip routing "no routing option in train --help (set ROUTING_OPTION)"
fi
if has_option "$TOKEN_BUDGET_OPTION"; then
    run token_budget "$PYTHON" -- --variants baseline --grad_accum 1 --option "$TOKEN_BUDGET_OPTION=$TOKEN_BUDGET" "${RELEASED[@]}" "$@"
else
    skip token_budget "no --$TOKEN_BUDGET_OPTION in train --help (set TOKEN_BUDGET_OPTION)"
fi
run fsdp_1gpu "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node=1 -- \
    --variants baseline --option fsdp=true "${RELEASED[@]}" "$@"

"$PYTHON" - "$OUT" "${RUNS[@]}" <<'PY' | tee "$OUT/gpu_run.json"
import json, sys
from pathlib import Path

out, names = Path(sys.argv[1]), sys.argv[2:]
runs = {}
for name in names:
    path = out / f"{name}.json"
    data = json.loads(path.read_text()) if path.is_file() and path.stat().st_size else {"error": "no result"}
    if "variants" in data:
        runs[name] = {"device": data.get("device"), "variants": {
            v: {k: e.get(k) for k in ("status", "error", "options", "weight_dtype", "step_seconds", "tokens_per_second",
                                      "peak_memory_gib", "mfu", "achieved_tflops", "profile")}
            for v, e in data["variants"].items()}}
    else:
        runs[name] = data
base = runs.get("released", {}).get("variants", {}).get("baseline", {})
ratios = {}
for name, run in runs.items():
    for variant, e in run.get("variants", {}).items():
        if e.get("step_seconds") and base.get("step_seconds"):
            ratios[f"{name}/{variant}"] = {"speedup": round(base["step_seconds"] / e["step_seconds"], 3),
                                           "memory": round(e["peak_memory_gib"] / base["peak_memory_gib"], 3)
                                           if e.get("peak_memory_gib") and base.get("peak_memory_gib") else None}
print(json.dumps({"benchmark": "gpu_run", "baseline": "released/baseline", "runs": runs, "ratios": ratios}, indent=2))
PY
