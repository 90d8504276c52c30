#!/usr/bin/env bash
# The README's first command: set up, build a tiny random Higgs Audio v2 checkpoint, and fine-tune it
# with LoRA on the bundled real speech with two DDP processes on the CPU (torchrun, gloo), offline.
# Output: demo-output/run/checkpoint-N/lora_adapters/ and demo-output/run/lora_adapters/; the last line
# printed is the synthesize command that speaks with the adapter, named as README.md names it (after
# `source .venv/bin/activate`).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
scripts/setup.sh
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=1
OUT="${DEMO_OUTPUT:-$REPO/demo-output}"
[[ -f "$OUT/tiny/model/config.json" ]] || .venv/bin/higgs-audio-trainer make-tiny-model "$OUT/tiny"

# Options as the container and the chart pass them: environment variables.
export MODEL_PATH="$OUT/tiny/model" AUDIO_TOKENIZER_PATH="$OUT/tiny/audio_tokenizer"
export TRAIN_DATA_FILE="$REPO/examples/demo_data/train.json" OUTPUT_DIR="$OUT/run"
export USE_LORA=true LORA_MODULES_TO_SAVE=audio_head,audio_embedding
export DISABLE_EVAL=false VALIDATION_SPLIT=0.1 EVAL_STEPS=20
export MAX_STEPS="${MAX_STEPS:-40}" SAVE_STEPS=20 LOGGING_STEPS=5 LEARNING_RATE=5e-3 WARMUP_STEPS=0
export DATALOADER_NUM_WORKERS=0 RESUME=never

rm -rf "$OUT/run"  # RESUME=never refuses an OUTPUT_DIR that holds checkpoints: each demo starts from scratch
.venv/bin/torchrun --standalone --nproc_per_node=2 -m trainer train
echo
echo "demo done. Adapter checkpoints:"
find "$OUT/run" -name adapter_model.safetensors | sort
echo
echo "Listen to it (docs/synthesis.md), in a shell with the virtualenv active as README.md does it:"
echo "source .venv/bin/activate"
echo "higgs-audio-trainer synthesize --model_path $MODEL_PATH --audio_tokenizer_path $AUDIO_TOKENIZER_PATH --adapter_path $OUT/run/lora_adapters --text \"The kettle whistled on the stove.\" --output $OUT/hello.wav"
