"""The image, built and run for real: non-root, trains from env vars alone, forms a DDP group across two
containers given the training operator's env, checkpoints on `docker stop` and resumes, and exits 2 on a
bad env value with the reason in the termination log.

Every container uses the host network (the engine has no bridge) and runs under `timeout`.
"""

from __future__ import annotations

import json
import re
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import DEMO_DATA
from tests.image.engine import Docker
from trainer.launch.topology import TORCHRUN_MODULE

pytestmark = pytest.mark.slow
UID = 1000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def output(tmp_path: Path) -> Path:
    """The output volume: an empty directory anyone may write to (what fsGroup does in the chart)."""
    out = tmp_path / "output"
    out.mkdir()
    out.chmod(0o777)
    return out


@pytest.fixture
def names(docker: Docker) -> Iterator[list[str]]:
    """Container names used by a test; whatever is left of them is removed afterwards."""
    used: list[str] = []
    yield used
    for name in used:
        docker("rm", "-f", name, check=False)


def container_name(names: list[str], role: str) -> str:
    name = f"hat-{role}-{uuid.uuid4().hex[:8]}"
    names.append(name)
    return name


def trainer_env(**over: str) -> dict[str, str]:
    """Trainer options of a quick LoRA run on the mounted tiny model and demo data."""
    env = {
        "MODEL_PATH": "/models/model",
        "AUDIO_TOKENIZER_PATH": "/models/audio_tokenizer",
        "TRAIN_DATA_FILE": f"/data/{DEMO_DATA.name}",
        "OUTPUT_DIR": "/output/run",
        "USE_LORA": "true",
        "DISABLE_EVAL": "true",
        "MAX_STEPS": "6",
        "SAVE_STEPS": "3",
        "LOGGING_STEPS": "1",
        "WARMUP_STEPS": "0",
        "SEED": "1",
        "OMP_NUM_THREADS": "1",
    }
    env.update(over)
    return env


def run_args(name: str, models: Path, output: Path, env: dict[str, str], *extra: str) -> list[str]:
    """`docker run` arguments as the chart runs the pod: read-only root, /tmp writable, volumes mounted."""
    args = ["run", "--name", name, "--network=host", "--read-only", "--tmpfs=/tmp:rw,exec,mode=1777",
            "--shm-size=256m", "-v", f"{models}:/models:ro", "-v", f"{DEMO_DATA.parent}:/data:ro",
            "-v", f"{output}:/output", *extra]
    for key, value in env.items():
        args += ["-e", f"{key}={value}"]
    return args


def owners(root: Path) -> set[int]:
    return {p.stat().st_uid for p in root.rglob("*")}


def test_image_is_labelled_runs_as_uid_1000_and_reaches_every_subcommand(
    docker: Docker, image: str, names: list[str]
) -> None:
    config = docker.inspect(image)["Config"]
    assert config["User"] == f"{UID}:{UID}"
    assert config["Entrypoint"] == ["higgs-audio-trainer", "launch"]
    assert config["Cmd"] == ["train"]
    assert "HF_HUB_OFFLINE=1" in config["Env"]
    labels = config["Labels"]
    for key in ("source", "version", "revision"):
        assert labels.get(f"org.opencontainers.image.{key}"), key

    def run(*args: str) -> str:  # no /tmp volume at all: the launcher still works for these
        name = container_name(names, "cmd")
        return docker("run", "--rm", "--name", name, "--network=host", "--read-only", image, *args).stdout

    assert run("shell", "-c", "id -u; id -g; echo $HOME").split() == [str(UID), str(UID), "/tmp"]
    table = run("options")
    assert "`USE_LORA`" in table and "`DISABLE_EVAL`" in table
    assert "--adapter_path" in run("merge", "--help")


def test_one_container_two_ranks_writes_lora_adapters_owned_by_the_image_user(
    docker: Docker, image: str, models: Path, output: Path, names: list[str]
) -> None:
    env = trainer_env(NPROC_PER_NODE="2")
    proc = docker(*run_args(container_name(names, "single"), models, output, env), image, timeout=300)
    log = proc.stdout + proc.stderr
    assert "--nproc_per_node=2" in log and "--standalone" in log
    run = output / "run"
    assert (run / "lora_adapters" / "adapter_model.safetensors").is_file()
    assert (run / "lora_adapters" / "adapter_config.json").is_file()
    for step in (3, 6):
        ckpt = run / f"checkpoint-{step}"
        assert (ckpt / "checkpoint_complete.json").is_file()
        assert (ckpt / "rng_state_0.pth").is_file() and (ckpt / "rng_state_1.pth").is_file()  # two ranks
    assert owners(run) == {UID}


