"""The token-budget batch sampler on its own: budgets, coverage, equal shards, determinism, resume, plants.

The lengths here are a length-skewed set (many short clips, a few long ones), as `SampleDataset.lengths()`
gives them; the sampler's batches are checked against those lengths, worked out here without the sampler.
Runs of the real trainer with a budget are in test_token_batches_training.py.
"""

from __future__ import annotations

import logging
import random

import pytest

from trainer.errors import ConfigError
from trainer.train import token_batches
from trainer.train.token_batches import TokenBudgetBatchSampler, epoch_batches


def skewed_lengths(n: int = 301, seed: int = 0) -> list[int]:
    """Clip lengths skewed to the short end: 80% of 1-4 s, 20% of 10-20 s, at 25 frames/s plus text."""
    rng = random.Random(seed)
    return [int(25 * (rng.uniform(1, 4) if rng.random() < 0.8 else rng.uniform(10, 20))) + rng.randint(20, 60)
            for _ in range(n)]


def shards(lengths, budget, world, accumulation, seed=1, epoch=0, cls=TokenBudgetBatchSampler):
    """Each rank's micro-batches of one epoch, from samplers built as each rank builds its own."""
    out = []
    for rank in range(world):
        sampler = cls(lengths, budget, world_size=world, rank=rank, accumulation=accumulation, seed=seed)
        sampler.set_epoch(epoch)
        out.append(list(sampler))
    return out


def coverage_problems(per_rank: list[list[list[int]]], n: int) -> list[str]:
    """What breaks 'every sample exactly once per epoch, the same micro-batch count on every rank'."""
    found = []
    seen = sorted(i for batches in per_rank for b in batches for i in b)
    if seen != list(range(n)):
        missing = sorted(set(range(n)) - set(seen))
        found.append(f"{len(seen)} samples drawn for {n}, {len(missing)} missing, "
                     f"{len(seen) - len(set(seen))} repeated")
    counts = {len(batches) for batches in per_rank}
    if len(counts) != 1:
        found.append(f"micro-batch counts differ between ranks: {sorted(counts)}")
    return found


@pytest.mark.parametrize(("world", "accumulation"), [(1, 1), (2, 1), (2, 4), (3, 2), (8, 4)])
def test_every_micro_batch_fits_the_budget_and_every_sample_comes_once_on_equal_shards(world, accumulation) -> None:
    lengths = skewed_lengths()
    budget = 2000
    for epoch in range(3):
        per_rank = shards(lengths, budget, world, accumulation, epoch=epoch)
        assert not coverage_problems(per_rank, len(lengths))
        assert len(per_rank[0]) % accumulation == 0  # every optimizer step gets its full accumulation
        for b in (b for batches in per_rank for b in batches):
            assert max(lengths[i] for i in b) * len(b) <= budget


def test_short_clips_make_large_batches_and_long_clips_small_ones() -> None:
    lengths = skewed_lengths()
    per_rank = shards(lengths, 2000, 1, 1)
    sizes = {max(lengths[i] for i in b): len(b) for b in per_rank[0]}
    longest, shortest = max(sizes), min(sizes)
    assert sizes[longest] == 2000 // longest  # as many as fit: 3 clips of 20 s
    assert sizes[shortest] >= 5 * sizes[longest]  # about 22 clips of 1-2 s
    # the batch holding the longest clip comes first: a budget too large for the device fails at once
    assert max(lengths[i] for i in per_rank[0][0]) == max(lengths)


def test_the_batch_count_is_the_same_every_epoch_and_on_every_rank() -> None:
    lengths = skewed_lengths()
    counts = {len(batches) for epoch in range(5) for batches in shards(lengths, 1500, 4, 2, epoch=epoch)}
    sampler = TokenBudgetBatchSampler(lengths, 1500, world_size=4, rank=3, accumulation=2, seed=1)
    assert counts == {len(sampler)}


def test_the_same_seed_gives_the_same_order_another_seed_and_another_epoch_a_different_one() -> None:
    lengths = skewed_lengths()
    a = epoch_batches(lengths, 2000, 4, seed=1, epoch=0)
    assert a == epoch_batches(lengths, 2000, 4, seed=1, epoch=0)
    assert a != epoch_batches(lengths, 2000, 4, seed=2, epoch=0)
    assert a != epoch_batches(lengths, 2000, 4, seed=1, epoch=1)


def test_a_resumed_pass_continues_the_uninterrupted_order() -> None:
    lengths = skewed_lengths()
    full = shards(lengths, 2000, 2, 2, epoch=2)
    for rank in range(2):
        resumed = TokenBudgetBatchSampler(lengths, 2000, world_size=2, rank=rank, accumulation=2, seed=1)
        resumed.skip(6)  # what the Trainer asks after 3 optimizer steps of 2 micro-batches
        resumed.set_epoch(2)
        assert list(resumed) == full[rank][6:]
        assert list(resumed) == full[rank]  # the skip applies to one pass only


def test_a_sample_longer_than_the_budget_stops_the_run_naming_it_and_its_length() -> None:
    lengths = [100, 900, 100, 1300, 1200]
    with pytest.raises(ConfigError) as err:
        TokenBudgetBatchSampler(lengths, 1000, world_size=1, rank=0, accumulation=1, seed=1,
                                name=lambda i: f"sample {i} (clip{i}.wav)")
    message = str(err.value)
    assert "--max_tokens_per_batch / MAX_TOKENS_PER_BATCH is 1000 tokens" in message
    assert "2 training sample(s) are longer" in message
    assert "sample 3 (clip3.wav), has 1300 tokens" in message


def test_too_few_samples_for_every_rank_and_step_repeat_whole_batches_and_say_so(caplog) -> None:
    lengths = [100, 100, 100]  # 3 samples, 2 ranks x 2 accumulation steps: 4 micro-batches are needed
    with caplog.at_level(logging.WARNING):
        per_rank = shards(lengths, 1000, 2, 2)
    assert [len(b) for b in per_rank] == [2, 2]
    drawn = sorted(i for batches in per_rank for b in batches for i in b)
    assert set(drawn) == {0, 1, 2} and len(drawn) == 4
    assert "1 micro-batches are repeated every epoch" in caplog.text


def test_a_count_short_of_the_multiple_is_made_up_by_splitting_batches_not_repeating_samples() -> None:
    lengths = [100] * 25  # one batch of 10 fits 1000 tokens: 3 batches, short of 2 x 4 = 8
    per_rank = shards(lengths, 1000, 2, 4)
    assert [len(b) for b in per_rank] == [4, 4]
    assert not coverage_problems(per_rank, 25)


# ---- planted faults: the checks above must catch them ------------------------------------------------


class ShardsBeforeShuffling(TokenBudgetBatchSampler):
    """Plant: each rank shuffles with its own seed (as if seeded by rank) and then takes its shard."""

    def global_batches(self) -> list[list[int]]:
        return epoch_batches(self.lengths, self.budget, self.multiple, self.seed + self.rank, self.epoch)


def test_planted_per_rank_seeds_break_every_sample_once() -> None:
    lengths = skewed_lengths()
    assert coverage_problems(shards(lengths, 2000, 2, 1, cls=ShardsBeforeShuffling), len(lengths))


def test_planted_dropped_remainder_breaks_every_sample_once(monkeypatch) -> None:
    def drop_remainder(batches, multiple):
        return batches[:len(batches) - len(batches) % multiple], 0

    monkeypatch.setattr(token_batches, "pad_to_multiple", drop_remainder)
    lengths = skewed_lengths()
    assert coverage_problems(shards(lengths, 2000, 3, 2), len(lengths))
