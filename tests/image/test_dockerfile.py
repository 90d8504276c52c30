"""The Dockerfile and what it must agree with, without building: hadolint, the base and torch pins, the
uid the chart runs as, the pinned requirements, the build context, and the docs of the launcher's env."""

from __future__ import annotations

import re
import subprocess
import tomllib

import yaml
from packaging.requirements import Requirement

from tests.tooling import REPO, require_tool
from trainer.launch.topology import ENV_VARS

DOCKERFILE = (REPO / "image" / "Dockerfile").read_text()
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def pins() -> dict[str, str]:
    found = {}
    for line in (REPO / "image" / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"image/requirements.txt: {line!r} is not pinned with =="
            found[re.sub(r"[-_.]+", "-", name).lower()] = version
    return found


def test_hadolint_is_clean() -> None:
    hadolint = require_tool("hadolint", REPO / ".venv" / "bin")
    proc = subprocess.run([hadolint, str(REPO / "image" / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_default_base_is_the_official_pytorch_cuda_runtime_image_of_our_torch_pin() -> None:
    base = re.search(r"^ARG BASE_IMAGE=(\S+)$", DOCKERFILE, re.M)
    assert base
    torch_pin = next(d for d in PYPROJECT["project"]["dependencies"] if d.startswith("torch=="))
    version = torch_pin.split("==")[1]
    assert re.fullmatch(rf"pytorch/pytorch:{re.escape(version)}-cuda[\d.]+-cudnn\d+-runtime", base.group(1))
    assert pins()["torch"] == version


def test_the_image_user_is_the_uid_and_gid_the_chart_runs_as() -> None:
    assert re.search(r"^USER 1000:1000$", DOCKERFILE, re.M)
    values = yaml.safe_load((REPO / "charts" / "higgs-audio-trainer" / "values.yaml").read_text())
    pod, container = values["podSecurityContext"], values["securityContext"]
    assert pod["runAsUser"] == pod["runAsGroup"] == pod["fsGroup"] == container["runAsUser"] == 1000
    assert container["readOnlyRootFilesystem"] is True


def test_entrypoint_is_the_launcher_and_dependencies_come_before_the_source() -> None:
    assert 'ENTRYPOINT ["higgs-audio-trainer", "launch"]' in DOCKERFILE
    assert DOCKERFILE.index("COPY image/requirements.txt") < DOCKERFILE.index("COPY trainer ")
    assert "HF_HUB_OFFLINE=1" in DOCKERFILE
    # Build arguments are part of the cache key of every later RUN: the per-commit ones come last.
    assert DOCKERFILE.index("ARG REVISION") > DOCKERFILE.rindex("RUN ")


def test_requirements_pin_every_dependency_within_its_range() -> None:
    pinned = pins()
    for spec in PYPROJECT["project"]["dependencies"]:
        req = Requirement(spec)
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        assert name in pinned, f"{req.name} is not pinned in image/requirements.txt"
        assert req.specifier.contains(pinned[name]), f"{name}=={pinned[name]} is outside {req.specifier}"


def test_build_context_holds_exactly_what_the_dockerfile_copies() -> None:
    ignore = [line for line in (REPO / ".dockerignore").read_text().splitlines() if line and line[0] != "#"]
    assert ignore[0] == "*"  # everything not named below stays out (.venv, .cache with its GBs, .git)
    kept = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    copied = set()
    for match in re.finditer(r"^COPY (.+) \S+$", DOCKERFILE, re.M):
        copied.update(match.group(1).split())
    assert copied == kept


def test_docs_cover_every_launcher_variable_and_the_volumes() -> None:
    doc = (REPO / "docs" / "container-image.md").read_text()
    missing = [name for name in ENV_VARS if f"`{name}`" not in doc]
    assert not missing
    for path in ("/models", "/data", "/output", "/tmp"):
        assert f"`{path}" in doc
