"""A prompt as the model sees it, laid out by the training code, and generated codes back to plain codes.

The prompt is the training layout of the same conversation cut right after the target turn's
`<|audio_out_bos|>`: the conversation is the training sample's own up to its target turn, or `pair_messages`'s
for a text (with the prompt's system message and scene), `tokenize_conversation` renders it with the
checkpoint's chat template, and `expand` lays out the reference audio (delay pattern, stream BOS/EOS). Nothing
is laid out a second way, so a model is prompted exactly as it was trained.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from trainer.data.pairs import pair_messages
from trainer.data.samples import Clip
from trainer.encode.collator import EncodedSample, Layout, expand, tokenize_conversation
from trainer.generate.prompts import Prompt

TARGET_PLACEHOLDER = "<target>"  # the audio item of the turn to generate; only its position matters


def prompt_messages(prompt: Prompt, default_system: str) -> list[dict]:
    """The conversation of `prompt`, ending with the assistant turn to generate (its audio a placeholder).

    A prompt taken from training data carries its conversation up to the target turn (`context`: its own
    system message, scene and every reference); any other is laid out by `pair_messages`, as training lays out
    a transcript and its clip, with the prompt's own `system` (else `default_system`, --system_prompt) and
    `scene`.
    """
    target = {"role": "assistant", "content": [{"type": "audio", "path": TARGET_PLACEHOLDER}]}
    if prompt.context is not None:
        return [*prompt.context, target]
    return pair_messages(prompt.system if prompt.system is not None else default_system, prompt.text,
                         TARGET_PLACEHOLDER, prompt.reference, prompt.scene)


def context_clips(messages: list[dict]) -> list[Clip]:
    """The audio clips of `messages` before the target turn (the last message), in order: the references."""
    return [Clip.of(item) for m in messages[:-1] for item in m["content"] if item["type"] == "audio"]


def prompt_arrays(
    tokenizer: Any, layout: Layout, messages: list[dict], codes: list[np.ndarray]
) -> dict[str, np.ndarray]:
    """input_ids (L,) and audio_input_ids (F, codebooks) of the prompt `messages` (`prompt_messages`).

    `context_clips` holds the codes (codebooks, frames) of each of its clips.
    """
    ids = tokenize_conversation(tokenizer, messages, layout)
    placeholders = [i for i, t in enumerate(ids) if t == layout.audio_token_id]
    if len(placeholders) != len(codes) + 1:
        raise ValueError(f"the prompt has {len(placeholders) - 1} reference clips, and codes for {len(codes)}")
    sample = EncodedSample(id="prompt", source="prompt", input_ids=ids[:placeholders[-1]], codes=list(codes),
                           is_target=[False] * len(codes))
    arrays = expand(sample, layout, text_labels=False)
    return {"input_ids": arrays["input_ids"], "audio_input_ids": arrays["audio_input_ids"]}


def generated_codes(frames: np.ndarray, layout: Layout) -> tuple[np.ndarray, bool]:
    """Generated frames (T, codebooks) -> plain codes (codebooks, frames), and whether the stream ended.

    The frames are delayed and start with the stream-BOS frame; the stream ended when it holds an all-EOS frame,
    rather than being cut off.

    The inverse of `trainer.encode.collator.delay_pattern`: codebook k is read k frames later.
    """
    k = layout.num_codebooks
    body = frames[1:] if len(frames) and (frames[0] == layout.stream_bos).all() else frames
    ends = np.nonzero((body == layout.stream_eos).all(axis=1))[0]
    ended = len(ends) > 0
    body = body[: ends[0]] if ended else body
    n = max(0, len(body) - (k - 1))
    codes = np.stack([body[c:c + n, c] for c in range(k)]) if n else np.zeros((k, 0), dtype=np.int64)
    # a cut-off stream can hold BOS/EOS in its last delayed frames; the codec knows only real codes
    return np.clip(codes, 0, layout.stream_bos - 1), ended
