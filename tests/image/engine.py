"""A private Docker engine for the image tests, the local base image and the wheels `docker build` installs.

The daemon is Debian's dockerd, started with the flags this sandbox needs (no iptables, no bridge; every
container uses the host network), a socket and exec root of its own under /tmp (unix socket paths are
short) and its data root under .cache/docker (kept between sessions: it caches the image layers). The
base image and the wheels are made by scripts/ci/install_docker_tools.sh.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from tests.tooling import REPO

WORK = REPO / ".cache" / "image-ci"
BASE_TAR = WORK / "base-bookworm.tar"
WHEELS = WORK / "wheels"
DATA_ROOT = REPO / ".cache" / "docker"
BASE_IMAGE = "higgs-ci-base:bookworm"
IMAGE = "higgs-audio-trainer:ci"
WHEEL_PORT = 38517
DAEMON_FLAGS = ["--iptables=false", "--ip-forward=false", "--ip-masq=false", "--bridge=none",
                "--storage-driver=overlay2"]


class Docker:
    """The `docker` CLI pointed at one daemon."""

    def __init__(self, cli: str, socket: Path) -> None:
        self.cli = cli
        self.env = {**os.environ, "DOCKER_HOST": f"unix://{socket}", "DOCKER_BUILDKIT": "0"}

    def __call__(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run `docker ARGS` under `timeout` (a hung container must not hang the suite)."""
        proc = subprocess.run(["timeout", "--kill-after=10", str(int(timeout)), self.cli, *args], env=self.env,
                              capture_output=True, text=True, timeout=timeout + 30)
        if check and proc.returncode != 0:
            raise AssertionError(f"docker {' '.join(args[:3])} ... exited {proc.returncode}:\n"
                                 f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        return proc

    def image_exists(self, name: str) -> bool:
        return self("image", "inspect", name, check=False).returncode == 0

    def inspect(self, name: str) -> dict:
        return json.loads(self("inspect", name).stdout)[0]


def _stop_stale_daemon(pidfile: Path) -> None:
    """A daemon left by an interrupted session holds the data root's lock: stop it (it was ours)."""
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists() and str(DATA_ROOT).encode() in cmdline.read_bytes():
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.2)


@contextmanager
def daemon(dockerd: str, cli: str) -> Iterator[Docker]:
    """Start dockerd, yield a client for it, stop it."""
    DATA_ROOT.mkdir(parents=True, exist_ok=True)
    pidfile = DATA_ROOT / "dockerd.pid"
    _stop_stale_daemon(pidfile)
    run_dir = Path(tempfile.mkdtemp(prefix="hat-docker-"))
    socket = run_dir / "docker.sock"
    log = open(DATA_ROOT / "dockerd.log", "wb")  # noqa: SIM115 (closed below, after the daemon stops)
    proc = subprocess.Popen(
        [dockerd, *DAEMON_FLAGS, f"--data-root={DATA_ROOT / 'data'}", f"--exec-root={run_dir / 'exec'}",
         f"--pidfile={pidfile}", "-H", f"unix://{socket}"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    client = Docker(cli, socket)
    try:
        deadline = time.monotonic() + 60
        while client("version", timeout=10, check=False).returncode != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dockerd did not start; see {DATA_ROOT / 'dockerd.log'}")
            time.sleep(0.5)
        yield client
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        _remove_run_dir(run_dir)


def _remove_run_dir(run_dir: Path) -> None:
    """Unmount what dockerd leaves mounted in its exec root (its network namespace), then remove it."""
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    for point in sorted((m for m in mounts if m.startswith(str(run_dir))), reverse=True):
        subprocess.run(["umount", point], capture_output=True, check=False)
    shutil.rmtree(run_dir, ignore_errors=True)


def import_base(docker: Docker) -> str:
    """The local base image (Debian bookworm, python3.11 + venv), imported once into the data root."""
    if not docker.image_exists(BASE_IMAGE):
        with open(BASE_TAR, "rb") as tar:
            proc = subprocess.run([docker.cli, "import", "-", BASE_IMAGE], stdin=tar, env=docker.env,
                                  capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
    return BASE_IMAGE


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def wheel_server(directory: Path) -> Iterator[str]:
    """Serve `directory` on 127.0.0.1; yields the URL pip takes as --find-links (it reads the listing).

    The URL is a build argument, and build arguments are part of the layer cache key: a fixed port keeps
    the dependency layer cached between sessions (any free port if that one is taken).
    """
    handler = functools.partial(_QuietHandler, directory=str(directory))
    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", WHEEL_PORT), handler)
    except OSError:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def build(docker: Docker, *, base: str, find_links: str, revision: str, version: str) -> dict[str, float]:
    """`docker build` the image from image/Dockerfile the way CI does; returns seconds and bytes."""
    args: Sequence[str] = [
        "build", "--network=host", "-f", str(REPO / "image" / "Dockerfile"), "-t", IMAGE,
        "--build-arg", f"BASE_IMAGE={base}",
        "--build-arg", "PIP_NO_INDEX=1",
        "--build-arg", f"PIP_FIND_LINKS={find_links}",
        "--build-arg", f"VERSION={version}",
        "--build-arg", f"REVISION={revision}",
        "--build-arg", f"SOURCE={REPO.as_uri()}",
        str(REPO),
    ]
    started = time.monotonic()
    docker(*args, timeout=1800)
    seconds = time.monotonic() - started
    size = float(docker.inspect(IMAGE)["Size"])
    return {"build_seconds": round(seconds, 1), "image_bytes": size}
