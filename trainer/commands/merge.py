"""`higgs-audio-trainer merge`: fold a LoRA adapter into its base model.

The result is a plain Higgs Audio v2 checkpoint (weights, config, tokenizer and chat template) that
`HiggsAudioV2ForConditionalGeneration.from_pretrained` loads without peft.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from trainer import errors


def has_text_head(model_path: str) -> bool:
    """Whether the base checkpoint carries `text_lm_head` weights (kept through the merge)."""
    d = Path(model_path)
    index = d / "model.safetensors.index.json"
    if index.is_file():
        return any(k.startswith("text_lm_head") for k in json.loads(index.read_text())["weight_map"])
    single = d / "model.safetensors"
    if single.is_file():
        from safetensors import safe_open

        with safe_open(str(single), framework="pt") as f:
            return any(k.startswith("text_lm_head") for k in f.keys())  # noqa: SIM118
    return False


def merge(model_path: str, adapter_path: str, output_dir: str) -> Path:
    """Load base + adapter, merge, save (atomically) to `output_dir`."""
    from transformers import AutoTokenizer

    from trainer.fsmode import ensure_writable_dir
    from trainer.model.load import MODEL_TYPE, check_adapter_dir, check_checkpoint_dir, load_weights
    from trainer.train.checkpoint import atomic_dir, recover_final_outputs

    check_checkpoint_dir(model_path, MODEL_TYPE, "model_path")
    check_adapter_dir(adapter_path)
    out = Path(output_dir)
    # The merged model is written beside where it goes, then renamed: that directory must take writes, which is
    # checked before the model loads rather than found out after the merge.
    ensure_writable_dir(out.absolute().parent, f"--output_dir ({output_dir})")
    # The same loading as train and synthesize: an adapter of another base model is one line and exit code 2.
    merged = load_weights(model_path, use_text_head=has_text_head(model_path), adapter_path=adapter_path)
    merged = merged.merge_and_unload()
    # a merge killed while writing left a half-written copy (a whole model) or the previous one moved aside
    recover_final_outputs(out.parent, names=(out.name,))
    with atomic_dir(out) as tmp:
        merged.save_pretrained(str(tmp), safe_serialization=True)
        AutoTokenizer.from_pretrained(model_path).save_pretrained(str(tmp))
    return out


def run(argv: Sequence[str]) -> int:
    """`higgs-audio-trainer merge`: parse its three paths and merge; returns the exit code."""
    parser = argparse.ArgumentParser(prog="higgs-audio-trainer merge", description=__doc__)
    parser.add_argument("--model_path", required=True, help="base Higgs Audio v2 checkpoint directory")
    parser.add_argument("--adapter_path", required=True, help="a lora_adapters/ directory")
    parser.add_argument("--output_dir", required=True, help="where the merged model is written")
    ns = parser.parse_args(list(argv))
    out = merge(ns.model_path, ns.adapter_path, ns.output_dir)
    print(f"merged model written to {out}")
    return errors.OK
