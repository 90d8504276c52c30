"""Rank and world size, from the variables torchrun (or the Kubeflow training operator) sets.

Kept in one place so that "who writes" and "who waits" are decided the same way everywhere: rank 0
writes checkpoints and the final adapter; local rank 0 of each node fills the audio code cache.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import time
from collections.abc import Callable, Sequence
from typing import Any

from trainer import errors
from trainer.errors import Stopped

log = logging.getLogger(__name__)

KEY_PREFIX = "higgs-audio-trainer/"  # our keys in the process group's store
PROGRESS_KEY = f"{KEY_PREFIX}progress"  # bumped by ranks at work, read by ranks waiting in `barrier`
POLL_SECONDS = 0.1
_barrier_ids = itertools.count()  # every rank calls `barrier` in the same order, so the ids agree


def rank() -> int:
    """This process's global rank, as torchrun sets it (0 when not launched by torchrun)."""
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    """This process's rank on its node, which picks its GPU."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def world_size() -> int:
    """How many processes take part in the run (1 when not launched by torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    """Whether this is rank 0, the one process that writes, logs and pushes."""
    return rank() == 0


def start_cpu_group(timeout_seconds: float) -> None:
    """Start the gloo process group of a CPU run launched with several ranks, with `timeout_seconds`.

    transformers hands `--ddp_timeout` to the process group it starts only on GPU; on CPU the group would
    wait 1800 s whatever was asked. Started here, before `TrainingArguments`, accelerate takes it as it is.
    A no-op for one process or when a group is already up.
    """
    import torch.distributed as tdist

    if world_size() > 1 and tdist.is_available() and not tdist.is_initialized():
        from datetime import timedelta

        tdist.init_process_group("gloo", timeout=timedelta(seconds=timeout_seconds))


def store() -> Any | None:
    """The key-value store every rank of the process group shares (torchrun's TCPStore); None without one.

    torchrun keeps it across the restarts of its worker group (`--max-restarts`): a key an earlier attempt
    set is still there. Flags are cleared before they are used again (`clear_flag`); `barrier`'s counts
    are not yet, so a barrier of a restarted worker group can pass before every rank has arrived.

    `_get_default_store` is private in torch but has been there since 1.x; it is the one handle on a
    store that all ranks already reach, whatever the backend.
    """
    import torch.distributed as tdist

    if not (tdist.is_available() and tdist.is_initialized()):
        return None
    return tdist.distributed_c10d._get_default_store()


def note_progress() -> None:
    """Tell the ranks waiting in `barrier` that this one is still at work, so that their wait goes on.

    Their wait is bounded by the time without progress. One store round trip; a no-op without a process group.
    """
    shared = store()
    if shared is not None:
        shared.add(PROGRESS_KEY, 1)


def announce(name: str) -> None:
    """Set the flag `name` for ranks waiting in `wait_for_flag` (no-op without a process group).

    Safe from any thread: rank 0's checkpoint thread announces the end of its write.
    """
    shared = store()
    if shared is not None:
        shared.set(f"{KEY_PREFIX}{name}", "1")


def clear_flag(name: str) -> None:
    """Remove the flag `name`, which an earlier attempt of the run may have left in the store.

    Call it before any rank may wait for the flag again. A no-op without a process group.
    """
    shared = store()
    if shared is not None:
        shared.delete_key(f"{KEY_PREFIX}{name}")


def wait_for_flag(name: str) -> bool:
    """Wait until a rank `announce`s `name`; True once it has, at once without a process group.

    Bounded by the process group's timeout (`--ddp_timeout`), and False as soon as the store cannot be
    reached: the store goes with the launcher, so a launcher that is tearing the ranks down ends the wait.
    """
    shared = store()
    if shared is None:
        return True
    key = f"{KEY_PREFIX}{name}"
    try:
        deadline = time.monotonic() + shared.timeout.total_seconds()
        while not shared.check([key]):
            if time.monotonic() >= deadline:
                return False
            time.sleep(POLL_SECONDS)
    except Exception:  # the store is gone (DistStoreError, a reset connection): nobody will announce it now
        return False
    return True


def barrier(poll: Callable[[], None] | None = None) -> None:
    """Wait for every rank, when a process group is up (no-op in a single process).

    The ranks count themselves in through the store and poll it with short sleeps, instead of a collective
    `torch.distributed.barrier()`: a collective blocks in C++, where Python runs no signal handler, so a
    SIGTERM to a rank waiting for rank 0 to encode the audio was acted on only when rank 0 arrived
    (minutes); and a collective left in flight by a rank that stops keeps its process from exiting (gloo
    joins the thread that runs it). The store holds no GPU work, so NCCL runs behave the same. `poll` runs
    between sleeps and may raise (`raise_if_peer_stopped`).

    Bounded by the process group's timeout (`--ddp_timeout`), as a collective is, but counted from the
    last `note_progress` of any rank: the wait for the first encoding of hours of audio may take longer
    than the timeout, and only a rank that stopped making progress should end the run.
    """
    shared = store()
    if shared is None:
        return
    import torch.distributed as tdist

    key, world = f"{KEY_PREFIX}barrier-{next(_barrier_ids)}", tdist.get_world_size()
    arrived = shared.add(key, 1)
    timeout = shared.timeout.total_seconds()
    progress = shared.add(PROGRESS_KEY, 0)
    deadline = time.monotonic() + timeout
    while arrived < world:
        if poll is not None:
            poll()
        now, seen = time.monotonic(), shared.add(PROGRESS_KEY, 0)
        if seen != progress:
            progress, deadline = seen, now + timeout
        if now >= deadline:
            raise tdist.DistStoreError(
                f"rank {tdist.get_rank()}: {arrived} of {world} ranks reached the barrier, and no rank made "
                f"progress for {timeout:g} s (the process group's timeout, --ddp_timeout / DDP_TIMEOUT)"
            )
        time.sleep(POLL_SECONDS)
        arrived = shared.add(key, 0)


# ---- a signal before training: the other ranks must not wait for a rank that is gone ----------------

PEER_STOP_KEY = KEY_PREFIX + "stopped-before-training"  # "<rank> <signal number>"


def tell_peers(signum: int) -> None:
    """Before training, let the other ranks know that this one stops on `signum`, so they stop waiting for it.

    They stop polling and waiting (`trainer.train.signals` says when).

    Never raises: the store may be gone with its host, and then the others learn it from torchrun or from a
    failed collective.
    """
    shared = store()
    if shared is None:
        return
    try:
        shared.set(PEER_STOP_KEY, f"{rank()} {int(signum)}")
    except Exception as err:
        log.warning("could not tell the other ranks about the signal: %s", err)


def raise_if_peer_stopped() -> None:
    """Raise `Stopped`, with the peer's signal's code, if another rank stopped before training.

    One store round trip; a no-op without a process group.
    """
    shared = store()
    if shared is None or not shared.check([PEER_STOP_KEY]):
        return
    peer, signum = (int(part) for part in shared.get(PEER_STOP_KEY).split())
    name = signal.Signals(signum).name
    raise Stopped(errors.for_signal(signum),
                  f"stopped by {name} on rank {peer} before training started; nothing to save")


# ---- per-step agreement: the one place that runs a collective for training code ----------------------


def _group_size() -> int:
    """Ranks in the process group; 1 without one."""
    import torch.distributed as tdist

    if not (tdist.is_available() and tdist.is_initialized()):
        return 1
    return tdist.get_world_size()


def collective_device() -> Any:
    """Where a collective's tensor must live: this rank's GPU under NCCL, the CPU under gloo."""
    import torch
    import torch.distributed as tdist

    if tdist.is_available() and tdist.is_initialized() and tdist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def max_over_ranks(flags: Sequence[Any]) -> list[int]:
    """For each per-step flag, the largest value any rank holds, in one MAX all_reduce.

    A flag is an int, or a 0-d tensor on any device: "did any rank see a NaN?", "which signal did any rank
    get?" (0: none did).

    Every rank must call it at the same point with as many flags. Without a process group it is the
    local values and no collective.
    """
    import torch

    if _group_size() == 1:
        return [int(v) for v in flags]
    import torch.distributed as tdist

    device = collective_device()
    vec = torch.stack([torch.as_tensor(v).reshape(()).to(device=device, dtype=torch.int64) for v in flags])
    tdist.all_reduce(vec, op=tdist.ReduceOp.MAX)
    return [int(v) for v in vec.tolist()]


def sum_over_ranks(values: Any) -> Any:
    """`values` (a 1-d float tensor) summed over ranks, on the host; itself without a process group."""
    if _group_size() == 1:
        return values.cpu()
    import torch.distributed as tdist

    vec = values.to(collective_device())
    tdist.all_reduce(vec)
    return vec.cpu()
