"""Imported at start-up by every Python process of a test launch that puts this folder on PYTHONPATH.

Plants a stuck rank, as a bug or a wedged device would make one, so that a test can see how the others end:

- `HANG_SAMPLES_ON_RANK_0=1`: rank 0 never finishes its first sample clip (it sleeps in `Synthesizer.synthesize`).
- `STALL_RANK=R` with `STALL_AFTER_STEP=N`: rank R sleeps right after step N's logging, saving and evaluation,
  so the other ranks wait for it in the next collective (the gradient all-reduce of step N + 1). With
  `STALL_IN=recv` it waits instead in gloo for a message nobody sends, so that it too sits in C++ where
  Python runs no signal handler, as a rank stuck in a collective does.

Each writes `STALL_DIR/stalled-rank-R` when it starts to hang. Nothing else changes.
"""

import os
import time
from pathlib import Path

_RANK = os.environ.get("RANK")


def _stall(what: str) -> None:
    Path(os.environ["STALL_DIR"], f"stalled-rank-{_RANK}").write_text(what)
    if os.environ.get("STALL_IN") == "recv":
        import torch
        import torch.distributed as tdist

        tdist.recv(torch.zeros(1), src=1 - int(_RANK or 0), tag=777)
    while True:
        time.sleep(0.5)


if os.environ.get("HANG_SAMPLES_ON_RANK_0") == "1" and _RANK == "0":
    from trainer.generate import synthesizer

    def _hang(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        _stall("samples")

    synthesizer.Synthesizer.synthesize = _hang

if os.environ.get("STALL_RANK") is not None and os.environ.get("STALL_RANK") == _RANK:
    from trainer.train.trainer import HiggsAudioTrainer

    _after = int(os.environ["STALL_AFTER_STEP"])
    _real = HiggsAudioTrainer._maybe_log_save_evaluate

    def _stalling(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        _real(self, *args, **kwargs)
        if self.state.global_step == _after:
            _stall(f"after step {_after}")

    HiggsAudioTrainer._maybe_log_save_evaluate = _stalling
