"""The model that trains is assembled once, the same way for training and the benchmarks."""

from __future__ import annotations

import pytest
import torch

from trainer.config.options import LoraArgs, ModelArgs
from trainer.model.assemble import assemble
from trainer.model.load import load_model


def _batch(model) -> dict[str, torch.Tensor]:
    cfg = model.config
    frames = 6 + cfg.num_codebooks - 1
    ids = torch.tensor([[1] * 4 + [cfg.audio_token_id] * 6 + [cfg.audio_delay_token_id] * (cfg.num_codebooks - 1)
                        + [2]])
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids),
            "audio_input_ids": torch.randint(0, 10, (1, frames, cfg.num_codebooks)),
            "audio_input_ids_mask": torch.ones(1, frames, dtype=torch.bool)}


def test_float32_audio_embeddings_as_cuda_autocast_sums_them_still_fit_a_bf16_model_fake_gpu(tiny_ckpt) -> None:
    # CUDA autocast runs the sum over codebooks in float32 (seen on an H200: every bf16 LoRA run failed at its
    # first forward). There is no GPU here, so the audio embedding table is made float32 instead: its sum then
    # reaches the bf16 text embeddings as float32, exactly as under CUDA autocast.
    args = ModelArgs(model_path=str(tiny_ckpt[0]), audio_tokenizer_path=str(tiny_ckpt[1]))
    plain = load_model(args, torch.bfloat16)
    plain.model.embed_audio_tokens.embed_audio_tokens.float()
    with pytest.raises(RuntimeError, match="masked_scatter"):
        plain(**_batch(plain))

    model = load_model(args, torch.bfloat16)
    model.model.embed_audio_tokens.embed_audio_tokens.float()
    model = assemble(model, args, LoraArgs(use_lora=True))
    logits = model(**_batch(model)).logits
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits.float()).all()
