"""The sample types of the data layer.

What the format readers produce, the loader checks and returns, and data preparation encodes (a conversation, its audio
clips, a bad sample and why).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Conversation:
    """One training sample in the transformers chat format.

    Args:
        id (`str`):
            Stable and unique within its dataset (the sample's own id, or `<file stem>-<index>`).
        source (`str`):
            Where it came from, for messages: `data/train.json[3]`, `data/m.jsonl:12`, ...
        messages (`list[dict]`):
            `{"role", "content": [{"type": "text", "text"} | {"type": "audio", "path"}]}` dicts; audio paths are
            absolute.
        start_index (`int`):
            Assistant messages at this index or later are training targets; earlier audio (a voice reference) is context
            only.
        speaker (`str`, *optional*):
            Speaker name, when the data gives one.
        reference_turns (`frozenset[int]`, *optional*):
            Indices of assistant messages at or after `start_index` that are context all the same: reference clips that
            the source put in a user turn (the seed scripts' ChatML layout).
    """

    id: str
    source: str
    messages: list[dict]
    start_index: int
    speaker: str | None = None
    reference_turns: frozenset[int] = frozenset()

    def is_target_turn(self, index: int) -> bool:
        """Whether message `index` is an assistant turn whose audio is a training target."""
        return (
            index >= self.start_index
            and self.messages[index]["role"] == "assistant"
            and index not in self.reference_turns
        )

    def clips(self) -> list[Clip]:
        """Every audio clip, in message order (references first)."""
        return [Clip.of(item) for m in self.messages for item in m["content"] if item["type"] == "audio"]

    def target_flags(self) -> list[bool]:
        """Per audio clip, in message order: is it a training target?"""
        return [
            self.is_target_turn(i) for i, m in enumerate(self.messages) for item in m["content"]
            if item["type"] == "audio"
        ]

    def audio_paths(self) -> list[str]:
        """Every audio file, in message order (references first)."""
        return [clip.path for clip in self.clips()]

    def target_audio_paths(self) -> list[str]:
        """Audio files of the clips that are training targets."""
        return [clip.path for clip, target in zip(self.clips(), self.target_flags(), strict=True) if target]


@dataclass(frozen=True)
class Clip:
    """The audio of one audio item: a whole file, or the segment `offset` .. `offset + duration` of it.

    Hashable, so that the same clip used by several samples is checked and encoded once.
    """

    path: str
    offset: float = 0.0
    duration: float | None = None  # None: to the end of the file

    @classmethod
    def of(cls, item: dict) -> Clip:
        """The clip of a normalised audio item (`{"type": "audio", "path", "offset"?, "duration"?}`)."""
        return cls(item["path"], float(item.get("offset") or 0.0), item.get("duration"))

    @property
    def is_segment(self) -> bool:
        """Whether the clip is a part of its file rather than the whole file."""
        return self.offset > 0 or self.duration is not None

    def __str__(self) -> str:
        if not self.is_segment:
            return self.path
        end = "the end" if self.duration is None else f"{self.offset + self.duration:g} s"
        return f"{self.path} [{self.offset:g} s to {end}]"


@dataclass
class BadSample:
    """A sample that cannot be trained on; `reason` says what to fix (several problems joined by "; ")."""

    source: str
    reason: str

    def __str__(self) -> str:
        return f"{self.source}: {self.reason}"


@dataclass
class Candidate:
    """A sample as read: its structural problems, and the audio still to check even when it has some."""

    source: str
    problems: list[str]
    audio: list[dict] = field(default_factory=list)  # the audio items, checked (and normalised) in place
    conversation: Conversation | None = None
