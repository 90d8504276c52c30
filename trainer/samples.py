"""The sample types that the dataset readers produce and `trainer.data` returns.

They live apart from `trainer.data` so that the per-format readers (`trainer.chatml`, `trainer.manifests`)
and the loader that dispatches to them can all import them without an import cycle; `trainer.data`
re-exports the public ones, which is where the rest of the package imports them from.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Conversation:
    """One training sample in the transformers chat format.

    Args:
        id: Stable and unique within its dataset (the sample's own id, or `<file stem>-<index>`).
        source: Where it came from, for messages: `data/train.json[3]`, `data/m.jsonl:12`, ...
        messages: `{"role", "content": [{"type": "text", "text"} | {"type": "audio", "path"}]}` dicts;
            audio paths are absolute.
        start_index: Assistant messages at this index or later are training targets; earlier audio
            (a voice reference) is context only.
        speaker: Speaker name, when the data gives one.
    """

    id: str
    source: str
    messages: list[dict]
    start_index: int
    speaker: str | None = None

    def audio_paths(self) -> list[str]:
        """Every audio path, in message order (references first)."""
        return [item["path"] for m in self.messages for item in m["content"] if item["type"] == "audio"]

    def target_audio_paths(self) -> list[str]:
        """Audio paths of the assistant messages that are training targets."""
        return [
            item["path"]
            for i, m in enumerate(self.messages)
            if i >= self.start_index and m["role"] == "assistant"
            for item in m["content"]
            if item["type"] == "audio"
        ]


@dataclass
class BadSample:
    """A sample that cannot be trained on; `reason` says what to fix (several problems joined by "; ")."""

    source: str
    reason: str

    def __str__(self) -> str:
        return f"{self.source}: {self.reason}"


class DataError(Exception):
    """The input as a whole is unusable: missing path, unknown format, or a file of the wrong shape."""


@dataclass
class Candidate:
    """A sample as read: its structural problems, and the audio still to check even when it has some."""

    source: str
    problems: list[str]
    audio: list[str] = field(default_factory=list)
    conversation: Conversation | None = None
