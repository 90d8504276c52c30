"""Checked reads of raw dataset JSON, shared by the format readers so every format words problems alike.

A field that is missing or of the wrong type is recorded as a problem of its sample (never raised), so a
reader collects every problem of a sample in one pass; only a file that is not JSON at all is a
`DataError`, since then no sample in it can be read.
"""

from __future__ import annotations

import json
import os
from typing import Any

from trainer.errors import DataError


def json_type(value: Any) -> str:
    """A JSON value's type as messages name it ("an object", "a list", ...), for the expected-vs-got errors."""
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number" if isinstance(value, int | float) else type(value).__name__)


def get_str(
    record: dict, key: str, problems: list[str], *, required: bool = False, name: bool = False
) -> str | None:
    """A string field; null counts as absent. `name` fields (ids, speakers) also take integers."""
    value = record.get(key)
    if value is None:
        if required:
            problems.append(f"missing field '{key}'")
        return None
    if name and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        problems.append(f"field '{key}' must be a string, got {json_type(value)}")
        return None
    return value


def resolve(base: str, path: str) -> str:
    """`path` made absolute against `base`, the directory of the file that names it."""
    return os.path.abspath(os.path.join(base, path))


def read_json(path: str) -> Any:
    """A JSON file (a BOM allowed); `DataError` naming the file when it is not valid JSON."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not valid JSON ({err})") from err


def text_message(role: str, text: str) -> dict:
    """A chat message holding one text item, the shape every reader builds."""
    return {"role": role, "content": [{"type": "text", "text": text}]}
