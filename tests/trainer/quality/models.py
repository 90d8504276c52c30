"""Tiny random checkpoints of the real recognizer and speaker-embedding classes (Whisper, WavLM x-vector), saved
with `save_pretrained` and loaded through `from_pretrained` like real ones: the quality path runs offline."""

from __future__ import annotations

import json
from pathlib import Path


def tiny_whisper(d: Path) -> Path:
    import torch
    from transformers import (
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizer,
    )

    d.mkdir(parents=True, exist_ok=True)
    vocab = {c: i for i, c in enumerate([*"abcdefghijklmnopqrstuvwxyz", "Ġ"])}
    specials = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>"]
    for s in specials:
        vocab[s] = len(vocab)
    (d / "vocab.json").write_text(json.dumps(vocab))
    (d / "merges.txt").write_text("#version: 0.2\n")
    end = "<|endoftext|>"
    tok = WhisperTokenizer(str(d / "vocab.json"), str(d / "merges.txt"), unk_token=end, bos_token=end,
                           eos_token=end, pad_token=end, additional_special_tokens=specials[1:])
    torch.manual_seed(0)
    cfg = WhisperConfig(
        vocab_size=len(vocab), num_mel_bins=16, d_model=16, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
        max_target_positions=64, decoder_start_token_id=vocab["<|startoftranscript|>"],
        eos_token_id=vocab[end], pad_token_id=vocab[end], bos_token_id=vocab[end],
    )
    WhisperForConditionalGeneration(cfg).save_pretrained(d)
    WhisperProcessor(WhisperFeatureExtractor(feature_size=16), tok).save_pretrained(d)
    return d


def tiny_wavlm_xvector(d: Path) -> Path:
    import torch
    from transformers import Wav2Vec2FeatureExtractor, WavLMConfig, WavLMForXVector

    torch.manual_seed(0)
    cfg = WavLMConfig(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, conv_dim=(8, 8),
        conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
        tdnn_dim=(8, 8), tdnn_kernel=(3, 1), tdnn_dilation=(1, 1), xvector_output_dim=8, num_buckets=8,
        max_bucket_distance=16,
    )
    WavLMForXVector(cfg).save_pretrained(d)
    Wav2Vec2FeatureExtractor(sampling_rate=16000, return_attention_mask=True).save_pretrained(d)
    return d
