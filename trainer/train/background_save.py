"""Finish a checkpoint on a background thread, so that a LoRA save holds training only for the adapter.

Most of a LoRA checkpoint, and most of the save's time, is the optimizer state: with `--async_save` (the
default) a `PendingCheckpoint` writes it while training goes on, and the guarantees of a synchronous save
stand, because the marker is still the last thing written (docs/design/checkpoints.md).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from trainer.train import checkpoint as ckpt

log = logging.getLogger(__name__)

OPTIMIZER_FILE = "optimizer.pt"  # the names transformers' Trainer reads back on resume
SCHEDULER_FILE = "scheduler.pt"


def write_state(state: Any, path: Path) -> None:
    """Write one host copy where the Trainer reads it back on resume (`torch.load`)."""
    torch.save(state, path)


def host_copy(obj: Any) -> Any:
    """`obj` (a state dict: nested dicts, lists and tuples) with every tensor copied to host memory.

    Plain values (floats, ints, strings) are immutable or rebuilt here, so nothing in the copy is shared
    with the live optimizer or scheduler.
    """
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: host_copy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [host_copy(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(host_copy(v) for v in obj)
    return obj


@dataclass
class Written:
    """A checkpoint the background thread completed."""

    path: Path
    step: int
    seconds: float  # from the start of the save to its marker and the rotation after it
    blocking_seconds: float  # of those, how long training waited
    size: int  # bytes on disk, marker included
    removed: list[Path] = field(default_factory=list)  # older checkpoints rotated away after the marker


class PendingCheckpoint:
    """One checkpoint being finished on a background thread (rank 0 only).

    A LoRA checkpoint is the adapter plus what resuming needs. Most of it, and most of the save's time, is
    the optimizer state: AdamW keeps two moments per trainable weight, twice the adapter's size. With
    `--async_save` (the default) the save writes the adapter, the RNG states and the trainer state while
    training waits, and hands the optimizer and scheduler state to a `PendingCheckpoint`. Its thread copies
    that state to host memory, writes it, flushes the checkpoint to stable storage, writes the completeness
    marker, then rotates old checkpoints, while training goes on.

    A full fine-tuning save writes its model and optimizer state while training waits (a host copy would be
    the model's size twice over); only the flush, the marker and the rotation go to the thread.

    Everything else of the checkpoint (adapter or model, RNG states of every rank, trainer state) is
    written when this is created. `files` maps file names in `path` to state dicts still to write there
    (none for full fine-tuning); those may hold the optimizer's live tensors: the thread first copies
    them all to host memory, and `guard`'s next step (a step pre-hook) waits until it has, so that
    training goes on through the next forward and backward while the copy is made. Then the thread writes
    the copies, flushes the checkpoint, writes the marker, and calls `rotate`, which returns the
    checkpoints it removed.

    The guarantees of a synchronous save stand, because the marker is still the last thing written
    (docs/design/checkpoints.md):
    - one write at most is in flight: the next save waits for it, and so do the end of training, the reload
      of the best checkpoint and every other way out of `train()`, a signal stop included, so that the
      checkpoint a run reports is complete before the process ends;
    - a failed write is reported where training next looks (every step end, and those waits): out of disk
      stops the run with exit code 5 as a synchronous save does, after removing the partial checkpoint.
    """

    def __init__(
        self,
        path: Path,
        step: int,
        files: dict[str, Any],
        *,
        started: float,
        rotate: Callable[[], list[Path]],
        guard: torch.optim.Optimizer | None = None,
        on_end: Callable[[], None] | None = None,
    ) -> None:
        self.path = path
        self.step = step
        self.started = started
        # Training's waits for this checkpoint: the caller adds the save itself once training goes on; a step
        # that waits for the copy and every `wait` add theirs.
        self.blocking_seconds = 0.0
        self._files = files
        self._rotate = rotate
        self._on_end = on_end  # called on the thread once the write has ended, complete or failed
        self._copied = threading.Event()
        self._written: Written | None = None
        self._error: BaseException | None = None
        # A daemon thread: a process that ends without waiting (the signal watchdog's os._exit) must not hang
        # on it, and what it leaves then has no marker, so it is ignored on restart.
        self._thread = threading.Thread(target=self._run, name=f"save-{path.name}", daemon=True)
        self._thread.start()
        # After the start, so that a thread that could not start leaves no hook waiting for it. The caller is
        # still in here, so no step can run before the hook is in place.
        self._hook = guard.register_step_pre_hook(self._before_step) if guard is not None else None

    def _before_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        """The guarded optimizer's step changes its state in place: not before the copy is made.

        The copy is needed because the optimizer updates its tensors in place at the next step: writing the live
        state from another thread would save a mix of two steps. The next optimizer step therefore waits, in
        this step pre-hook, until the copy is made; the forward and backward before it do not.
        """
        if not self._copied.is_set():
            waited = time.monotonic()
            self._copied.wait()
            self.blocking_seconds += time.monotonic() - waited

    def _run(self) -> None:
        """The thread: copy, write, flush, marker, rotation; an error is kept for `wait` to raise.

        Before the marker the thread also flushes every file of the checkpoint to stable storage, the ones
        training wrote included: a node that loses power must not leave a marker that vouches for data still in
        its page cache. Training does not wait for that flush.
        """
        # Give the GIL back at once: the training thread that started this one would otherwise wait a whole
        # switch interval (5 ms) for it before it can go on.
        time.sleep(0)
        try:
            try:
                copies = {name: host_copy(state) for name, state in self._files.items()}
            finally:
                self._files = {}
                self._copied.set()  # failed or not: a step must never wait for a copy that will not come
            for name in list(copies):
                write_state(copies.pop(name), self.path / name)  # each copy goes once it is written
            ckpt.sync_files(self.path)  # on stable storage before the marker vouches for them (off training's path)
            size = ckpt.write_marker(self.path, self.step)
            removed = self._rotate()
            # Rotation included, as in a synchronous save: a wait for this thread is never longer than the save.
            seconds = time.monotonic() - self.started
            self._written = Written(self.path, self.step, seconds, 0.0, size, removed)
        except BaseException as err:  # handed to the training thread, which raises it
            self._error = err
        finally:
            if self._on_end is not None:
                try:
                    self._on_end()
                except Exception as err:  # the write's own outcome stands; this only tells the other ranks
                    log.warning("could not tell the other ranks that %s has ended: %s", self.path.name, err)

    def done(self) -> bool:
        """Whether the write has ended (complete or failed); never waits."""
        return not self._thread.is_alive()

    def wait(self) -> Written:
        """Wait for the write to end; return what it wrote, or raise the error it failed with.

        Called by the training thread: the time it waits here counts as time training waited for the checkpoint.
        """
        still_writing = self._thread.is_alive()
        waited = time.monotonic()
        self._thread.join()
        ended = time.monotonic()
        self.blocking_seconds += ended - waited
        if self._hook is not None:
            self._hook.remove()  # here, not in the hook: the optimizer iterates its hooks while calling them
            self._hook = None
        if self._error is not None:
            raise self._error
        assert self._written is not None
        if still_writing:
            # Training saw the end only now, after the thread's own last timestamp (it then told the other
            # ranks and exited): the save lasted until here, so training never waits longer than the save took.
            self._written.seconds = max(self._written.seconds, ended - self.started)
        self._written.blocking_seconds = self.blocking_seconds
        return self._written
