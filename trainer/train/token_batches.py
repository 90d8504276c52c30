"""Micro-batches formed up to a token budget (`--max_tokens_per_batch`), the same on every rank, resumable.

A micro-batch's cost is its *padded* size, the longest sample times the count: the collator pads every
sample to the longest one, so that is what the forward pass holds in memory and computes over, not the
sum of the samples' own lengths.

Each epoch's batch list is built in full, from the seed and the epoch alone, identically on every rank,
and only then sharded (rank r takes batches r, r + W, r + 2W, ...): ranks never disagree on which sample
goes where, and each gets the same number of micro-batches, so DDP's collectives never wait on a rank
that has run out. How the list is built:

1. a seeded permutation of the samples, then a stable sort by length, longest first: samples of equal
   length come in a fresh random order each epoch;
2. greedy packing in that order: a batch starts at its longest sample and takes the next ones while
   (count + 1) x longest fits the budget;
3. to reach a multiple of world size x gradient accumulation, the batches with the most samples are split
   in two (halves never exceed the budget; no sample is dropped or repeated). Only when there are fewer
   samples than that multiple are whole batches repeated from the start of the list, and a warning says
   how many;
4. a seeded shuffle of the batch order, then the batch holding the longest sample first, so that a budget
   too large for the device fails in the first step rather than hours in.

Steps 2 and 3 depend only on the sorted lengths, which are the same every epoch: the number of batches
never changes between epochs, which the Trainer's step count and its resume arithmetic assume.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import Any

import torch

from trainer.config.values import label
from trainer.errors import ConfigError

log = logging.getLogger(__name__)


def pack(order: Sequence[int], lengths: Sequence[int], budget: int) -> list[list[int]]:
    """Greedy packing of samples sorted longest first: each batch's padded size stays within `budget`.

    Args:
        order (`Sequence[int]`):
            Sample indices, longest first.
        lengths (`Sequence[int]`):
            Every sample's token count.
        budget (`int`):
            The most padded tokens (longest x count) one batch may hold.

    Returns:
        `list[list[int]]`: the batches, each longest first.
    """
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        if current and (len(current) + 1) * lengths[current[0]] > budget:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def pad_to_multiple(batches: list[list[int]], multiple: int) -> tuple[list[list[int]], int]:
    """Splits the fullest batches until the count is a multiple of `multiple`; repeats batches only if it must.

    Args:
        batches (`list[list[int]]`):
            Packed batches (in packing order, so the choice depends on lengths alone).
        multiple (`int`):
            World size x gradient accumulation steps.

    Returns:
        `tuple[list[list[int]], int]`: the batches and how many of them are repeats of earlier ones.
    """
    batches = [list(b) for b in batches]
    while len(batches) % multiple and max(len(b) for b in batches) > 1:
        fullest = max(range(len(batches)), key=lambda j: (len(batches[j]), -j))
        b = batches[fullest]
        half = (len(b) + 1) // 2
        batches[fullest:fullest + 1] = [b[:half], b[half:]]
    repeats = -len(batches) % multiple
    batches += [batches[j % len(batches)] for j in range(repeats)]
    return batches, repeats


def epoch_batches(lengths: Sequence[int], budget: int, multiple: int, seed: int, epoch: int) -> list[list[int]]:
    """Every rank's micro-batches of one epoch, in order, before sharding (see the module docstring).

    Args:
        lengths (`Sequence[int]`):
            Every sample's token count.
        budget (`int`):
            The most padded tokens per micro-batch.
        multiple (`int`):
            World size x gradient accumulation steps: the batch count is a multiple of it.
        seed (`int`):
            The data seed; with `epoch`, all the randomness there is.
        epoch (`int`):
            The epoch (0-based).

    Returns:
        `list[list[int]]`: the batches of sample indices.
    """
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(len(lengths), generator=g).tolist()
    order = sorted(perm, key=lambda i: -lengths[i])  # stable: equal lengths keep the random order
    batches, _ = pad_to_multiple(pack(order, lengths, budget), multiple)
    shuffled = [batches[j] for j in torch.randperm(len(batches), generator=g).tolist()]
    longest = next(j for j, b in enumerate(shuffled) if order[0] in b)
    return [shuffled[longest], *shuffled[:longest], *shuffled[longest + 1:]]


def check_fits(lengths: Sequence[int], budget: int, name: Callable[[int], str]) -> None:
    """A sample longer than the budget can be in no batch: stop before training, naming the longest.

    Raises:
        `ConfigError`: naming the sample, its length and the option, when one does not fit.
    """
    over = [i for i, n in enumerate(lengths) if n > budget]
    if over:
        worst = max(over, key=lambda i: lengths[i])
        raise ConfigError(
            f"{label('max_tokens_per_batch')} is {budget} tokens, but {len(over)} training sample(s) are longer: "
            f"the longest, {name(worst)}, has {lengths[worst]} tokens; raise the budget to at least "
            f"{lengths[worst]} or lower {label('max_audio_seconds')}"
        )


class TokenBudgetBatchSampler:
    """A batch sampler yielding this rank's micro-batches of `epoch_batches` (a torch `Sampler` by protocol).

    Its length is the same every epoch and on every rank. The Trainer sets the epoch (`set_epoch`) before
    each pass; a resumed run asks it to skip the micro-batches this rank already trained (`skip`), so the
    resumed order is the uninterrupted one's.

    Args:
        lengths (`Sequence[int]`):
            Every sample's token count (the dataset's `lengths()`).
        budget (`int`):
            The most padded tokens per micro-batch.
        world_size (`int`):
            The number of ranks.
        rank (`int`):
            This process's rank.
        accumulation (`int`):
            Gradient accumulation steps.
        seed (`int`):
            The data seed, the same on every rank.
        name (`Callable[[int], str]`):
            How an error names sample `i`.
    """

    def __init__(self, lengths: Sequence[int], budget: int, world_size: int, rank: int, accumulation: int,
                 seed: int, name: Callable[[int], str] = lambda i: f"sample {i}") -> None:
        check_fits(lengths, budget, name)
        self.lengths = list(lengths)
        self.budget = budget
        self.world_size = world_size
        self.rank = rank
        self.multiple = world_size * accumulation
        self.seed = seed
        self.epoch = 0
        self._skip = 0
        # The count depends on the sorted lengths only: the same for every epoch's order.
        packed = pack(sorted(range(len(self.lengths)), key=lambda i: -self.lengths[i]), self.lengths, budget)
        padded, repeats = pad_to_multiple(packed, self.multiple)
        self._total = len(padded)
        if repeats and rank == 0:
            log.warning("%d training samples make fewer than %d micro-batches (world size x gradient "
                        "accumulation steps): %d micro-batches are repeated every epoch", len(self.lengths),
                        self.multiple, repeats)
        self.batch_size = None  # varies: tells accelerate not to expect equal-sized batches
        self.drop_last = False

    def set_epoch(self, epoch: int) -> None:
        """Which epoch's order the next pass yields."""
        self.epoch = epoch

    def skip(self, micro_batches: int) -> None:
        """The next pass starts after this rank's first `micro_batches` (a resumed run's trained ones)."""
        self._skip = micro_batches

    def global_batches(self) -> list[list[int]]:
        """The current epoch's batches of every rank, before sharding."""
        return epoch_batches(self.lengths, self.budget, self.multiple, self.seed, self.epoch)

    def __len__(self) -> int:
        return self._total // self.world_size

    def __iter__(self) -> Iterator[list[int]]:
        mine = self.global_batches()[self.rank::self.world_size]
        skip, self._skip = self._skip, 0
        yield from mine[skip:]


