"""Imported at start-up by every Python process of a test launch that puts this folder on PYTHONPATH.

With `HOLD_BACKGROUND_SAVE_SECONDS` set, rank 0's background checkpoint writes (`--async_save`) wait that
long before they flush the checkpoint for real, and so before its marker, so that a test can see what the
other ranks do while one is in flight. It holds LoRA and full fine-tuning saves alike: both flush on the
thread. Nothing else changes: the write itself, the marker and every other process are the real ones.

With `FAIL_ON_RANK_1_AFTER_STEP` set to N, rank 1 raises a RuntimeError once step N is saved (and logged
and evaluated), as a rank that hits a bug does; every other rank goes on as usual.
"""

import os
import threading

_SECONDS = float(os.environ.get("HOLD_BACKGROUND_SAVE_SECONDS", "0"))
_FAIL_AFTER = int(os.environ.get("FAIL_ON_RANK_1_AFTER_STEP", "0"))

if _SECONDS > 0 and os.environ.get("RANK") == "0":
    import time

    from trainer.train import checkpoint

    _real_sync = checkpoint.sync_files

    def _held(directory):  # type: ignore[no-untyped-def]
        if threading.current_thread() is not threading.main_thread():
            time.sleep(_SECONDS)
        _real_sync(directory)

    checkpoint.sync_files = _held

if _FAIL_AFTER > 0 and os.environ.get("RANK") == "1":
    from trainer.train.trainer import HiggsAudioTrainer

    _real_fetch = HiggsAudioTrainer.get_batch_samples

    def _failing(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        # Fetching the next step's batches: step N has been saved, logged and evaluated.
        if self.state.global_step == _FAIL_AFTER:
            raise RuntimeError(f"injected failure on rank 1 after step {_FAIL_AFTER}")
        return _real_fetch(self, *args, **kwargs)

    HiggsAudioTrainer.get_batch_samples = _failing
