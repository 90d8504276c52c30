"""Observation that leaves a training run as it was.

A sample runs inside `isolated(model)`, and its figures reach the Trainer's log through `log_keeping_control`.

A sample draws random numbers (its own seeded sampling, and the weight initialisation that loading the audio
tokenizer or a scorer does before it reads the real weights), switches the model to evaluation mode with the
key-value cache on, and logs. Unguarded, each of those changes the run it observes: the next dropout mask
(LoRA's `lora_dropout`) and the next shuffle come from a moved generator, and a log call from inside a step
end clears the Trainer's `should_log`, so that step's training loss was never logged (and on several ranks,
only rank 0 skipped the logging all-reduce the others entered: a hang).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch


@contextmanager
def forked_random_state() -> Iterator[None]:
    """Every generator a sample may draw from, put back as it was on the way out.

    Torch's CPU generator and every initialised CUDA device's, Python's `random` and NumPy's global state.
    """
    py_state, np_state = random.getstate(), np.random.get_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() and torch.cuda.is_initialized() \
        else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


@contextmanager
def isolated(model: Any) -> Iterator[None]:
    """A forked random state, and the model's training mode, `use_cache` and gradient mode restored on exit.

    `use_cache` is read from the configuration the model carries (a `PeftModel` forwards to its base):
    training with gradient checkpointing turns it off, and generation must not leave it on.
    """
    config = getattr(model, "config", None)
    use_cache = getattr(config, "use_cache", None)
    was_training, grad_enabled = bool(getattr(model, "training", False)), torch.is_grad_enabled()
    with forked_random_state():
        try:
            yield
        finally:
            if hasattr(model, "train"):
                model.train(was_training)
            if config is not None and use_cache is not None:
                config.use_cache = use_cache
            torch.set_grad_enabled(grad_enabled)


def log_keeping_control(trainer: Any) -> Callable[[dict[str, float]], None]:
    """`trainer.log` for figures reported from inside a callback, leaving the Trainer's control flags alone.

    The flags (`should_log`, `should_save`, `should_evaluate`, ...) are as they were before the call.

    The Trainer's own `on_log` clears `should_log`: called at a step end before the Trainer has logged that
    step, a plain `trainer.log` would drop the step's training loss on this rank only.
    """

    def report(logs: dict[str, float]) -> None:
        control = trainer.control
        flags = dict(vars(control))
        try:
            trainer.log(dict(logs))
        finally:
            trainer.control = control
            for name, value in flags.items():
                setattr(control, name, value)

    return report
