"""`opt`, the one way an option is declared: a dataclass field whose metadata drives parsing, validation and docs.

The field's annotation is the option's type, read once by `kind_of`: `bool`, `int`, `float`, `str`, `PathStr`
(a file or folder), `Tristate` (auto, true or false), a `Literal` (its values are the choices) or a `list` of
`str` or of a `Literal`. The annotation is what the code reading the option relies on, so the parser, the
help and the docs cannot drift from it.
"""

from __future__ import annotations

import types
import typing
from dataclasses import field
from typing import Any, Literal, NewType

ValueKind = Literal["str", "path", "int", "float", "bool", "tristate", "list", "choice"]

# A filesystem path, as text: the option's docs and metavar say PATH, and `str` code reads it unchanged.
PathStr = NewType("PathStr", str)
# "auto", "true" or "false": a boolean with a third, decide-at-run-time value (booleans parse into it too).
Tristate = NewType("Tristate", str)


# The shortest clip the audio tokenizer encodes with room to spare: its convolutions need a few frames, and
# a clip of a few milliseconds crashes it.
MIN_AUDIO_SECONDS = 0.1

_PLAIN: dict[Any, ValueKind] = {bool: "bool", int: "int", float: "float", str: "str", PathStr: "path",
                                Tristate: "tristate"}


def kind_of(annotation: Any) -> tuple[ValueKind, tuple[str, ...] | None]:
    """(kind, choices) of an option from its evaluated annotation; `| None` only says the option may be unset.

    Raises TypeError for a type the parser cannot read, so a new option with one fails at import.
    """
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        rest = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(rest) != 1:
            raise TypeError(f"an option is one type or that type | None, got {annotation!r}")
        annotation = rest[0]
    if typing.get_origin(annotation) is Literal:
        return "choice", _choices(annotation)
    if typing.get_origin(annotation) is list:
        (item,) = typing.get_args(annotation)
        if item is str:
            return "list", None
        if typing.get_origin(item) is Literal:
            return "list", _choices(item)
        raise TypeError(f"a list option holds str or a Literal of str, got {annotation!r}")
    if annotation in _PLAIN:
        return _PLAIN[annotation], None
    raise TypeError(f"no option kind for the annotation {annotation!r}")


def _choices(literal: Any) -> tuple[str, ...]:
    values = typing.get_args(literal)
    if not all(isinstance(v, str) for v in values):
        raise TypeError(f"a Literal option's choices are strings, got {literal!r}")
    return values


def opt(
    default: Any,
    help: str,
    *,
    required: bool = False,
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive_min: bool = False,
) -> Any:
    """Declare one option.

    A dataclass field whose metadata drives parsing, validation and docs (its kind and choices come from the field's
    annotation, see `kind_of`).
    """
    metadata = {
        "help": help,
        "required": required,
        "minimum": minimum,
        "maximum": maximum,
        "exclusive_min": exclusive_min,
    }
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)
