"""Load Higgs Audio v2, its audio tokenizer and text tokenizer from local directories.

Everything loads through transformers' own `from_pretrained`, so a checkpoint that works here works
with transformers' generation code too. Directories are checked first (cheaply, from their JSON files)
so that a wrong path fails with a sentence naming what was found, before gigabytes are read.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.config.options import ModelArgs
from trainer.config.values import SPECS, label
from trainer.errors import ConfigError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

MODEL_TYPE, CODEC_TYPE = "higgs_audio_v2", "higgs_audio_v2_tokenizer"
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def check_checkpoint_dir(path: str, expected_type: str, option: str) -> dict[str, Any]:
    """Return the directory's config.json, or raise `ConfigError` saying what is there instead."""
    spec = SPECS[option]
    where = f"{spec.label} ({path})"
    d = Path(path)
    cfg_file = d / "config.json"
    if not cfg_file.is_file():
        found = sorted(p.name for p in d.iterdir())[:8] if d.is_dir() else []
        raise ConfigError(
            f"{where}: not a transformers-format checkpoint: no config.json (found: {', '.join(found) or 'nothing'}). "
            f"Expected a directory saved with save_pretrained whose config.json has model_type {expected_type!r}."
        )
    try:
        config = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"{where}: config.json is not valid JSON: {err}") from None
    found_type = config.get("model_type")
    if found_type != expected_type:
        hint = (
            " This looks like Boson AI's original release format; convert it with transformers' "
            "convert_higgs_audio_v2_to_hf.py first."
            if found_type in ("higgs_audio", "higgs_audio_tokenizer") or "audio_tokenizer_type" in config
            else ""
        )
        raise ConfigError(
            f"{where}: config.json has model_type {found_type!r}, expected {expected_type!r}.{hint}"
        )
    if not any((d / w).is_file() for w in WEIGHT_FILES):
        raise ConfigError(f"{where}: no weights found (expected one of {', '.join(WEIGHT_FILES)})")
    return config


def check_tokenizer_dir(path: str, option: str) -> None:
    """The text tokenizer directory must hold a tokenizer and a chat template."""
    spec = SPECS[option]
    d = Path(path)
    if not ((d / "tokenizer.json").is_file() or (d / "tokenizer_config.json").is_file()):
        raise ConfigError(
            f"{spec.label} ({path}): no text tokenizer (tokenizer.json / tokenizer_config.json); "
            "set --tokenizer_path to the directory that holds it"
        )


def check_model_dirs(args: ModelArgs) -> None:
    """All directory checks, before anything loads."""
    assert args.model_path and args.audio_tokenizer_path
    check_checkpoint_dir(args.model_path, MODEL_TYPE, "model_path")
    check_checkpoint_dir(args.audio_tokenizer_path, CODEC_TYPE, "audio_tokenizer_path")
    if args.tokenizer_path:
        check_tokenizer_dir(args.tokenizer_path, "tokenizer_path")
    else:
        check_tokenizer_dir(args.model_path, "model_path")


