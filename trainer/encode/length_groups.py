"""Length-grouped sample order from a lengths array, without a Python list per sample.

transformers' `LengthGroupedSampler` turns the permutation into Python lists (about 40 bytes a sample, per rank,
each epoch) and sorts each mega-batch with a Python key function. This is the same order, drawn from the same
`torch.randperm` (so the same seed gives the same batches, and a resumed run skips into the same order), kept in
NumPy: the permutation as int64 and the lengths as given (a memory-mapped column of the dataset index).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from transformers.trainer_pt_utils import LengthGroupedSampler

MEGA_BATCH_MULT = 50  # transformers' default bound on mega-batches of `batch_size`


def length_grouped_order(lengths: Sequence[int] | np.ndarray, batch_size: int, generator: Any = None) -> np.ndarray:
    """Transformers' `get_length_grouped_indices` in NumPy, without a Python list per sample.

    A random permutation, cut into mega-batches of `min(n // (4 * batch_size), 50)` batches, each sorted
    longest first (ties in permutation order), and the mega-batch with the longest sample's first element
    swapped to the very front.
    """
    import torch

    n = len(lengths)
    mult = min(n // (batch_size * 4), MEGA_BATCH_MULT) or 1
    order = torch.randperm(n, generator=generator).numpy()
    values = np.asarray(lengths)
    size = mult * batch_size
    firsts = []
    for start in range(0, n, size):
        chunk = order[start:start + size]
        # stable sort of the negated lengths: longest first, equal lengths keep their permutation order, as
        # Python's sorted(..., reverse=True) does
        order[start:start + size] = chunk[np.argsort(-values[chunk].astype(np.int64), kind="stable")]
        firsts.append(start)
    maxima = values[order[firsts]]
    best = firsts[int(np.argmax(maxima))]  # the first of equal maxima, as torch.argmax
    order[0], order[best] = order[best], order[0]
    return order


class LengthGroupedOrder(LengthGroupedSampler):
    """Transformers' `LengthGroupedSampler` (what the Trainer and accelerate check for), reading an index.

    Its order is drawn anew each epoch by `length_grouped_order`.
    """

    def __init__(self, batch_size: int, lengths: Sequence[int] | np.ndarray, generator: Any = None) -> None:
        super().__init__(batch_size, lengths=lengths, generator=generator)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[int]:
        for i in length_grouped_order(self.lengths, self.batch_size, self.generator):
            yield int(i)
