"""Rank and world size, from the variables torchrun (or the Kubeflow training operator) sets.

Kept in one place so that "who writes" and "who waits" are decided the same way everywhere: rank 0
writes checkpoints and the final adapter; local rank 0 of each node fills the audio code cache.
"""

from __future__ import annotations

import os


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    """Wait for every rank, when a process group is up (no-op in a single process)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
