"""What to synthesize: one text with an optional voice reference, read from options or a JSONL file.

Every prompt is checked before any model loads (a missing reference file, an empty text, a reference without
its transcript), and every error names the option or the file and line, so a batch fails in milliseconds
rather than after the model has loaded or halfway through.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from trainer.errors import ConfigError

ID_PATTERN = re.compile(r"[A-Za-z0-9._-]+")
FIELDS = ("text", "reference_audio", "reference_text", "id", "system", "scene")  # of a prompts file's line


@dataclass(frozen=True)
class Prompt:
    """One clip to generate; `reference_audio` is absolute, and comes with its transcript."""

    id: str
    text: str
    reference_audio: str | None = None
    reference_text: str | None = None
    system: str | None = None  # the system message; None: --system_prompt, as training's default
    scene: str | None = None  # a scene description, laid out as training lays out a sample's scene
    # A prompt from training data: its conversation up to the target turn (native layout, audio items with
    # absolute paths), system message, scene and every reference included; the fields above then describe it.
    context: tuple[dict, ...] | None = None

    @property
    def reference(self) -> tuple[str, str] | None:
        """(transcript, audio file) as the conversation layout takes it, or None."""
        if self.reference_audio is None or self.reference_text is None:
            return None
        return self.reference_text, self.reference_audio


def make_prompt(
    id: str, text: str | None, reference_audio: str | None, reference_text: str | None, where: dict[str, str],
    system: str | None = None, scene: str | None = None,
) -> Prompt:
    """A checked prompt; `where` names each field's source for messages (`{"text": "--text / TEXT", ...}`).

    `system` and `scene` are a JSONL line's own; empty ones are refused (a blank system message is never what training
    saw).
    """
    for key, value in (("system", system), ("scene", scene)):
        if value is not None and not value.strip():
            raise ConfigError(f"{where.get(key, key)}: empty {key}; leave the field out instead")
    if text is None or not text.strip():
        raise ConfigError(f"{where['text']}: empty text; expected the words to speak")
    if reference_audio is not None:
        if not os.path.isfile(reference_audio):
            raise ConfigError(f"{where['reference_audio']}: reference audio file not found: {reference_audio}")
        if reference_text is None or not reference_text.strip():
            raise ConfigError(
                f"{where['reference_text']}: required with {where['reference_audio']}: the transcript of the "
                "reference clip (a voice reference is laid out as a spoken turn, as in training)"
            )
    elif reference_text is not None:
        raise ConfigError(f"{where['reference_text']}: given without {where['reference_audio']}")
    return Prompt(
        id=id,
        text=text.strip(),
        reference_audio=os.path.abspath(reference_audio) if reference_audio else None,
        reference_text=reference_text.strip() if reference_text else None,
        system=system.strip() if system else None,
        scene=scene.strip() if scene else None,
    )


def read_prompts(path: str, option: str) -> list[Prompt]:
    """Prompts of a JSONL file (`{"text", "reference_audio"?, "reference_text"?, "id"?, "system"?, "scene"?}` per line).

    Relative reference paths are relative to the file. Ids default to the line number and must be unique file names.
    `system` replaces --system_prompt for that line, as a dataset's own system message does.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{option}: prompts file not found: {path}")
    prompts: list[Prompt] = []
    seen: set[str] = set()
    for lineno, line in enumerate(p.read_text(encoding="utf-8-sig").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{option} ({path}:{lineno})"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{where}: not valid JSON: {err}") from None
        if not isinstance(record, dict):
            raise ConfigError(f"{where}: expected a JSON object with a 'text' field")
        fields = {}
        for key in FIELDS:
            value = record.get(key)
            if (value is not None and not isinstance(value, str | int)) or isinstance(value, bool):
                raise ConfigError(f"{where}: field '{key}' must be a string")
            fields[key] = None if value is None else str(value)
        unknown = sorted(set(record) - set(FIELDS))
        if unknown:
            raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)}")
        sample_id = fields["id"] or f"{p.stem}-{lineno}"
        if not ID_PATTERN.fullmatch(sample_id):
            raise ConfigError(f"{where}: field 'id' must be a file name (letters, digits, '.', '_', '-'), "
                              f"got {sample_id!r}")
        if sample_id in seen:
            raise ConfigError(f"{where}: id {sample_id!r} appears twice; each clip needs its own file name")
        seen.add(sample_id)
        ref = fields["reference_audio"]
        if ref is not None:
            ref = str(p.parent / ref) if not os.path.isabs(ref) else ref
        names = {k: f"{where}: field '{k}'" for k in FIELDS}
        prompts.append(make_prompt(sample_id, fields["text"], ref, fields["reference_text"], names,
                                   fields["system"], fields["scene"]))
    if not prompts:
        raise ConfigError(f"{option} ({path}): no prompts (expected one JSON object per line)")
    return prompts
