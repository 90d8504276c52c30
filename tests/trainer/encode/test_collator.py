"""The collator reproduces the processor's layout, and labels only target audio (plus its EOS)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import DEMO_DATA
from trainer.data.audio import load_audio
from trainer.data.load import load_conversations
from trainer.encode.code_cache import encode_waveform
from trainer.encode.collator import IGNORE, Collator, EncodedSample, Layout, delay_pattern, expand
from trainer.encode.prepare import encode_conversation


@pytest.fixture(scope="module")
def parts(tiny_ckpt: tuple[Path, Path]):
    from transformers import AutoConfig, AutoTokenizer, HiggsAudioV2TokenizerModel

    model_dir, codec_dir = tiny_ckpt
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    config = AutoConfig.from_pretrained(model_dir)
    codec = HiggsAudioV2TokenizerModel.from_pretrained(codec_dir).eval()
    return tokenizer, config, codec, Layout.from_model(config, tokenizer)


@pytest.fixture(scope="module")
def demo_conversations():
    convs, bad = load_conversations(str(DEMO_DATA), system_prompt="Generate audio following instruction.",
                                    max_audio_seconds=30)
    assert not bad
    return convs


class _MemoryCache:
    """Codes computed on the spot, keyed by clip (stands in for the on-disk cache in these unit tests)."""

    def __init__(self, codec, rate: int) -> None:
        self.codec, self.rate, self.memo = codec, rate, {}

    def get(self, clip) -> np.ndarray:
        if clip not in self.memo:
            audio = load_audio(clip.path, self.rate, clip.offset, clip.duration)
            self.memo[clip] = encode_waveform(self.codec, audio)
        return self.memo[clip]


def _encode(conv, parts) -> EncodedSample:
    tokenizer, _config, codec, layout = parts
    cache = _MemoryCache(codec, codec.config.sample_rate)
    out = encode_conversation(conv, tokenizer, layout, cache, {c: c for c in conv.clips()})  # type: ignore
    assert isinstance(out, EncodedSample), out
    return out


def test_delay_pattern_shifts_codebook_k_by_k_frames() -> None:
    codes = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    out = delay_pattern(codes, bos=10, eos=11)
    assert out.shape == (3 + 2 + 2, 3)
    assert out[:, 0].tolist() == [10, 1, 2, 3, 11, 11, 11]
    assert out[:, 1].tolist() == [10, 10, 4, 5, 6, 11, 11]
    assert out[:, 2].tolist() == [10, 10, 10, 7, 8, 9, 11]


def test_voice_cloning_labels_mask_reference_and_keep_target_codes_and_eos(demo_conversations, parts) -> None:
    layout = parts[3]
    conv = demo_conversations[0]
    assert conv.target_flags() == [False, True]  # reference audio, then the target
    sample = _encode(conv, parts)
    arrays = expand(sample, layout, text_labels=True)
    ref_frames = sample.codes[0].shape[1] + 2 + layout.num_codebooks - 1
    ref_labels, tgt_labels = arrays["audio_labels"][:ref_frames], arrays["audio_labels"][ref_frames:]
    tgt_input = arrays["audio_input_ids"][ref_frames:]
    assert (ref_labels == IGNORE).all()
    # Every target code is a label; BOS never is; every EOS in every codebook is.
    assert ((tgt_labels == tgt_input) | (tgt_input == layout.stream_bos)).all()
    assert (tgt_labels[tgt_input == layout.stream_bos] == IGNORE).all()
    for k in range(layout.num_codebooks):
        assert (tgt_labels[:, k] == layout.stream_eos).sum() == layout.num_codebooks - k
        assert (tgt_labels[:, k] >= 0).sum() == sample.codes[1].shape[1] + layout.num_codebooks - k
    # Text labels: only the closing tokens of the target turn.
    labelled = arrays["input_ids"][arrays["labels"] != IGNORE]
    tokenizer = parts[0]
    assert tokenizer.convert_ids_to_tokens(labelled.tolist()) == ["<|audio_eos|>", "<|eot_id|>"]


def test_collator_equals_the_processor_for_the_same_conversation(demo_conversations, parts) -> None:
    from transformers import DacFeatureExtractor, HiggsAudioV2Processor

    tokenizer, config, codec, layout = parts
    processor = HiggsAudioV2Processor(
        feature_extractor=DacFeatureExtractor(feature_size=1, hop_length=1, padding_side="right",
                                              padding_value=0.0, sampling_rate=24000, return_attention_mask=True),
        tokenizer=tokenizer,
        audio_tokenizer=codec,
        chat_template=tokenizer.chat_template,
        audio_stream_bos_id=config.audio_stream_bos_id,
        audio_stream_eos_id=config.audio_stream_eos_id,
    )
    for conv in demo_conversations[:3]:
        messages = [
            {"role": m["role"], "content": [
                {"type": "audio", "audio": load_audio(i["path"], 24000)} if i["type"] == "audio" else i
                for i in m["content"]]}
            for m in conv.messages
        ]
        expected = processor.apply_chat_template(messages, tokenize=True, return_dict=True, sampling_rate=24000,
                                                 return_tensors="pt")
        ours = Collator(layout)([expand(_encode(conv, parts), layout, text_labels=False)])
        assert torch.equal(ours["input_ids"], expected["input_ids"])
        assert torch.equal(ours["attention_mask"], expected["attention_mask"])
        assert torch.equal(ours["audio_input_ids"], expected["audio_input_ids"])
        assert torch.equal(ours["audio_input_ids_mask"], expected["audio_input_ids_mask"])


def test_batch_padding_keeps_each_sample_intact(demo_conversations, parts) -> None:
    layout = parts[3]
    samples = [expand(_encode(c, parts), layout, text_labels=True) for c in demo_conversations[:3]]
    batch = Collator(layout, text_labels=True)(samples)
    for i, s in enumerate(samples):
        n, f = len(s["input_ids"]), len(s["audio_input_ids"])
        assert batch["input_ids"][i, :n].tolist() == s["input_ids"].tolist()
        assert (batch["input_ids"][i, n:] == layout.pad_id).all()
        assert batch["attention_mask"][i].sum() == n
        assert batch["audio_input_ids_mask"][i].sum() == f
        assert (batch["audio_labels"][i, f:] == IGNORE).all()
        assert (batch["labels"][i, n:] == IGNORE).all()
    # The model's own placeholder count must match the audio frames of each row.
    placeholders = (batch["input_ids"] == layout.audio_token_id) | (batch["input_ids"] == layout.audio_delay_token_id)
    assert placeholders.sum(1).tolist() == batch["audio_input_ids_mask"].sum(1).tolist()