def test_master_and_worker_containers_with_the_operators_env_form_one_ddp_group(
    docker: Docker, image: str, models: Path, output: Path, names: list[str]
) -> None:
    job = f"hat-{uuid.uuid4().hex[:6]}"
    master_host, port = f"{job}-master-0", free_port()
    # Exactly what the training operator injects into a PyTorchJob of 1 Master + 1 Worker, nprocPerNode 1.
    def operator_env(replica_rank: int) -> dict[str, str]:
        return {
            "PYTHONUNBUFFERED": "1",
            "MASTER_ADDR": master_host,
            "MASTER_PORT": str(port),
            "PET_MASTER_ADDR": master_host,
            "PET_MASTER_PORT": str(port),
            "WORLD_SIZE": "2",
            "RANK": str(replica_rank),
            "PET_NPROC_PER_NODE": "1",
            "PET_NODE_RANK": str(replica_rank),
            "PET_NNODES": "2",
        }

    # The operator's Service makes <job>-master-0 resolve; here both containers share the host network.
    hosts = ["--add-host", f"{master_host}:127.0.0.1"]
    started = []
    for rank, role in ((0, "master"), (1, "worker")):
        env = trainer_env(**operator_env(rank))
        name = container_name(names, role)
        docker(*run_args(name, models, output, env, "-d", *hosts), image)
        started.append(name)
    codes = [docker("wait", name, timeout=300).stdout.strip() for name in started]
    logs = {name: docker("logs", name).stderr + docker("logs", name).stdout for name in started}
    assert codes == ["0", "0"], logs
    assert "--nnodes=2" in logs[started[0]] and "--node_rank=0" in logs[started[0]]
    assert "--node_rank=1" in logs[started[1]] and f"--master_addr={master_host}" in logs[started[1]]
    run = output / "run"
    assert (run / "lora_adapters" / "adapter_model.safetensors").is_file()
    for step in (3, 6):  # global ranks 0 and 1, one in each container: one group of two
        ckpt = run / f"checkpoint-{step}"
        assert (ckpt / "rng_state_0.pth").is_file() and (ckpt / "rng_state_1.pth").is_file()
        assert not (ckpt / "rng_state_2.pth").exists()
    assert owners(run) == {UID}


def test_docker_stop_saves_a_checkpoint_within_the_grace_period_and_a_new_container_resumes(
    docker: Docker, image: str, models: Path, output: Path, names: list[str]
) -> None:
    grace = 60
    env = trainer_env(NPROC_PER_NODE="2", MAX_STEPS="100000", SAVE_STEPS="100000",
                      TERMINATION_LOG="/output/termination-log")
    first = container_name(names, "stopped")
    docker(*run_args(first, models, output, env, "-d"), image)
    deadline = time.monotonic() + 240
    while "'loss'" not in docker("logs", first).stdout:
        assert time.monotonic() < deadline, docker("logs", first).stderr[-3000:]
        assert docker.inspect(first)["State"]["Running"], docker("logs", first).stderr[-3000:]
        time.sleep(1)
    started = time.monotonic()
    docker("stop", "-t", str(grace), first, timeout=grace + 30)
    took = time.monotonic() - started
    state = docker.inspect(first)["State"]
    log = docker("logs", first).stderr
    assert state["ExitCode"] == 143, log[-3000:]
    assert took < grace, f"docker stop took {took:.1f} s: the container was killed, not stopped"
    run = output / "run"
    complete = sorted(int(p.parent.name.split("-")[1]) for p in run.glob("checkpoint-*/checkpoint_complete.json"))
    assert len(complete) == 1, sorted(p.name for p in run.iterdir())
    step = complete[0]
    assert step >= 1
    assert json.loads((run / f"checkpoint-{step}" / "checkpoint_complete.json").read_text())["step"] == step
    assert not (run / "lora_adapters").exists()  # stopped: no final adapter
    reason = (output / "termination-log").read_text()
    assert f"stopped by SIGTERM at step {step}" in reason and f"checkpoint-{step} saved" in reason
    assert len(reason.strip().splitlines()) == 1

    env2 = trainer_env(NPROC_PER_NODE="2", MAX_STEPS=str(step + 3), SAVE_STEPS="100000")
    second = docker(*run_args(container_name(names, "resumed"), models, output, env2), image, timeout=300)
    log2 = second.stdout + second.stderr
    assert re.search(rf"resuming from /output/run/checkpoint-{step} at step {step}\b", log2), log2[-3000:]
    assert len(re.findall(r"^\{'loss'", second.stdout, re.M)) == 3  # steps step+1 .. step+3 only
    assert (run / "lora_adapters" / "adapter_model.safetensors").is_file()
    assert owners(run) == {UID}


def test_bad_env_value_exits_2_naming_the_variable_in_the_log_and_the_termination_log(
    docker: Docker, image: str, models: Path, output: Path, names: list[str], tmp_path: Path
) -> None:
    termination_log = tmp_path / "termination-log"
    termination_log.write_text("")
    termination_log.chmod(0o666)
    env = trainer_env(USE_LORA="maybe")
    name = container_name(names, "bad")
    started = time.monotonic()
    proc = docker(*run_args(name, models, output, env, "-v", f"{termination_log}:/dev/termination-log"), image,
                  timeout=120, check=False)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert time.monotonic() - started < 60  # stopped before torchrun, no model loaded
    assert "USE_LORA" in proc.stderr and "'maybe'" in proc.stderr
    assert TORCHRUN_MODULE not in proc.stderr
    message = termination_log.read_text()
    assert "USE_LORA" in message and "configuration error" in message
    assert docker.inspect(name)["State"]["ExitCode"] == 2
