"""Build a tiny random Higgs Audio v2 checkpoint: the fixture of the demo and the tests.

No weights can be downloaded where this project is tested, so the demo and the tests build a model,
an audio tokenizer and a text tokenizer of the real classes with tiny random weights, save them with
`save_pretrained`, and load them back through the same `from_pretrained` path a real checkpoint takes.
The text tokenizer is a small byte-level BPE with the Higgs special tokens and a chat template that
renders conversations in the real checkpoint's format (Llama-3 headers; system, scene, user and
assistant roles; assistant turns hold audio only).
"""

from __future__ import annotations

import json
from pathlib import Path

# The chat format of Higgs Audio v2 checkpoints: Llama-3 headers, a required system message, an
# optional scene message folded into the system turn, assistant turns that are one audio placeholder.
CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- if messages[0]['role'] != 'system' %}{{- raise_exception('A system message is required') }}{%- endif %}"
    "{%- set sys = messages[0]['content'] %}"
    "{%- if sys is not string %}{%- set sys = sys[0]['text'] %}{%- endif %}"
    "{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' + (sys | trim) }}"
    "{%- set rest = messages[1:] %}"
    "{%- if rest and rest[0]['role'] == 'scene' %}"
    "{{- '\\n\\n<|scene_desc_start|>\\n' }}"
    "{%- if rest[0]['content'] is string %}{{- rest[0]['content'] | trim }}"
    "{%- else %}{%- for item in rest[0]['content'] %}"
    "{%- if item['type'] == 'text' %}{{- item['text'] | trim }}"
    "{%- if loop.first and not loop.last %}{{- '\\n\\n' }}{%- endif %}"
    "{%- if not loop.first and not loop.last and rest[0]['content'][loop.index]['type'] != 'audio' %}"
    "{{- '\\n' }}{%- endif %}"
    "{%- elif item['type'] == 'audio' %}{{- ' <|audio_out_bos|><|AUDIO_OUT|><|audio_eos|>' }}"
    "{%- if not loop.last %}{{- '\\n' }}{%- endif %}{%- endif %}"
    "{%- endfor %}{%- endif %}"
    "{{- '\\n<|scene_desc_end|>' }}"
    "{%- set rest = rest[1:] %}"
    "{%- endif %}"
    "{{- '<|eot_id|>' }}"
    "{%- for m in rest %}"
    "{{- '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' }}"
    "{%- if m['role'] == 'assistant' %}"
    "{%- if m['content'] is string or m['content'][0]['type'] != 'audio' %}"
    "{{- raise_exception('Assistant messages must contain audio content only') }}{%- endif %}"
    "{{- '<|audio_out_bos|><|AUDIO_OUT|><|audio_eos|>' }}"
    "{%- elif m['content'] is string %}{{- m['content'] | trim }}"
    "{%- else %}{%- for item in m['content'] %}{%- if item['type'] == 'text' %}{{- item['text'] | trim }}"
    "{%- endif %}{%- endfor %}{%- endif %}"
    "{{- '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n<|audio_out_bos|>' }}"
    "{%- endif %}"
)

BOS, EOS = "<|begin_of_text|>", "<|end_of_text|>"
SPECIAL_TOKENS = [
    BOS,
    EOS,
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|scene_desc_start|>",
    "<|scene_desc_end|>",
    "<|audio_bos|>",
    "<|audio_eos|>",
    "<|audio_out_bos|>",
    "<|AUDIO|>",
    "<|AUDIO_OUT|>",
    "<|reserved_special_token_6|>",
]
AUDIO_TOKEN, AUDIO_BOS_TOKEN, AUDIO_DELAY_TOKEN = "<|AUDIO_OUT|>", "<|audio_out_bos|>", "<|reserved_special_token_6|>"

_CORPUS = (
    "The quick brown fox jumps over the lazy dog. Generate audio following instruction. "
    "Audio is recorded from a quiet room. She sells sea shells by the sea shore. "
    "How much wood would a woodchuck chuck if a woodchuck could chuck wood? "
    "Speech synthesis turns written words into spoken ones, one sentence at a time. "
    "0123456789 , . ; : ! ? ' \" ( ) - the of and to in is it you that he was for on are with as his they be at"
)


