"""Build the chart's README.md from README.md.tmpl and the `# --` comments of values.yaml.

A value's documentation lives once, next to the value in values.yaml (helm-docs' convention: a comment
block that starts with `# --` right above the key; an optional `(type)` first word overrides the type
shown). This script turns those comments into the README's value table so the two cannot drift; a test
runs it with --check. helm-docs itself is a Go binary that no package registry carries, hence this
small reader of the same convention.

Usage: python scripts/gen_chart_readme.py [--check]   (--check: exit 1 if README.md is stale)
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "charts" / "higgs-audio-trainer"
KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.-]+):(\s|$)")
TYPE_HINT = re.compile(r"^\((?P<type>[^)]+)\)\s*")


@dataclass(frozen=True)
class ValueDoc:
    """One documented key of values.yaml."""

    path: str
    type: str
    default: Any
    description: str


def documented_values(values_text: str) -> list[ValueDoc]:
    """Every key preceded by a `# --` comment, in file order, with its default from the parsed YAML."""
    values = yaml.safe_load(values_text) or {}
    docs: list[ValueDoc] = []
    stack: list[tuple[int, str]] = []
    pending: list[str] | None = None
    for line in values_text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# -- "):
            pending = [stripped[len("# -- ") :]]
            continue
        if stripped.startswith("#"):
            if pending is not None and stripped.startswith("# "):
                pending.append(stripped[2:])
            continue
        if not stripped:
            pending = None
            continue
        m = KEY_LINE.match(line)
        if not m:  # a list item or a continuation: not a key
            continue
        indent = len(m["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, m["key"]))
        path = ".".join(k for _, k in stack)
        if pending is not None:
            docs.append(describe(path, lookup(values, path), " ".join(pending)))
            pending = None
    return docs


def lookup(values: dict[str, Any], path: str) -> Any:
    node: Any = values
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def describe(path: str, default: Any, text: str) -> ValueDoc:
    m = TYPE_HINT.match(text)
    if m:
        return ValueDoc(path, m["type"], default, text[m.end() :])
    return ValueDoc(path, type_of(default), default, text)


def type_of(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return "null"


def cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|")


def values_table(docs: list[ValueDoc]) -> str:
    rows = ["| Key | Type | Default | Description |", "| --- | --- | --- | --- |"]
    for d in docs:
        default = json.dumps(d.default, separators=(",", ":"))
        rows.append(f"| `{d.path}` | {cell(d.type)} | `{cell(default)}` | {cell(d.description)} |")
    return "\n".join(rows)


def render(chart: Path = CHART) -> str:
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    docs = documented_values((chart / "values.yaml").read_text())
    text = (chart / "README.md.tmpl").read_text()
    fields = {
        "description": " ".join(meta["description"].split()),
        "version": meta["version"],
        "app_version": meta["appVersion"],
        "values_table": values_table(docs),
    }
    for name, value in fields.items():
        text = text.replace("{{ " + name + " }}", str(value))
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if README.md is stale")
    args = parser.parse_args(argv)
    target = CHART / "README.md"
    text = render()
    if args.check:
        if not target.exists() or target.read_text() != text:
            print(
                f"{target.relative_to(REPO)} is stale: run python scripts/gen_chart_readme.py",
                file=sys.stderr,
            )
            return 1
        return 0
    if not target.exists() or target.read_text() != text:
        target.write_text(text)
        print(f"wrote {target.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
