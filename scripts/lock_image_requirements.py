"""Write image/requirements.txt: exact versions of the trainer's runtime dependencies, from this venv.

    .venv/bin/python scripts/lock_image_requirements.py

The closure of pyproject.toml's dependencies as installed here, walked through each package's metadata,
except what only torch pulls in (its CUDA libraries, triton, sympy, ...): the base image brings torch with
those, and listing them would install a second copy of several GB. torch and torchaudio themselves are
pinned at the version pyproject.toml names.
"""

from __future__ import annotations

import importlib.metadata as md
import re
from pathlib import Path

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "image" / "requirements.txt"
PROJECT = "higgs-audio-trainer"
FROM_BASE = {"torch", "torchaudio"}
HEADER = """\
# Exact versions of the trainer's runtime dependencies, installed in their own image layer before the
# source is copied (a source change never reinstalls them). torch and torchaudio are pinned at the
# version of the base image's own; their CUDA libraries come with the base image and are not listed.
# Regenerate after changing pyproject.toml: .venv/bin/python scripts/lock_image_requirements.py
"""


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def runtime_requirements(dist: str) -> list[Requirement]:
    """`dist`'s requirements that apply without extras on this platform."""
    reqs = [Requirement(r) for r in md.requires(dist) or []]
    return [r for r in reqs if r.marker is None or r.marker.evaluate({"extra": ""})]


def closure() -> dict[str, str]:
    """name -> installed version of every runtime dependency, not descending into torch."""
    found: dict[str, str] = {}
    todo = [r.name for r in runtime_requirements(PROJECT)]
    while todo:
        name = canonical(todo.pop())
        if name in found or name in FROM_BASE:
            continue
        found[name] = md.version(name)
        todo += [r.name for r in runtime_requirements(name)]
    return found


def main() -> None:
    torch_pins = [f"{canonical(r.name)}{r.specifier}" for r in runtime_requirements(PROJECT)
                  if canonical(r.name) in FROM_BASE]
    rest = [f"{name}=={version}" for name, version in sorted(closure().items())]
    OUT.write_text(HEADER + "\n".join(sorted(torch_pins) + rest) + "\n")
    print(f"{OUT.relative_to(REPO)}: {len(torch_pins) + len(rest)} pins")


if __name__ == "__main__":
    main()
