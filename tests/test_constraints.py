"""constraints.txt pins the versions the suite runs against; the image and pyproject.toml agree with it."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parent.parent
TESTED = ("torch", "torchaudio", "transformers", "peft", "accelerate")


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def test_constraints_pin_the_tested_stack_and_the_image_installs_the_same_versions() -> None:
    constraints = _pins(REPO / "constraints.txt")
    image = _pins(REPO / "image" / "requirements.txt")
    assert set(constraints) == set(TESTED)
    for name in TESTED:
        assert image[name] == constraints[name], f"image/requirements.txt {name}=={image[name]}, " \
                                                 f"constraints.txt {name}=={constraints[name]}"


def test_declared_ranges_start_at_the_tested_versions() -> None:
    """pyproject.toml admits no release older than the one the suite runs: the lower bound is the pin."""
    constraints = _pins(REPO / "constraints.txt")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for spec in project["dependencies"]:
        req = Requirement(spec)
        if req.name not in constraints:
            continue
        assert req.specifier.contains(constraints[req.name]), f"{req.name}=={constraints[req.name]} outside {spec}"
        lower = [s.version for s in req.specifier if s.operator in (">=", "==")]
        assert lower == [constraints[req.name]] or lower == [constraints[req.name].rsplit(".", 1)[0]], \
            f"pyproject.toml {spec}: the lowest version it admits must be the tested {constraints[req.name]}"


def test_setup_and_the_image_install_under_the_constraints() -> None:
    assert "-c constraints.txt" in (REPO / "scripts" / "setup.sh").read_text()
    assert "-c /opt/higgs-audio-trainer/constraints.txt" in (REPO / "image" / "Dockerfile").read_text()
