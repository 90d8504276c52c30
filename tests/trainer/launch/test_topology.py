"""The launcher under Kubeflow Trainer v2: the PET_* variables the torch plugin sets in container `node`
(kubeflow/trainer pkg/runtime/framework/plugins/torch) give the same torchrun plan as the v1 operator's,
and two real launches wired that way train together."""

from __future__ import annotations

import socket

import pytest

from tests.processes import launch, launch_env, trainer_process
from trainer import errors
from trainer.launch.topology import TORCHRUN_MODULE, nproc_per_node, topology_from_env, torchrun_command

TRAINER_PORT = "29400"  # the plugin's constants.ContainerTrainerPort


def plugin_env(job: str, index: int, num_nodes: int, num_proc: str = "auto") -> dict[str, str]:
    """What the torch plugin injects: PET_NODE_RANK comes from the pod's Job completion index."""
    return {
        "PET_NNODES": str(num_nodes),
        "PET_NPROC_PER_NODE": num_proc,
        "PET_NODE_RANK": str(index),
        "PET_MASTER_ADDR": f"{job}-node-0-0.{job}",
        "PET_MASTER_PORT": TRAINER_PORT,
    }


def plan(env: dict[str, str], gpus: int = 0) -> list[str]:
    return torchrun_command(topology_from_env(env, lambda: gpus), ["train"])[3:-3]


def test_torch_plugin_env_gives_a_static_multi_node_launch() -> None:
    assert plan(plugin_env("voice-a", 1, 2, "4")) == [
        "--nnodes=2", "--nproc_per_node=4", "--max_restarts=0", "--node_rank=1",
        "--master_addr=voice-a-node-0-0.voice-a", "--master_port=29400",
    ]


def test_a_trainjob_of_one_node_runs_standalone() -> None:
    assert "--standalone" in plan(plugin_env("voice-a", 0, 1))


def test_the_plugins_default_auto_gives_way_to_the_charts_nproc_per_node() -> None:
    """Without numProcPerNode the plugin writes auto; the chart passes a word (gpu, cpu) as NPROC_PER_NODE."""
    env = plugin_env("j", 0, 2)
    assert nproc_per_node(env, lambda: 8) == 8
    assert nproc_per_node({**env, "NPROC_PER_NODE": "2"}, lambda: 8) == 2


def test_numprocpernode_that_disagrees_with_the_container_names_both_fields() -> None:
    from trainer.errors import ConfigError

    with pytest.raises(ConfigError, match=r"TrainJob's spec.trainer.numProcPerNode\) disagree"):
        nproc_per_node({**plugin_env("j", 0, 2, "4"), "NPROC_PER_NODE": "2"}, lambda: 0)


def test_config_error_under_the_plugin_env_exits_2_before_torchrun(base_args, tmp_path) -> None:
    """Exit code 2 is what the runtime's pod failure policy turns into a failed TrainJob, not a restart."""
    env = {**launch_env(base_args, tmp_path, use_lora="maybe"), **plugin_env("j", 1, 2)}
    proc = launch(env)
    assert proc.returncode == errors.CONFIG_ERROR
    assert TORCHRUN_MODULE not in proc.stderr
    assert "USE_LORA" in (tmp_path / "termination-log").read_text()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_nodes_wired_by_the_plugin_env_train_together(base_args, tmp_path) -> None:
    """Two real launchers, node ranks 0 and 1 of a 2-node TrainJob (master address made local), one CPU
    process each: one rendezvous, one run, both exit 0 and rank 0 writes the adapter."""
    port = str(free_port())
    logs, procs = [], []
    out = tmp_path / "out"
    for index in (0, 1):
        env = {**launch_env(base_args, tmp_path, termination_log=f"term-{index}", output_dir=str(out),
                            max_steps="2", save_steps="2", logging_steps="1"),
               **plugin_env("j", index, 2, "1"), "PET_MASTER_ADDR": "127.0.0.1", "PET_MASTER_PORT": port}
        logs.append(tmp_path / f"node-{index}.log")
        procs.append(trainer_process("launch", env, logs[-1]))
    with procs[0] as node0, procs[1] as node1:
        codes = [node0.proc.wait(timeout=600), node1.proc.wait(timeout=600)]
    assert codes == [0, 0], "\n".join(log.read_text()[-3000:] for log in logs)
    text = logs[0].read_text()
    assert "--nnodes=2" in text and "--node_rank=0" in text and f"--master_port={port}" in text, text[-2000:]
    assert (out / "lora_adapters").is_dir()
