"""Regenerate the generated blocks of README.md (the option table) from the option declarations.

    .venv/bin/python scripts/update_readme.py          # rewrite README.md
    .venv/bin/python scripts/update_readme.py --check  # exit 1 if README.md is stale (tests run this)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from trainer.config.cli import options_markdown  # noqa: E402
from trainer.errors import TABLE  # noqa: E402

BLOCKS = {
    "options": options_markdown,
    "exit-codes": lambda: "| code | meaning |\n| --- | --- |\n"
    + "".join(f"| {code} | {text} |\n" for code, text in sorted(TABLE.items())),
}


def render(text: str) -> str:
    for name, make in BLOCKS.items():
        pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", re.S)
        if not pattern.search(text):
            raise SystemExit(f"README.md: no <!-- {name}:start --> ... <!-- {name}:end --> block")
        text = pattern.sub(lambda m, make=make: m.group(1) + make() + m.group(2), text)
    return text


def main() -> int:
    readme = REPO / "README.md"
    current = readme.read_text()
    fresh = render(current)
    if "--check" in sys.argv:
        if fresh != current:
            print("README.md is stale: run .venv/bin/python scripts/update_readme.py", file=sys.stderr)
            return 1
        return 0
    readme.write_text(fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
