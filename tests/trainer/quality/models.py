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


def _byte_alphabet() -> list[str]:
    """GPT-2's byte-level alphabet (one printable character per byte), which Whisper's tokenizer decodes."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


PARROT_LANGUAGES = ("en", "ar", "fr", "zh")


def parrot_whisper(d: Path, says: str | None) -> Path:
    """A real Whisper checkpoint whose weights are set by hand so that it transcribes any 30 s window as
    `says`, whatever the audio: its decoder layers add nothing (output projections zeroed), token embeddings
    are one-hot, and the position embedding of step i points at the i-th token of `says`. What it hears is
    known in advance, so the rates evaluate reports can be worked out by hand. Multilingual (PARROT_LANGUAGES)
    with a `normalizer.json` spelling map, as real Whisper checkpoints are. `says=None`: the same checkpoint
    with its random weights left as they are, so that what it hears depends on its decoder prompt."""
    import torch
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizer,
    )

    d.mkdir(parents=True, exist_ok=True)
    alphabet = _byte_alphabet()
    vocab = {c: i for i, c in enumerate(alphabet)}
    langs = [f"<|{c}|>" for c in PARROT_LANGUAGES]
    specials = ["<|endoftext|>", "<|startoftranscript|>", *langs, "<|translate|>", "<|transcribe|>",
                "<|notimestamps|>"]
    for s in specials:
        vocab[s] = len(vocab)
    (d / "vocab.json").write_text(json.dumps(vocab))
    (d / "merges.txt").write_text("#version: 0.2\n")
    (d / "normalizer.json").write_text(json.dumps({"colour": "color", "realise": "realize"}))
    end = "<|endoftext|>"
    tok = WhisperTokenizer(str(d / "vocab.json"), str(d / "merges.txt"), unk_token=end, bos_token=end,
                           eos_token=end, pad_token=end, additional_special_tokens=specials[1:])
    text_ids = [vocab[alphabet[b]] for b in (says or "").encode("utf-8")]
    prompt = 4  # <|startoftranscript|> <|lang|> <|transcribe|> <|notimestamps|>
    width = len(vocab) + (-len(vocab)) % 8
    positions = prompt + len(text_ids) + 8 if says is not None else 64
    cfg = WhisperConfig(
        vocab_size=len(vocab), num_mel_bins=80, d_model=width, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
        max_target_positions=positions, max_source_positions=1500,
        decoder_start_token_id=vocab["<|startoftranscript|>"], eos_token_id=vocab[end], pad_token_id=vocab[end],
        bos_token_id=vocab[end], suppress_tokens=[], begin_suppress_tokens=[],
        init_std=0.02 if says is not None else 0.5,  # random: large weights, so the prompt matters
    )
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(cfg)
    dec = model.model.decoder
    with torch.no_grad():
        for layer in dec.layers if says is not None else []:
            for lin in (layer.self_attn.out_proj, layer.encoder_attn.out_proj, layer.fc2):
                lin.weight.zero_()
                if lin.bias is not None:
                    lin.bias.zero_()
        if says is not None:
            dec.embed_tokens.weight.copy_(torch.eye(len(vocab), width))
        # step i predicts the token that follows position i: the language at 0 (detection), then the text, then end
        targets = [vocab["<|en|>"], vocab["<|transcribe|>"], vocab["<|notimestamps|>"], *text_ids]
        targets += [vocab[end]] * (positions - len(targets))
        if says is not None:
            dec.embed_positions.weight.copy_(10.0 * torch.eye(len(vocab), width)[targets])
    model.generation_config = GenerationConfig(
        decoder_start_token_id=cfg.decoder_start_token_id, eos_token_id=vocab[end], pad_token_id=vocab[end],
        is_multilingual=True, lang_to_id={s: vocab[s] for s in langs},
        task_to_id={"transcribe": vocab["<|transcribe|>"], "translate": vocab["<|translate|>"]},
        no_timestamps_token_id=vocab["<|notimestamps|>"], max_length=positions, suppress_tokens=[],
        begin_suppress_tokens=[],
    )
    model.save_pretrained(d)
    WhisperProcessor(WhisperFeatureExtractor(feature_size=80), tok).save_pretrained(d)
    return d
