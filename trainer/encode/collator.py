"""Cached audio codes + rendered conversations -> the model's training inputs.

The layout is exactly what `HiggsAudioV2Processor.apply_chat_template` produces for the same
conversation (a test checks this); the labels follow voice-cloning practice rather than the processor's.
`expand` says how both are built.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

IGNORE = -100


@dataclass(frozen=True)
class Layout:
    """The special ids that shape a sequence; read from the model config and tokenizer."""

    pad_id: int
    audio_token_id: int
    audio_delay_token_id: int
    eot_id: int
    stream_bos: int
    stream_eos: int
    num_codebooks: int

    @classmethod
    def from_model(cls, model_config: Any, tokenizer: Any) -> Layout:
        """The layout's token ids, read from the checkpoint's config and tokenizer rather than written down here."""
        return cls(
            pad_id=tokenizer.pad_token_id,
            audio_token_id=model_config.audio_token_id,
            audio_delay_token_id=model_config.audio_delay_token_id,
            eot_id=tokenizer.convert_tokens_to_ids("<|eot_id|>"),
            stream_bos=model_config.audio_stream_bos_id,
            stream_eos=model_config.audio_stream_eos_id,
            num_codebooks=model_config.num_codebooks,
        )


@dataclass
class EncodedSample:
    """One conversation, tokenized, with the codes of its audio in placeholder order."""

    id: str
    source: str
    input_ids: list[int]  # one audio placeholder per segment
    codes: list[np.ndarray]  # (codebooks, frames) per segment
    is_target: list[bool]  # per segment
    text_target_positions: list[int] = field(default_factory=list)  # indices into input_ids

    def num_tokens(self, num_codebooks: int) -> int:
        """Sequence length after expansion: the cost of this sample in a batch."""
        return len(self.input_ids) + sum(c.shape[1] + 2 + num_codebooks - 2 for c in self.codes)

    def target_frames(self) -> int:
        """Audio frames the model learns to speak in this sample: those of its target segments."""
        return sum(c.shape[1] for c, t in zip(self.codes, self.is_target, strict=True) if t)


def delay_pattern(codes: np.ndarray, bos: int, eos: int) -> np.ndarray:
    """(codebooks, frames) -> (frames + 2 + codebooks - 1, codebooks): BOS/EOS added, codebook k delayed by k."""
    k, t = codes.shape
    out = np.empty((k, t + 2 + k - 1), dtype=np.int64)
    for c in range(k):
        out[c, :c + 1] = bos
        out[c, c + 1:c + 1 + t] = codes[c]
        out[c, c + 1 + t:] = eos
    return out.T


def tokenize_conversation(tokenizer: Any, messages: list[dict], layout: Layout) -> list[int]:
    """Render with the checkpoint's own chat template and tokenize (BOS once, as the processor does)."""
    prompt = tokenizer.apply_chat_template(messages, tokenize=False)
    add_special = not (tokenizer.bos_token and prompt.startswith(tokenizer.bos_token))
    return list(tokenizer(prompt, add_special_tokens=add_special)["input_ids"])


def text_targets_after(input_ids: list[int], placeholder_positions: list[int], eot_id: int) -> list[int]:
    """Positions from each target placeholder's successor up to and including the turn's <|eot_id|>."""
    out: list[int] = []
    for pos in placeholder_positions:
        j = pos + 1
        while j < len(input_ids):
            out.append(j)
            if input_ids[j] == eot_id:
                break
            j += 1
    return out


