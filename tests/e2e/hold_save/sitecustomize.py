"""Imported at start-up by every Python process of a test launch that puts this folder on PYTHONPATH.

With `HOLD_BACKGROUND_SAVE_SECONDS` set, rank 0's background checkpoint writes (`--async_save`) wait that
long before they write for real, so that a test can see what the other ranks do while one is in flight.
Nothing else changes: the write itself, the marker and every other process are the real ones.
"""

import os

_SECONDS = float(os.environ.get("HOLD_BACKGROUND_SAVE_SECONDS", "0"))

if _SECONDS > 0 and os.environ.get("RANK") == "0":
    import time

    from trainer import background_save

    _real = background_save.write_state

    def _held(state, path):  # type: ignore[no-untyped-def]
        time.sleep(_SECONDS)
        _real(state, path)

    background_save.write_state = _held
