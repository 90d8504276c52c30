"""`opt`, the one way an option is declared: a dataclass field whose metadata drives parsing, validation and docs."""

from __future__ import annotations

from dataclasses import field
from typing import Any, Literal

ValueKind = Literal["str", "path", "int", "float", "bool", "tristate", "list", "choice"]


# The shortest clip the audio tokenizer encodes with room to spare: its convolutions need a few frames, and
# a clip of a few milliseconds crashes it.
MIN_AUDIO_SECONDS = 0.1


def opt(
    default: Any,
    help: str,
    kind: ValueKind = "str",
    *,
    required: bool = False,
    choices: tuple[str, ...] | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive_min: bool = False,
) -> Any:
    """Declare one option: a dataclass field whose metadata drives parsing, validation and docs."""
    metadata = {
        "help": help,
        "kind": kind,
        "required": required,
        "choices": choices,
        "minimum": minimum,
        "maximum": maximum,
        "exclusive_min": exclusive_min,
    }
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)