def build_text_tokenizer(vocab_size: int = 512, extra_text: str = ""):
    """A byte-level BPE tokenizer with the Higgs special tokens and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    bpe = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([_CORPUS, extra_text], trainer=bpe)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=EOS,
        chat_template=CHAT_TEMPLATE,
        model_max_length=8192,
    )


def tiny_audio_tokenizer_config(num_codebooks: int = 2, codebook_size: int = 14):
    """A HiggsAudioV2TokenizerConfig with the real frame rate (25 Hz at 24 kHz) and tiny layers."""
    import math

    from transformers import HiggsAudioV2TokenizerConfig

    frame_rate, nbits = 25, math.ceil(math.log2(codebook_size))
    bandwidth = num_codebooks * frame_rate * nbits / 1000
    return HiggsAudioV2TokenizerConfig(
        target_bandwidths=[bandwidth],
        codebook_size=codebook_size,
        codebook_dim=8,
        acoustic_model_config={
            "encoder_hidden_size": 4,
            "downsampling_ratios": [8, 5, 4, 2, 3],
            "decoder_hidden_size": 64,
            "upsampling_ratios": [8, 5, 4, 2, 3],
            "hidden_size": 16,
        },
        semantic_model_config={
            "hidden_size": 16,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "intermediate_size": 32,
            "conv_dim": [8] * 7,
            "num_conv_pos_embeddings": 16,
            "num_conv_pos_embedding_groups": 2,
        },
    )


def build_tiny_checkpoint(
    out_dir: str | Path,
    *,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_codebooks: int = 2,
    codebook_size: int = 14,
    seed: int = 0,
    use_text_head: bool = True,
) -> tuple[Path, Path]:
    """Write `out_dir/model` and `out_dir/audio_tokenizer`; return both paths.

    The model's audio vocabulary is `codebook_size + 2` (stream BOS and EOS follow the codes), as in the
    real checkpoint (1024 codes, BOS 1024, EOS 1025, codebook_size 1026). `use_text_head` saves the text
    head too, so that runs with `--use_text_head` load it instead of initialising it at random.
    """
    import torch
    from transformers import (
        HiggsAudioV2Config,
        HiggsAudioV2ForConditionalGeneration,
        HiggsAudioV2TokenizerModel,
    )

    out = Path(out_dir)
    model_dir, codec_dir = out / "model", out / "audio_tokenizer"
    torch.manual_seed(seed)
    tokenizer = build_text_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    heads = max(2, hidden_size // 64) if hidden_size >= 256 else max(2, hidden_size // 8)
    config = HiggsAudioV2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 2),
        head_dim=hidden_size // heads,
        max_position_embeddings=4096,
        num_codebooks=num_codebooks,
        codebook_size=codebook_size + 2,
        audio_stream_bos_id=codebook_size,
        audio_stream_eos_id=codebook_size + 1,
        audio_token_id=ids[AUDIO_TOKEN],
        audio_bos_token_id=ids[AUDIO_BOS_TOKEN],
        audio_delay_token_id=ids[AUDIO_DELAY_TOKEN],
        pad_token_id=ids[EOS],
        bos_token_id=ids[BOS],
        eos_token_id=ids["<|eot_id|>"],
    )
    model = HiggsAudioV2ForConditionalGeneration(config, use_text_head=use_text_head)
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    codec = HiggsAudioV2TokenizerModel(tiny_audio_tokenizer_config(num_codebooks, codebook_size))
    # The quantizer codebooks start at zero, which maps every frame to code 0; small random codebooks
    # give speech-dependent codes, so the demo and the tests learn something real.
    with torch.no_grad():
        for quantizer in codec.quantizer.quantizers:
            quantizer.codebook.embed.copy_(torch.randn_like(quantizer.codebook.embed) * 0.01)
    codec.save_pretrained(codec_dir)
    (out / "README.md").write_text(
        "Tiny random Higgs Audio v2 checkpoint built by `higgs-audio-trainer make-tiny-model`: "
        "real classes, random weights, for demos and tests only.\n"
    )
    (out / "tiny.json").write_text(
        json.dumps({"hidden_size": hidden_size, "num_layers": num_layers, "num_codebooks": num_codebooks,
                    "codebook_size": codebook_size, "seed": seed}, indent=2)
    )
    return model_dir, codec_dir