def expand(sample: EncodedSample, layout: Layout, text_labels: bool) -> dict[str, np.ndarray]:
    """One sample's arrays: input_ids, labels (L,), audio_input_ids, audio_labels (F, codebooks).

    The layout is the processor's: each audio placeholder becomes `frames + 2` `<|AUDIO_OUT|>` tokens and
    `codebooks - 1` delay tokens, and the codes get a stream BOS and EOS and the delay pattern (codebook k
    shifted right by k frames).

    The labels follow voice-cloning practice rather than the processor's: only target audio (assistant
    turns at or after `start_index`) is supervised, reference audio is context, stream BOS frames are
    never targets, and every stream EOS of a target is a target so that the model learns to stop.
    With a text head, the closing tokens of target turns (`<|audio_eos|><|eot_id|>`) are the text targets.
    """
    k = layout.num_codebooks
    ids: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    audio: list[np.ndarray] = []
    audio_labels: list[np.ndarray] = []
    text_targets = set(sample.text_target_positions) if text_labels else set()
    start = 0
    input_ids = sample.input_ids
    placeholder_positions = [i for i, t in enumerate(input_ids) if t == layout.audio_token_id]
    if len(placeholder_positions) != len(sample.codes):
        raise ValueError(
            f"{sample.source}: {len(placeholder_positions)} audio placeholders for {len(sample.codes)} audio clips"
        )
    for seg, pos in enumerate([*placeholder_positions, len(input_ids)]):
        chunk = np.asarray(input_ids[start:pos], dtype=np.int64)
        ids.append(chunk)
        labels.append(
            np.asarray([t if (start + i) in text_targets else IGNORE for i, t in enumerate(chunk)], dtype=np.int64)
        )
        if pos == len(input_ids):
            break
        delayed = delay_pattern(sample.codes[seg], layout.stream_bos, layout.stream_eos)
        frames = delayed.shape[0]
        ids.append(np.asarray([layout.audio_token_id] * (frames - (k - 1)) + [layout.audio_delay_token_id] * (k - 1)))
        labels.append(np.full(frames, IGNORE, dtype=np.int64))
        audio.append(delayed)
        if sample.is_target[seg]:
            lab = delayed.copy()
            lab[lab == layout.stream_bos] = IGNORE
        else:
            lab = np.full_like(delayed, IGNORE)
        audio_labels.append(lab)
        start = pos + 1
    empty = np.zeros((0, k), dtype=np.int64)
    return {
        "input_ids": np.concatenate(ids).astype(np.int64),
        "labels": np.concatenate(labels).astype(np.int64),
        "audio_input_ids": np.concatenate(audio) if audio else empty,
        "audio_labels": np.concatenate(audio_labels) if audio_labels else empty,
    }


class SampleDataset:
    """A map-style dataset of expanded samples (a torch `Dataset` by protocol: `__len__`, `__getitem__`)."""

    def __init__(self, samples: Sequence[EncodedSample], layout: Layout, text_labels: bool) -> None:
        self.samples = samples
        self.layout = layout
        self.text_labels = text_labels

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        return expand(self.samples[i], self.layout, self.text_labels)

    def lengths(self) -> Sequence[int]:
        """Every sample's expanded length, for the length-grouped sampler.

        From the dataset index when there is one (memory-mapped, no pass over the samples), else counted from
        the samples in memory.
        """
        if hasattr(self.samples, "lengths"):
            return self.samples.lengths()
        return [s.num_tokens(self.layout.num_codebooks) for s in self.samples]


@dataclass
class Collator:
    """Pads expanded samples into a batch (text right-padded with pad, audio with stream EOS)."""

    layout: Layout
    text_labels: bool = False

    def __call__(self, features: list[dict[str, np.ndarray]]) -> dict[str, Any]:
        """One padded batch of expanded samples, with the labels and masks the model's loss reads."""
        import torch

        lay = self.layout
        b = len(features)
        seq = max(len(f["input_ids"]) for f in features)
        frames = max(len(f["audio_input_ids"]) for f in features)
        input_ids = torch.full((b, seq), lay.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((b, seq), dtype=torch.long)
        labels = torch.full((b, seq), IGNORE, dtype=torch.long)
        audio_ids = torch.full((b, frames, lay.num_codebooks), lay.stream_eos, dtype=torch.long)
        audio_mask = torch.zeros((b, frames), dtype=torch.bool)
        audio_labels = torch.full((b, frames, lay.num_codebooks), IGNORE, dtype=torch.long)
        for i, f in enumerate(features):
            n, m = len(f["input_ids"]), len(f["audio_input_ids"])
            input_ids[i, :n] = torch.from_numpy(f["input_ids"])
            attention_mask[i, :n] = 1
            labels[i, :n] = torch.from_numpy(f["labels"])
            audio_ids[i, :m] = torch.from_numpy(f["audio_input_ids"])
            audio_mask[i, :m] = True
            audio_labels[i, :m] = torch.from_numpy(f["audio_labels"])
        batch = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "audio_input_ids": audio_ids,
            "audio_input_ids_mask": audio_mask,
            "audio_labels": audio_labels,
        }
        if self.text_labels and bool((labels != IGNORE).any()):  # decided here, on the host, for free
            batch["labels"] = labels
        return batch
