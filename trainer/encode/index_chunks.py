"""A chunk of conversations rendered into the dataset index's columns, in one process (a worker or the builder).

The builder of a million-sample index spent as much time adding rows one at a time as rendering them, and a
worker's lists of ints cost more to pickle than the rendering saved. So a chunk comes back as NumPy columns (token
ids concatenated with per-sample lengths, clip keys as rows of the chunk's distinct keys, flags, text targets,
lengths, strings) that `IndexWriter.add_many` appends whole.

Rendering takes the fast path (`fast_prompts`) where the tokenizer allows it. The first rendered conversation of
every chunk also takes the per-sample path (`trainer.encode.prepare.render`); a difference turns the fast path off
for the rest of the process, with one warning, and the chunk is rendered again the per-sample way: the index always
holds the ids the in-memory path would.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trainer.data.samples import BadSample, Conversation
from trainer.encode.collator import Layout, text_targets_after
from trainer.encode.fast_prompts import FastPrompts

log = logging.getLogger(__name__)

Rendered = tuple[list[int], list[bool], list[int]] | BadSample


@dataclass
class Chunk:
    """The index columns of a run of conversations: `count` usable samples, their bad ones in input order."""

    count: int = 0
    tokens: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    token_lens: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    keys: list[str] = field(default_factory=list)  # distinct clip keys of the chunk
    clips: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))  # rows of `keys`
    clip_lens: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    targets: np.ndarray = field(default_factory=lambda: np.zeros(0, np.bool_))
    text: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    text_lens: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    lengths: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    strings: dict[str, tuple[bytes, np.ndarray]] = field(default_factory=dict)  # ids, sources, speakers
    bad: list[BadSample] = field(default_factory=list)
    part: str = ""  # the key it is stored under in the data file's part store (trainer.encode.part_store), if any


class ChunkRenderer:
    """Renders chunks of conversations: the fast path while it agrees with `render`, else `render` per sample.

    Args:
        render (`Callable`):
            The per-sample rendering (`trainer.encode.prepare.render` bound to a tokenizer and layout).
        tokenizer (`PreTrainedTokenizerBase`, *optional*):
            The tokenizer `render` uses; None keeps the per-sample path.
        layout (`Layout`, *optional*):
            The special ids; needed with a tokenizer.
        keys (`dict`):
            Every clip's code-cache key.
        frames (`Callable`):
            Frames of a cache entry, None when it is missing (`index_build.FrameCounts`).
    """

    def __init__(self, render: Callable[[Conversation], Rendered], *, tokenizer: Any, layout: Layout | None,
                 keys: dict, frames: Callable[[str], int | None], num_codebooks: int) -> None:
        self.render, self.layout, self.keys, self.frames = render, layout, keys, frames
        self.num_codebooks = num_codebooks
        self.fast = FastPrompts.of(tokenizer) if tokenizer is not None and layout is not None else None
        self.fast_chunks = 0  # chunks the fast path rendered: what a test checks

    def rendered(self, convs: list[Conversation]) -> list[Rendered]:
        """`render(conv)` of each conversation, the fast way when it gives the same ids."""
        if self.fast is None or not convs:
            return [self.render(c) for c in convs]
        first = self.render(convs[0])  # also leaves the backend without truncation or padding, as __call__ does
        if not self.fast.usable():
            return [first, *(self.render(c) for c in convs[1:])]
        out = self._fast(convs)
        if out is None:
            return [first, *(self.render(c) for c in convs[1:])]
        if out[0] != first:
            log.warning("the fast chat-template path rendered %s differently from apply_chat_template; building "
                        "the rest of the index with apply_chat_template", convs[0].source)
            self.fast = None
            return [first, *(self.render(c) for c in convs[1:])]
        self.fast_chunks += 1
        return out

    def _fast(self, convs: list[Conversation]) -> list[Rendered] | None:
        assert self.fast is not None and self.layout is not None
        prompts: list[str | None] = []
        for conv in convs:
            try:
                prompts.append(self.fast.prompt(conv.messages))
            except Exception:
                prompts.append(None)
        todo = [i for i, p in enumerate(prompts) if p is not None]
        encoded = self.fast.encode([prompts[i] for i in todo])  # type: ignore[misc]
        out: list[Rendered | None] = [None] * len(convs)
        for i, ids in zip(todo, encoded, strict=True):
            out[i] = self._checked(convs[i], ids)
        return [o if o is not None else self.render(c) for o, c in zip(out, convs, strict=True)]

    def _checked(self, conv: Conversation, ids: list[int]) -> Rendered:
        """`prepare.render`'s checks on ids the fast path gave: a placeholder per clip, the text targets."""
        assert self.layout is not None
        audio = self.layout.audio_token_id
        positions = [i for i, t in enumerate(ids) if t == audio]
        flags = conv.target_flags()
        if len(positions) != len(flags):
            return BadSample(
                conv.source, f"the chat template rendered {len(positions)} audio placeholders for {len(flags)} clips"
            )
        targets = [pos for pos, is_t in zip(positions, flags, strict=True) if is_t]
        return ids, flags, text_targets_after(ids, targets, self.layout.eot_id)

    def chunk(self, convs: list[Conversation]) -> Chunk:
        """The index columns of `convs`: each rendered, or bad (the template failed, or a clip's codes are missing)."""
        out = Chunk()
        tokens: list[int] = []
        token_lens, clip_rows, clip_lens, targets, text, text_lens, lengths = [], [], [], [], [], [], []
        strings: dict[str, list[bytes]] = {"ids": [], "sources": [], "speakers": []}
        key_rows: dict[str, int] = {}
        for conv, res in zip(convs, self.rendered(convs), strict=True):
            clip_keys = [self.keys[c] for c in conv.clips()]
            counts = [self.frames(k) for k in clip_keys]
            if None in counts:
                missing = conv.clips()[counts.index(None)]
                res = BadSample(conv.source, f"audio could not be decoded or encoded: {missing}")
            if isinstance(res, BadSample):
                out.bad.append(res)
                continue
            ids, flags, text_targets = res
            tokens += ids
            token_lens.append(len(ids))
            clip_rows += [key_rows.setdefault(k, len(key_rows)) for k in clip_keys]
            clip_lens.append(len(clip_keys))
            targets += flags
            text += text_targets
            text_lens.append(len(text_targets))
            # EncodedSample.num_tokens: each clip becomes frames + 2 + codebooks - 2 positions
            lengths.append(len(ids) + sum(n + self.num_codebooks for n in counts))  # type: ignore[operator]
            strings["ids"].append(conv.id.encode())
            strings["sources"].append(conv.source.encode())
            strings["speakers"].append((conv.speaker or "").encode())
        out.count = len(token_lens)
        out.tokens, out.token_lens = np.asarray(tokens, np.int32), np.asarray(token_lens, np.int64)
        out.keys, out.clips = list(key_rows), np.asarray(clip_rows, np.int32)
        out.clip_lens, out.targets = np.asarray(clip_lens, np.int64), np.asarray(targets, np.bool_)
        out.text, out.text_lens = np.asarray(text, np.int32), np.asarray(text_lens, np.int64)
        out.lengths = np.asarray(lengths, np.int32)
        out.strings = {name: (b"".join(values), np.asarray([len(v) for v in values], np.int64))
                       for name, values in strings.items()}
        return out
