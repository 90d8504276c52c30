"""Memory per GPU of the released configuration under DDP and FSDP on 1, 2, 4 and 8 GPUs: computed, not measured.

The parameter count and the shapes are the real configuration's (bench/results/gpu-h200.json, `model`); the
activations and workspace of a micro-batch (8 x 325 tokens) are what the measured DDP peaks there leave
once the weights' and optimizer's bytes are taken off, so the DDP rows on one GPU reproduce the
measurement and the FSDP rows change only what FSDP shards. docs/training.md shows the table and the formula.

    .venv/bin/python bench/memory_per_gpu.py [--markdown]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

GIB = 2**30
RESULTS = Path(__file__).with_name("results") / "gpu-h200.json"
MEASURED_GIB = {"full_fp32_masters": 100.8, "full_bf16_weights": 49.4, "lora": 19.1}  # DDP, 1 GPU (gpu-h200.json)


def shapes(model: dict) -> tuple[int, int, int]:
    """(all parameters, parameters of one decoder layer, parameters outside the layers)."""
    h, inter, heads, kv = model["hidden_size"], model["intermediate_size"], model["heads"], model["kv_heads"]
    head_dim = h // heads
    attention = 2 * h * h + 2 * h * kv * head_dim  # q, o; k, v
    ffns = 2 * 3 * h * inter  # the text FFN and the audio FFN, gate/up/down each
    norms = 4 * h  # input and post-attention norms of both paths
    layer = attention + ffns + norms
    total = model["parameters"]
    return total, layer, total - model["layers"] * layer


def lora_trainable(model: dict, rank: int = 16) -> int:
    """LoRA parameters of r=`rank` on q/k/v/o: A (r x in) and B (out x r) per projection and layer."""
    h, kv = model["hidden_size"], model["kv_heads"] * (model["hidden_size"] // model["heads"])
    per_layer = rank * ((h + h) + (h + kv) + (h + kv) + (h + h))
    return model["layers"] * per_layer


def table(model: dict) -> dict:
    """Every row of the table, in GiB, with the terms it is made of."""
    n, layer, root = shapes(model)
    lora = lora_trainable(model)
    modes = {
        # (sharded state bytes, DDP's extra bytes, FSDP's gathered working set bytes)
        # fp32 masters: weight 4 + gradient 4 + AdamW moments 8 = 16 B per parameter; under bf16 autocast DDP
        # also keeps a bf16 copy of every weight (2 B); FSDP gathers bf16 copies of the root and two layers
        # (the one running and the one prefetched) and holds fp32 gradients of the root and one layer before
        # their reduce-scatter.
        "full_fp32_masters": (16 * n, 2 * n, 2 * (root + 2 * layer) + 4 * (root + layer)),
        # bf16 weights, gradients and AdamW moments: 2 + 2 + 4 = 8 B per parameter; no autocast copies.
        "full_bf16_weights": (8 * n, 0, 2 * (root + 2 * layer) + 2 * (root + layer)),
        # LoRA: the frozen bf16 base (2 B) plus 16 B per trainable adapter parameter (fp32 + AdamW).
        "lora": (2 * n + 16 * lora, 0, 2 * (root + 2 * layer)),
    }
    rows = {}
    for mode, (state, ddp_extra, gathered) in modes.items():
        activations = MEASURED_GIB[mode] * GIB - state - ddp_extra
        rows[mode] = {
            "state_gib": round(state / GIB, 1), "ddp_extra_gib": round(ddp_extra / GIB, 1),
            "fsdp_gathered_gib": round(gathered / GIB, 1), "activations_gib": round(activations / GIB, 1),
            "ddp_gib": {g: round((state + ddp_extra + activations) / GIB, 1) for g in (1, 2, 4, 8)},
            "fsdp_gib": {g: round((state / g + gathered + activations) / GIB, 1) for g in (1, 2, 4, 8)},
        }
    return {"parameters": n, "layer_parameters": layer, "root_parameters": root, "lora_parameters": lora,
            "measured_ddp_1_gpu_gib": MEASURED_GIB, "rows": rows}


def markdown(result: dict) -> str:
    names = {"full_fp32_masters": "full, fp32 masters", "full_bf16_weights": "full, bf16 weights", "lora": "LoRA r=16"}
    lines = ["| mode | state S | activations A | DDP, any count | FSDP 1 | FSDP 2 | FSDP 4 | FSDP 8 |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for mode, row in result["rows"].items():
        fsdp = " | ".join(f"{row['fsdp_gib'][g]}" for g in (1, 2, 4, 8))
        ddp = row["ddp_gib"][1]
        lines.append(f"| {names[mode]} | {row['state_gib']} | {row['activations_gib']} | {ddp} | {fsdp} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--markdown", action="store_true", help="print the table of docs/training.md instead")
    ns = parser.parse_args()
    result = table(json.loads(RESULTS.read_text())["model"])
    print(markdown(result) if ns.markdown else json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
