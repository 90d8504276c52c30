"""Synthesize's inputs checked before a model loads.

Every reference clip, every output file, and every prompt's length against the model's context.

Loading the real model takes minutes; a reference that is not audio, a clip that would replace an earlier one
or a text the model cannot hold must be named in milliseconds, not after the load or halfway through a batch.
Each check raises `ConfigError` (exit 2) naming the option, or the file and line of a batch.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from trainer.errors import AudioError, ConfigError
from trainer.generate.prompts import Prompt


def prompt_lines(path: str) -> dict[str, int]:
    """Line number of each prompt id of a JSONL file already read by `read_prompts` (same id rule)."""
    p, lines = Path(path), {}
    for lineno, line in enumerate(p.read_text(encoding="utf-8-sig").splitlines(), start=1):
        if line.strip():
            given = json.loads(line).get("id")
            lines[str(given) if given is not None and str(given) else f"{p.stem}-{lineno}"] = lineno
    return lines


def check_reference(path: str, where: str, max_seconds: float) -> None:
    """A reference clip that decodes, holds samples, and is at most `max_seconds` long.

    The header says how long before anything is decoded, so a 10-minute file costs nothing.
    """
    from trainer.data.audio import audio_info, load_audio

    try:
        seconds, rate = audio_info(path)
        if seconds > max_seconds:
            raise ConfigError(f"{where}: reference audio {path} is {seconds:.1f} s, over --max_reference_seconds "
                              f"{max_seconds:g} (a few seconds of the voice are enough)")
        load_audio(path, rate)  # the whole body: a damaged file or NaN samples are found now, not after the load
    except AudioError as err:
        raise ConfigError(f"{where}: reference audio {err}") from None


def check_outputs(paths: list[Path], option: str, overwrite: bool) -> None:
    """Refuse to replace files that exist unless `overwrite`."""
    existing = [p for p in paths if p.exists()]
    if existing and not overwrite:
        more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
        raise ConfigError(f"{option}: {existing[0]}{more} already exists; pass --overwrite to replace it, or choose "
                          "another name")


def check_prompt_lengths(prompts: list[Prompt], wheres: list[str], parts: Any, system_prompt: str,
                         max_seconds: float) -> None:
    """Each prompt plus the longest generation fits the model's positions (max_position_embeddings).

    The prompt is laid out by the code that lays it out for generation (the line's own system message and
    scene, else `system_prompt`), with zero codes of each reference's length standing in for its encoding
    (only their number counts).
    """
    from trainer.data.audio import audio_info
    from trainer.encode.collator import Layout
    from trainer.generate.layout import context_clips, prompt_arrays, prompt_messages

    limit = getattr(parts.model_config, "max_position_embeddings", None)
    if not limit:
        return
    layout = Layout.from_model(parts.model_config, parts.tokenizer)
    frame_rate = float(parts.codec_config.frame_rate)
    generated = max(1, math.floor(max_seconds * frame_rate)) + layout.num_codebooks
    for prompt, where in zip(prompts, wheres, strict=True):
        messages = prompt_messages(prompt, system_prompt)
        codes = []
        for clip in context_clips(messages):
            seconds = clip.duration if clip.duration is not None else audio_info(clip.path)[0] - clip.offset
            codes.append(np.zeros((layout.num_codebooks, math.ceil(seconds * frame_rate)), dtype=np.int64))
        used = len(prompt_arrays(parts.tokenizer, layout, messages, codes)["input_ids"])
        if used + generated > int(limit):
            raise ConfigError(
                f"{where}: the prompt takes {used} positions (system prompt, text and reference) and up to "
                f"{generated} more are generated (--max_synthesis_seconds {max_seconds:g}): {used + generated}, "
                f"over the model's context of {limit} positions (max_position_embeddings); shorten the text or "
                "the reference, or lower --max_synthesis_seconds"
            )
