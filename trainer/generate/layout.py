"""A prompt as the model sees it, built by the code that lays out training samples, and generated codes back
to plain codes.

The prompt is the training layout of the same conversation cut right after the target turn's
`<|audio_out_bos|>`: `pair_messages` builds the conversation, `tokenize_conversation` renders it with the
checkpoint's chat template, and `expand` lays out the reference audio (delay pattern, stream BOS/EOS). Nothing
is laid out a second way, so a model is prompted exactly as it was trained.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from trainer.data.pairs import pair_messages
from trainer.encode.collator import EncodedSample, Layout, expand, tokenize_conversation

TARGET_PLACEHOLDER = "<target>"  # the audio item of the turn to generate; only its position matters


def prompt_arrays(
    tokenizer: Any,
    layout: Layout,
    system_prompt: str,
    text: str,
    reference: tuple[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """input_ids (L,) and audio_input_ids (F, codebooks) of the prompt; `reference` is (transcript, codes of
    the reference clip shaped (codebooks, frames))."""
    ref = (reference[0], "reference") if reference else None
    messages = pair_messages(system_prompt, text, TARGET_PLACEHOLDER, ref)
    ids = tokenize_conversation(tokenizer, messages, layout)
    placeholders = [i for i, t in enumerate(ids) if t == layout.audio_token_id]
    target = placeholders[-1]
    sample = EncodedSample(
        id="prompt", source="prompt", input_ids=ids[:target],
        codes=[reference[1]] if reference else [], is_target=[False] if reference else [],
    )
    arrays = expand(sample, layout, text_labels=False)
    return {"input_ids": arrays["input_ids"], "audio_input_ids": arrays["audio_input_ids"]}


def generated_codes(frames: np.ndarray, layout: Layout) -> tuple[np.ndarray, bool]:
    """Generated frames (T, codebooks), delayed and starting with the stream-BOS frame -> plain codes
    (codebooks, frames) and whether the stream ended (an all-EOS frame) rather than being cut off.

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