def token_budget_loader(dataset: Any, collator: Any, args: Any, accelerator: Any,
                        budget: int) -> tuple[Any, TokenBudgetBatchSampler]:
    """The training loader of `HiggsAudioTrainer.get_train_dataloader` under a token budget.

    The sampler shards the batch list itself, so accelerate's own sharding of a batch sampler is made a
    pass-through, as the Trainer does for its rank-aware `BatchRebalanceSampler`.

    Args:
        dataset (`Any`):
            The training samples, with `lengths()` (their token counts).
        collator (`Any`):
            The Trainer's data collator.
        args (`TrainingArguments`):
            Ranks, accumulation, seeds and the loader's worker settings.
        accelerator (`Accelerator`):
            Prepares the loader (device placement, end-of-data for gradient accumulation).
        budget (`int`):
            `--max_tokens_per_batch`.

    Returns:
        `tuple[DataLoader, TokenBudgetBatchSampler]`: the prepared loader and its sampler.
    """
    from torch.utils.data import DataLoader
    from transformers.trainer_utils import seed_worker

    samples = getattr(dataset, "samples", None)

    def name(i: int) -> str:
        source = getattr(samples[i], "source", None) if samples is not None else None
        return f"training sample {i}" + (f" ({source})" if source else "")

    sampler = TokenBudgetBatchSampler(
        dataset.lengths(), budget, world_size=max(args.world_size, 1), rank=args.process_index,
        accumulation=args.gradient_accumulation_steps,
        seed=args.data_seed if args.data_seed is not None else args.seed, name=name)
    loader = DataLoader(
        dataset, batch_sampler=sampler, collate_fn=collator, num_workers=args.dataloader_num_workers,
        pin_memory=args.dataloader_pin_memory, persistent_workers=args.dataloader_persistent_workers,
        multiprocessing_context=args.dataloader_multiprocessing_context,
        prefetch_factor=args.dataloader_prefetch_factor,
        worker_init_fn=partial(seed_worker, num_workers=args.dataloader_num_workers, rank=args.process_index))
    prepared = accelerator.prepare(loader)
    shard = getattr(prepared, "batch_sampler", None)
    if shard is not None and getattr(shard, "batch_sampler", None) is sampler:
        shard.num_processes, shard.process_index = 1, 0
    return prepared, sampler