def load_text_tokenizer(args: ModelArgs):
    """The Llama-3 text tokenizer with its chat template; a pad token is required for batching."""
    from transformers import AutoTokenizer

    path = args.tokenizer_path or args.model_path
    tokenizer = AutoTokenizer.from_pretrained(path)
    if not tokenizer.chat_template:
        raise ConfigError(
            f"{path}: the tokenizer has no chat template (chat_template.jinja or tokenizer_config.json "
            "'chat_template'); the Higgs Audio v2 conversation format needs it"
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_audio_tokenizer(args: ModelArgs, device: str | torch.device = "cpu"):
    """The audio codec, in eval mode and without gradients: it only ever encodes here."""
    from transformers import HiggsAudioV2TokenizerModel

    codec = HiggsAudioV2TokenizerModel.from_pretrained(args.audio_tokenizer_path).to(device).eval()
    codec.requires_grad_(False)
    return codec


def check_vocabulary(model_config: Any, tokenizer: Any, codec_config: Any) -> None:
    """The model, text tokenizer and audio tokenizer must agree on special ids and codebooks."""
    problems = []
    for attr, token in (
        ("audio_token_id", "<|AUDIO_OUT|>"),
        ("audio_bos_token_id", "<|audio_out_bos|>"),
        ("audio_delay_token_id", "<|reserved_special_token_6|>"),
    ):
        tid = tokenizer.convert_tokens_to_ids(token)
        if tid != getattr(model_config, attr):
            problems.append(f"{attr} is {getattr(model_config, attr)} but the tokenizer maps {token} to {tid}")
    if codec_config.num_quantizers != model_config.num_codebooks:
        problems.append(
            f"the audio tokenizer has {codec_config.num_quantizers} codebooks, the model {model_config.num_codebooks}"
        )
    if model_config.audio_stream_eos_id >= model_config.codebook_size:
        problems.append("audio_stream_eos_id must be below codebook_size")
    if problems:
        raise ConfigError("model, tokenizer and audio tokenizer do not match: " + "; ".join(problems))


def load_model(args: ModelArgs, dtype: torch.dtype):
    """`HiggsAudioV2ForConditionalGeneration` from `model_path` for training, with the text head when asked for."""
    model = load_weights(args.model_path, dtype=dtype, use_text_head=args.use_text_head,
                         attn_implementation=args.attn_implementation)
    model.config.use_cache = False  # no KV cache in training; it only costs memory
    return model


def load_weights(model_path: str, *, dtype: Any = None, use_text_head: bool = False,
                 attn_implementation: str | None = None, adapter_path: str | None = None) -> Any:
    """The one way train, synthesize and merge load a model.

    The base from `model_path`, and with `adapter_path` its LoRA adapter (checked first, attached with
    `attach_adapter`), so that each mistake gets the same line.
    """
    from transformers import HiggsAudioV2ForConditionalGeneration

    if adapter_path:
        check_adapter_dir(adapter_path)
    kwargs: dict[str, Any] = {"use_text_head": use_text_head}
    if dtype is not None:
        kwargs["dtype"] = dtype
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    model = HiggsAudioV2ForConditionalGeneration.from_pretrained(model_path, **kwargs)
    return attach_adapter(model, adapter_path) if adapter_path else model


def check_adapter_dir(path: str) -> None:
    """A LoRA adapter folder, checked before any model loads."""
    d = Path(path)
    if not d.is_dir():
        raise ConfigError(f"{label('adapter_path')}: adapter folder not found: {path}")
    cfg = d / "adapter_config.json"
    if not cfg.is_file():
        raise ConfigError(f"{label('adapter_path')} ({path}): no adapter_config.json; expected a "
                          "lora_adapters/ folder (a checkpoint's checkpoint-N/lora_adapters or the final one)")
    try:
        json.loads(cfg.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"{label('adapter_path')} ({path}): adapter_config.json is not valid JSON: {err}") \
            from None


def attach_adapter(model: Any, path: str) -> Any:
    """The model with the LoRA adapter at `path` loaded; an adapter of another base model is a ConfigError."""
    from peft import PeftModel

    from trainer.model.assemble import quiet_peft

    try:
        with quiet_peft():
            return PeftModel.from_pretrained(model, path)
    except (RuntimeError, ValueError, KeyError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(
            f"{label('adapter_path')} ({path}): the adapter does not fit this base model "
            f"(--model_path): {first[:300]}"
        ) from None


@dataclass
class Parts:
    """What every command needs before the model itself: the text tokenizer and both configs, checked to match."""

    tokenizer: Any
    model_config: Any
    codec_config: Any


def load_parts(args: ModelArgs) -> Parts:
    """Check the directories, load the text tokenizer and both configs, and check that they fit together.

    The one path by which training, `prepare`, the benchmarks and generation start: cheap (JSON and the
    tokenizer), so a wrong directory or a mismatched pair fails before any weights are read.
    """
    from transformers import AutoConfig

    check_model_dirs(args)
    tokenizer = load_text_tokenizer(args)
    model_config = AutoConfig.from_pretrained(args.model_path)
    codec_config = AutoConfig.from_pretrained(args.audio_tokenizer_path)
    check_vocabulary(model_config, tokenizer, codec_config)
    return Parts(tokenizer, model_config, codec_config)
