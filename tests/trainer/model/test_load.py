"""Model loading, LoRA targets and modules_to_save, and the consistency checks between the parts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from trainer.config.options import LoraArgs, ModelArgs
from trainer.errors import ConfigError
from trainer.model.assemble import apply_lora
from trainer.model.load import check_model_dirs, check_vocabulary, load_model


def _model(tiny_ckpt):
    return load_model(ModelArgs(model_path=str(tiny_ckpt[0]), audio_tokenizer_path=str(tiny_ckpt[1])), torch.float32)


def test_default_lora_targets_attention_projections_only(tiny_ckpt) -> None:
    model = apply_lora(_model(tiny_ckpt), LoraArgs(use_lora=True))
    adapted = {n.rsplit(".lora_A", 1)[0].rsplit(".", 1)[-1] for n, _ in model.named_parameters() if ".lora_A" in n}
    assert adapted == {"q_proj", "k_proj", "v_proj", "o_proj"}
    assert all(not p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)


def test_regex_targets_the_audio_ffn_only(tiny_ckpt) -> None:
    args = LoraArgs(use_lora=True, lora_target_modules=[r"re:.*audio_mlp\.(gate|up|down)_proj"])
    model = apply_lora(_model(tiny_ckpt), args)
    adapted = [n for n, _ in model.named_parameters() if ".lora_A" in n]
    assert adapted and all(".audio_mlp." in n for n in adapted)
    assert len(adapted) == 3 * 2  # three projections in each of the two layers


def test_modules_to_save_adapter_reloads_with_peft(tiny_ckpt, tmp_path) -> None:
    from peft import PeftModel

    args = LoraArgs(use_lora=True, lora_modules_to_save=["audio_head", "audio_embedding"])
    model = apply_lora(_model(tiny_ckpt), args)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.01 * torch.randn_like(p))
    model.save_pretrained(tmp_path / "adapter")
    reloaded = PeftModel.from_pretrained(_model(tiny_ckpt), tmp_path / "adapter")
    ids = torch.tensor([[1, 2, 3, 4]])
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids).logits, reloaded(input_ids=ids).logits, atol=1e-6)
    saved = set(json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["modules_to_save"])
    assert saved == {"audio_lm_head", "embed_audio_tokens.embed_audio_tokens"}


def test_mismatched_tokenizer_and_model_are_rejected(tiny_ckpt) -> None:
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(tiny_ckpt[0])
    tokenizer = AutoTokenizer.from_pretrained(tiny_ckpt[0])
    codec = AutoConfig.from_pretrained(tiny_ckpt[1])
    check_vocabulary(config, tokenizer, codec)
    config.audio_token_id += 1
    with pytest.raises(ConfigError, match="audio_token_id"):
        check_vocabulary(config, tokenizer, codec)


def test_audio_tokenizer_dir_given_as_model_dir_is_named_in_the_error(tiny_ckpt, tmp_path) -> None:
    expected = r"AUDIO_TOKENIZER_PATH.*higgs_audio_v2'.*expected 'higgs_audio_v2_tokenizer'"
    with pytest.raises(ConfigError, match=expected):
        check_model_dirs(ModelArgs(model_path=str(tiny_ckpt[0]), audio_tokenizer_path=str(tiny_ckpt[0])))


def test_model_dir_without_chat_template_tokenizer_is_rejected(tiny_ckpt, tmp_path) -> None:
    d = tmp_path / "model"
    shutil.copytree(tiny_ckpt[0], d)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (d / name).unlink()
    with pytest.raises(ConfigError, match=r"MODEL_PATH.*no text tokenizer"):
        check_model_dirs(ModelArgs(model_path=str(d), audio_tokenizer_path=str(tiny_ckpt[1])))
    assert Path(d / "config.json").is_file()
