"""Session fixtures of the image tests: a private Docker engine and the image built on the local base.

The engine, the base image and the wheels need root and the preparation of
scripts/ci/install_docker_tools.sh; without them a test skips locally and fails under CI.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.image import engine
from tests.tooling import REPO, missing, require_tool


@pytest.fixture(scope="session")
def docker() -> Iterator[engine.Docker]:
    """A running private Docker engine (Debian's dockerd), stopped at the end of the session."""
    dockerd = require_tool("dockerd", Path("/usr/sbin"))
    cli = require_tool("docker")
    if os.geteuid() != 0:
        missing("root (dockerd runs as root here)", "run the image tests as root")
    for path in (engine.BASE_TAR, engine.WHEELS):
        if not path.exists():
            missing(str(path.relative_to(REPO)),
                    "scripts/ci/install_docker_tools.sh makes it (scripts/test.sh runs that when it selects this test)")
    with engine.daemon(dockerd, cli) as client:
        yield client


@pytest.fixture(scope="session")
def image(docker: engine.Docker) -> Iterator[str]:
    """The trainer image, built from image/Dockerfile on the local base with wheels served from the host.

    The build time and image size go to .cache/image-ci/last-build.json and the test log. Layers of
    earlier builds that no tag uses any more are removed afterwards; the rest stays as the build cache.
    """
    import tomllib

    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    revision = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    base = engine.import_base(docker)
    with engine.wheel_server(engine.WHEELS) as url:
        report = engine.build(docker, base=base, find_links=url, revision=revision or "unknown", version=version)
    (engine.WORK / "last-build.json").write_text(json.dumps(report))
    print(f"image {engine.IMAGE}: built in {report['build_seconds']} s, {report['image_bytes'] / 1e9:.2f} GB")
    yield engine.IMAGE
    docker("image", "prune", "--force", check=False)


@pytest.fixture(scope="session")
def models(tiny_ckpt: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny checkpoint that uid 1000 can read (MODELS/model, MODELS/audio_tokenizer)."""
    model_dir, codec_dir = tiny_ckpt
    root = tmp_path_factory.mktemp("models")
    shutil.copytree(model_dir, root / "model")
    shutil.copytree(codec_dir, root / "audio_tokenizer")
    world_readable(root)
    return root


def world_readable(root: Path) -> None:
    """Give everyone read access to files and read+search to directories below `root`, `root` included."""
    for path in [root, *root.rglob("*")]:
        extra = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH
        if path.is_dir():
            extra |= stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH
        path.chmod(path.stat().st_mode | extra)
