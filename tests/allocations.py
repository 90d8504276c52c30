"""The peak of Python allocations while a call runs: what the streaming-read tests and bench_data_read compare."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable
from typing import Any


def peak_bytes(fn: Callable[[], Any]) -> int:
    """The most memory Python allocations held while `fn` ran, its result included (tracemalloc).

    A collection first, so that garbage of earlier calls is not counted against this one.
    """
    gc.collect()
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
