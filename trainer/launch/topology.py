"""Where the ranks come from: the operator's or the user's environment -> one explicit `torchrun` command.

Every `PET_*` value becomes an argument, so torchrun has one source of truth (`launch --help` lists them).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from trainer import rank_reports
from trainer.errors import ConfigError

NPROC_FLAG = "--nproc_per_node"
NPROC_FLAGS = (NPROC_FLAG, "--nproc-per-node")  # torchrun's two spellings
DEFAULT_MASTER_PORT = 29500  # torchrun's own default

# Every variable the launcher itself reads, with its meaning (for `launch --help` and the docs).
ENV_VARS = {
    "NPROC_PER_NODE": "training processes on this node: N, auto (one per GPU, 1 without; default), gpu or cpu; "
                      f"{NPROC_FLAG} overrides it",
    "PET_NPROC_PER_NODE": f"the same, as the training operator sets it; its default auto gives way to {NPROC_FLAG} "
                          "and NPROC_PER_NODE, any other value must agree with them",
    "PET_NNODES": "number of nodes (N), or MIN:MAX with elastic rendezvous",
    "PET_NODE_RANK": "this node's rank, 0 to N-1",
    "PET_MASTER_ADDR": "address of node 0, which hosts the rendezvous",
    "PET_MASTER_PORT": f"its port (default {DEFAULT_MASTER_PORT})",
    "WORLD_SIZE": "number of nodes when PET_NNODES is unset (older operators); with PET_NNODES, checked against "
                  "it: nodes x PET_NPROC_PER_NODE (nodes where that is auto), as the training operator sets it",
    "RANK": "this node's rank when PET_NODE_RANK is unset",
    "MASTER_ADDR": "address of node 0 when PET_MASTER_ADDR is unset",
    "MASTER_PORT": "its port when PET_MASTER_PORT is unset",
    "PET_RDZV_ENDPOINT": "host:port of the c10d rendezvous: elastic training",
    "PET_RDZV_BACKEND": "rendezvous backend with PET_RDZV_ENDPOINT (default c10d)",
    "PET_RDZV_ID": "rendezvous id with PET_RDZV_ENDPOINT",
    "PET_RDZV_CONF": "extra rendezvous settings (key=value,...) with PET_RDZV_ENDPOINT",
    "PET_MAX_RESTARTS": "worker group restarts torchrun allows (default 0: the operator restarts pods)",
    "PREFLIGHT": "true: run the preflight's checks before train and prepare (the chart's preflight.enabled); "
                 "a failed one exits 2. Default false",
    "PREFLIGHT_EXPECT_GPUS": "GPUs the preflight expects to see (default 0: not checked)",
    "PREFLIGHT_MIN_SHM": "smallest /dev/shm the preflight accepts (default 1Gi)",
    "PREFLIGHT_MIN_FREE_SPACE": "free space the output volume needs (default: estimated from the newest "
                                "checkpoint or the model's weight files)",
    "PREFLIGHT_GATEWAY_TIMEOUT_SECONDS": "how long the preflight waits for the Pushgateway (default 5)",
    rank_reports.TERMINATION_LOG_ENV:
        f"file for the one-line failure reason (default {rank_reports.DEFAULT_TERMINATION_LOG})",
}


@dataclass(frozen=True)
class Topology:
    """What torchrun needs to know about this node and its peers."""

    nnodes: str  # "N", or "MIN:MAX" with elastic rendezvous
    nproc_per_node: int
    node_rank: int | None = None  # static multi-node only
    master_addr: str | None = None
    master_port: int | None = None
    rdzv_backend: str | None = None  # elastic only
    rdzv_endpoint: str | None = None
    rdzv_id: str | None = None
    rdzv_conf: str | None = None
    max_restarts: int = 0

    @property
    def standalone(self) -> bool:
        """Whether torchrun runs one node on its own, with no rendezvous to meet."""
        return self.nnodes == "1" and self.rdzv_endpoint is None


def visible_gpus() -> int:
    """CUDA devices this process can see (0 without CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _get(env: Mapping[str, str], *names: str) -> tuple[str, str] | None:
    """(name, value) of the first of `names` set to a non-empty value."""
    for name in names:
        value = env.get(name, "").strip()
        if value:
            return name, value
    return None


def _source(name: str) -> str:
    """How an error names where a value came from: the flag itself, or "environment variable NAME"."""
    return name if name.startswith("-") else f"environment variable {name}"


def _int(found: tuple[str, str], minimum: int, maximum: int | None = None) -> int:
    name, raw = found
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or value < minimum or (maximum is not None and value > maximum):
        bound = f" and at most {maximum}" if maximum is not None else ""
        raise ConfigError(f"{_source(name)}: expected an integer of at least {minimum}{bound}, got {raw!r}")
    return value


def nproc_per_node(env: Mapping[str, str], gpus: Callable[[], int] = visible_gpus, flag: str | None = None) -> int:
    """Processes per node from `--nproc_per_node` (`flag`), NPROC_PER_NODE or PET_NPROC_PER_NODE (see `USAGE`)."""
    # the flag outranks the variable, as a trainer flag outranks its variable
    ours = (NPROC_FLAG, flag.strip()) if flag is not None else _get(env, "NPROC_PER_NODE")
    operators = _get(env, "PET_NPROC_PER_NODE")
    # the operator writes PET_NPROC_PER_NODE=auto into every pod unless spec.nprocPerNode says otherwise
    # (Trainer v2's torch plugin likewise, unless the TrainJob's spec.trainer.numProcPerNode does):
    # that default gives way to the container's own choice; two explicit choices must agree
    if ours and operators and operators[1].lower() != "auto" and ours[1].lower() != operators[1].lower():
        mine = f"{NPROC_FLAG} {ours[1]!r} and environment variable" if flag is not None else (
            f"environment variables NPROC_PER_NODE={ours[1]!r} and")
        raise ConfigError(f"{mine} PET_NPROC_PER_NODE={operators[1]!r} (the PyTorchJob's spec.nprocPerNode or the "
                          "TrainJob's spec.trainer.numProcPerNode) disagree; set one")
    found = ours or operators or ("NPROC_PER_NODE", "auto")
    name, raw = found
    word = raw.lower()
    if word == "auto":
        return max(gpus(), 1)
    if word == "gpu":
        count = gpus()
        if count == 0:
            raise ConfigError(f"{_source(name)}: gpu asks for one process per GPU, but no GPU is visible; "
                              "use auto, cpu or a number")
        return count
    if word == "cpu":
        return len(os.sched_getaffinity(0))
    if not raw.isdigit():
        raise ConfigError(f"{_source(name)}: expected a positive integer, auto, gpu or cpu, got {raw!r}")
    return _int(found, 1)


def topology_from_env(
    env: Mapping[str, str], gpus: Callable[[], int] = visible_gpus, nproc_flag: str | None = None
) -> Topology:
    """This node's place in the job, from the training operator's variables.

    Args:
        env (`Mapping[str, str]`):
            The environment the training operator set.
        gpus (`Callable[[], int]`, *optional*):
            Counts the GPUs this node sees.
        nproc_flag (`str`, *optional*):
            The value of `--nproc_per_node`, when given: the processes per node.

    Raises:
        ConfigError: The variables do not describe a place in a job.
    """
    nproc = nproc_per_node(env, gpus, nproc_flag)
    endpoint = _get(env, "PET_RDZV_ENDPOINT")
    restarts = _get(env, "PET_MAX_RESTARTS")
    max_restarts = _int(restarts, 0) if restarts else 0
    if endpoint:
        nnodes = _get(env, "PET_NNODES")
        if not nnodes:
            raise ConfigError("environment variable PET_NNODES: required with PET_RDZV_ENDPOINT (N or MIN:MAX)")
        parts = nnodes[1].split(":")
        if len(parts) > 2:
            raise ConfigError(f"environment variable PET_NNODES: expected N or MIN:MAX, got {nnodes[1]!r}")
        low, high = (_int(("PET_NNODES", p), 1) for p in (parts[0], parts[-1]))
        if low > high:
            raise ConfigError(f"environment variable PET_NNODES: MIN above MAX in {nnodes[1]!r}")
        backend, rdzv_id, conf = (_get(env, n) for n in ("PET_RDZV_BACKEND", "PET_RDZV_ID", "PET_RDZV_CONF"))
        return Topology(
            nnodes=f"{low}:{high}" if low != high else str(low),
            nproc_per_node=nproc,
            rdzv_backend=backend[1] if backend else "c10d",
            rdzv_endpoint=endpoint[1],
            rdzv_id=rdzv_id[1] if rdzv_id else None,
            rdzv_conf=conf[1] if conf else None,
            max_restarts=max_restarts,
        )
    master = _get(env, "PET_MASTER_ADDR", "MASTER_ADDR")
    nnodes_var = _get(env, "PET_NNODES") or (_get(env, "WORLD_SIZE") if master else None)
    nnodes = _int(nnodes_var, 1) if nnodes_var else 1
    if nnodes_var and nnodes_var[0] == "PET_NNODES":
        check_world_size(env, nnodes, nproc)
    if nnodes == 1:
        return Topology(nnodes="1", nproc_per_node=nproc, max_restarts=max_restarts)
    if not master:
        raise ConfigError(f"environment variable PET_MASTER_ADDR (or MASTER_ADDR): required with "
                          f"{nnodes_var[0] if nnodes_var else 'PET_NNODES'}={nnodes}")
    rank = _get(env, "PET_NODE_RANK", "RANK")
    if not rank:
        raise ConfigError(f"environment variable PET_NODE_RANK (or RANK): required with {nnodes} nodes")
    port = _get(env, "PET_MASTER_PORT", "MASTER_PORT")
    return Topology(
        nnodes=str(nnodes),
        nproc_per_node=nproc,
        node_rank=_int(rank, 0, nnodes - 1),
        master_addr=master[1],
        master_port=_int(port, 1, 65535) if port else DEFAULT_MASTER_PORT,
        max_restarts=max_restarts,
    )


def check_world_size(env: Mapping[str, str], nnodes: int, nproc: int) -> None:
    """The operator's `WORLD_SIZE` must count what this launch will run; raises `ConfigError` naming both.

    The Kubeflow training operator sets `WORLD_SIZE` to nodes x `spec.nprocPerNode` where that is a number,
    and to the number of nodes where it is a word (`auto`: "world size env will not be used", its source
    says). torchrun sets each rank's own WORLD_SIZE, so a disagreement harms nothing directly; it says that the
    job and this pod see different jobs (a hand-edited variable, replicas changed under a running job), which
    would otherwise show as a rendezvous that never completes.

    Args:
        env (`Mapping[str, str]`):
            the pod's environment (`WORLD_SIZE`, `PET_NPROC_PER_NODE`).
        nnodes (`int`):
            the nodes this launch counts (`PET_NNODES`).
        nproc (`int`):
            the processes this node will start.
    """
    world = _get(env, "WORLD_SIZE")
    if not world:
        return
    size = _int(world, 1)
    operators = _get(env, "PET_NPROC_PER_NODE")
    if operators and operators[1].isdigit():  # it agrees with `nproc` (`nproc_per_node` checked that)
        expected, counted = nnodes * nproc, (f"PET_NNODES={nnodes} x processes per node {nproc} "
                                             f"(PET_NPROC_PER_NODE={operators[1]!r})")
        rule = "nodes x processes per node"
    else:
        expected, counted = nnodes, f"PET_NNODES={nnodes}"
        word = operators[1] if operators else "unset"
        rule = f"the number of nodes while spec.nprocPerNode is not a number (PET_NPROC_PER_NODE {word})"
    if size != expected:
        raise ConfigError(f"environment variables WORLD_SIZE={size} and {counted} = {expected} disagree: the "
                          f"training operator sets WORLD_SIZE to {rule}; check the job's replicas and "
                          "spec.nprocPerNode")


TORCHRUN_MODULE = "trainer.launch.torchrun"


def torchrun_command(topo: Topology, args: Sequence[str]) -> list[str]:
    """`python -m trainer.launch.torchrun ... -m trainer ARGS` for this node.

    Torchrun's own arguments, run by `trainer.launch.torchrun`, which keeps torchrun's failure report for the
    launcher.
    """
    cmd = [sys.executable, "-m", TORCHRUN_MODULE, f"--nnodes={topo.nnodes}",
           f"--nproc_per_node={topo.nproc_per_node}", f"--max_restarts={topo.max_restarts}"]
    if topo.standalone:
        cmd.append("--standalone")
    elif topo.rdzv_endpoint is not None:
        cmd += [f"--rdzv_backend={topo.rdzv_backend}", f"--rdzv_endpoint={topo.rdzv_endpoint}"]
        cmd += [f"--rdzv_id={topo.rdzv_id}"] if topo.rdzv_id else []
        cmd += [f"--rdzv_conf={topo.rdzv_conf}"] if topo.rdzv_conf else []
    else:
        cmd += [f"--node_rank={topo.node_rank}", f"--master_addr={topo.master_addr}",
                f"--master_port={topo.master_port}"]
    return [*cmd, "-m", "trainer", *args]
