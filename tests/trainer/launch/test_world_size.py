"""WORLD_SIZE from the Kubeflow training operator against the launcher's own reading of the topology.

The operator's values are written out by hand from what v1.9.4 sets (../shared/cluster/README.md, and
`getNprocPerNodeInt` in its pytorch controller): WORLD_SIZE = replicas x spec.nprocPerNode where that is a
number, replicas where it is a word. The cluster tier checks the same on the env the real operator wrote
(tests/cluster/test_training_jobs.py, the two-pod scenario)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.processes import launch, launch_env
from trainer import errors
from trainer.errors import ConfigError
from trainer.launch.topology import topology_from_env


def operator_env(rank: int, nnodes: int, nproc: str, world_size: str) -> dict[str, str]:
    """Container `pytorch` of replica `rank` (0 the Master), as the operator writes it."""
    return {"MASTER_ADDR": "demo-master-0", "PET_MASTER_ADDR": "demo-master-0", "MASTER_PORT": "23456",
            "PET_MASTER_PORT": "23456", "WORLD_SIZE": world_size, "RANK": str(rank), "PET_NODE_RANK": str(rank),
            "PET_NPROC_PER_NODE": nproc, "PET_NNODES": str(nnodes), "PYTHONUNBUFFERED": "1"}


@pytest.mark.parametrize(("nnodes", "nproc", "world_size", "gpus", "processes"), [
    (2, "1", "2", 0, 1),  # the chart's job in the cluster tier: a Master and a Worker, nprocPerNode "1"
    (2, "2", "4", 0, 2),  # nodes x processes per node, not the node count
    (3, "8", "24", 8, 8),
    (2, "auto", "2", 4, 4),  # a word: the operator counts one per node, the launcher one per GPU
    (1, "1", "1", 0, 1),  # a Master alone
])
def test_the_operators_world_size_is_accepted(nnodes: int, nproc: str, world_size: str, gpus: int,
                                              processes: int) -> None:
    for rank in range(nnodes):
        topo = topology_from_env(operator_env(rank, nnodes, nproc, world_size), lambda: gpus)
        assert (topo.nnodes, topo.nproc_per_node) == (str(nnodes), processes)


@pytest.mark.parametrize(("nnodes", "nproc", "world_size", "message"), [
    # the planted fault of the old belief (WORLD_SIZE = nodes) met with processes per node 2
    (2, "2", "2", r"^environment variables WORLD_SIZE=2 and PET_NNODES=2 x processes per node 2 "
                  r"\(PET_NPROC_PER_NODE='2'\) = 4 disagree: the training operator sets WORLD_SIZE to nodes x "
                  r"processes per node; check the job's replicas and spec.nprocPerNode$"),
    (2, "1", "3", r"^environment variables WORLD_SIZE=3 and PET_NNODES=2 x processes per node 1 .* = 2 disagree"),
    (2, "auto", "4", r"^environment variables WORLD_SIZE=4 and PET_NNODES=2 = 2 disagree: the training operator "
                     r"sets WORLD_SIZE to the number of nodes while spec.nprocPerNode is not a number "
                     r"\(PET_NPROC_PER_NODE auto\)"),
    (1, "1", "2", r"^environment variables WORLD_SIZE=2 and PET_NNODES=1 x processes per node 1 .* = 1 disagree"),
    (2, "1", "two", r"^environment variable WORLD_SIZE: expected an integer of at least 1, got 'two'$"),
])
def test_a_world_size_that_disagrees_is_a_config_error_naming_both(nnodes: int, nproc: str, world_size: str,
                                                                   message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        topology_from_env(operator_env(0, nnodes, nproc, world_size), lambda: 4)


def test_world_size_without_pet_nnodes_still_counts_nodes_for_older_operators() -> None:
    env = {"MASTER_ADDR": "m", "MASTER_PORT": "23456", "WORLD_SIZE": "3", "RANK": "1"}
    assert topology_from_env(env, lambda: 0).nnodes == "3"


def test_the_launcher_exits_2_before_torchrun_naming_the_variables(base_args: dict[str, str],
                                                                   tmp_path: Path) -> None:
    env = {**launch_env(base_args, tmp_path), **operator_env(0, 2, "1", "4")}
    proc: subprocess.CompletedProcess[str] = launch(env)
    assert proc.returncode == errors.CONFIG_ERROR
    assert proc.stderr.rstrip().splitlines()[-1].startswith(
        "higgs-audio-trainer launch: exit code 2: configuration error: environment variables WORLD_SIZE=4 and "
        "PET_NNODES=2 x processes per node 1")
    assert "trainer.launch.torchrun" not in proc.stderr
    assert "WORLD_SIZE=4" in (tmp_path / "termination-log").read_text()
