"""Regenerate the generated blocks of the docs (the option table, the exit codes) from the code.

    .venv/bin/python scripts/update_readme.py          # rewrite the files
    .venv/bin/python scripts/update_readme.py --check  # exit 1 if any is stale (tests run this)
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from trainer.config.build import BuildArgs  # noqa: E402
from trainer.config.cli import options_markdown  # noqa: E402
from trainer.errors import TABLE  # noqa: E402


def exit_codes_markdown() -> str:
    rows = "".join(f"| {code} | {text} |\n" for code, text in sorted(TABLE.items()))
    return "| code | meaning |\n| --- | --- |\n" + rows


# file -> {block name: what fills it}
BLOCKS: dict[str, dict[str, Callable[[], str]]] = {
    "docs/options.md": {"options": options_markdown},
    "docs/exit-codes.md": {"exit-codes": exit_codes_markdown},
    "docs/bring-your-data.md": {"build-options": lambda: options_markdown({"build": BuildArgs})},
}


def render(path: str, text: str) -> str:
    for name, make in BLOCKS[path].items():
        pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", re.S)
        if not pattern.search(text):
            raise SystemExit(f"{path}: no <!-- {name}:start --> ... <!-- {name}:end --> block")
        text = pattern.sub(lambda m, make=make: m.group(1) + make() + m.group(2), text)
    return text


def main() -> int:
    stale = []
    for path in BLOCKS:
        file = REPO / path
        current = file.read_text()
        fresh = render(path, current)
        if fresh == current:
            continue
        if "--check" in sys.argv:
            stale.append(path)
        else:
            file.write_text(fresh)
    if stale:
        print(f"{', '.join(stale)} stale: run .venv/bin/python scripts/update_readme.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
