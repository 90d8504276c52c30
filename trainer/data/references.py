"""Reference clips for the corpus layouts that name speakers (LibriTTS, Common Voice, datasets with a speaker column).

Each target is paired with other clips of the same speaker, so that the model learns the voice-cloning prompt it is used
with (reference transcript and audio, then the text to speak).

The choice is deterministic: a random generator seeded by `--seed_split` and the sample's id, so the same data
and seed give the same pairs on every rank and every run, and adding a sample changes no other sample's pick.
A reference is never the target itself, and only clips that passed the audio checks and are at most
`--reference_max_seconds` long are candidates. A speaker with a single usable clip trains without a reference.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass

from trainer.data.fields import text_message
from trainer.data.samples import Conversation


@dataclass
class ReferenceReport:
    """How the pairing went, for the log: samples with fewer references than asked, and why."""

    paired: int = 0
    without_reference: int = 0  # their speaker has no other usable clip
    single_clip_speakers: int = 0

    def __str__(self) -> str:
        return (f"{self.paired} samples paired with a reference clip of the same speaker; "
                f"{self.without_reference} train without one ({self.single_clip_speakers} speakers with a "
                "single usable clip)")


def pair_references(
    conversations: list[Conversation], seconds: Mapping[str, float], *, count: int, max_seconds: float, seed: int
) -> tuple[list[Conversation], ReferenceReport]:
    """The conversations with up to `count` reference turns each; those without a speaker are left as they are.

    Each input conversation is one target: system, user text, assistant audio (what the corpus readers build).
    """
    report = ReferenceReport()
    if count <= 0:
        return conversations, report
    by_speaker: dict[str, list[Conversation]] = {}
    for conv in conversations:
        if conv.speaker is not None:
            by_speaker.setdefault(conv.speaker, []).append(conv)
    eligible = {
        speaker: [c for c in convs if seconds.get(_audio(c), float("inf")) <= max_seconds]
        for speaker, convs in by_speaker.items()
    }
    position = {id(c): i for convs in eligible.values() for i, c in enumerate(convs)}
    out = []
    for conv in conversations:
        if conv.speaker is None:
            out.append(conv)
            continue
        pool = eligible[conv.speaker]
        own = position.get(id(conv))
        n = len(pool) - (own is not None)
        if n <= 0:
            report.without_reference += 1
            out.append(conv)
            continue
        picks = random.Random(f"{seed}:{conv.id}").sample(range(n), min(count, n))
        refs = [pool[i + 1 if own is not None and i >= own else i] for i in picks]
        out.append(_with_references(conv, refs))
        report.paired += 1
    report.single_clip_speakers = sum(1 for convs in by_speaker.values() if len(convs) == 1)
    return out, report


def _audio(conv: Conversation) -> str:
    return conv.messages[-1]["content"][0]["path"]


def _text(conv: Conversation) -> str:
    return conv.messages[-2]["content"][0]["text"]


def _with_references(conv: Conversation, refs: list[Conversation]) -> Conversation:
    system, target = conv.messages[: conv.start_index - 1], conv.messages[conv.start_index - 1:]
    turns = []
    for ref in refs:
        turns += [text_message("user", _text(ref)), {"role": "assistant", "content": [{"type": "audio",
                                                                                      "path": _audio(ref)}]}]
    messages = system + turns + target
    return Conversation(conv.id, conv.source, messages, len(messages) - 1, conv.speaker)
