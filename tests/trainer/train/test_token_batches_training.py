"""Real training runs of the tiny model with `--max_tokens_per_batch`, in this process.

What each micro-batch held is read from the tensors the training step received, and each row is matched to
its sample by content (the sample's own expanded tokens): nothing here asks the sampler what it did.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from trainer.commands.train import build
from trainer.config.cli import parse_train_args
from trainer.errors import ConfigError


def _cfg(args: dict[str, str], **over: str):
    return parse_train_args([], {k.upper(): v for k, v in (args | over).items()})


class StepRecorder:
    """Wraps a trainer's `training_step` and records, per micro-batch, its shape and its samples' indices."""

    def __init__(self, trainer) -> None:
        data = trainer.train_dataset
        self.index = {data[i]["input_ids"].tobytes(): i for i in range(len(data))}
        assert len(self.index) == len(data), "two samples with the same tokens could not be told apart"
        self.lengths = [len(data[i]["input_ids"]) for i in range(len(data))]  # not the dataset's lengths()
        self.batches: list[list[int]] = []
        self.shapes: list[tuple[int, int]] = []
        inner = trainer.training_step

        def training_step(model, inputs, num_items_in_batch=None):
            ids, mask = inputs["input_ids"], inputs["attention_mask"].bool()
            self.shapes.append(tuple(ids.shape))
            rows = zip(ids, mask, strict=True)
            self.batches.append([self.index[row[m].numpy().astype("int64").tobytes()] for row, m in rows])
            return inner(model, inputs, num_items_in_batch)

        trainer.training_step = training_step


def _run(cfg):
    trainer, _, resume = build(cfg)
    recorder = StepRecorder(trainer)
    trainer.train(resume_from_checkpoint=resume)
    return trainer, recorder


@pytest.fixture
def budget_args(base_args):
    return base_args | {"max_tokens_per_batch": "1200", "gradient_accumulation_steps": "2", "max_steps": "-1",
                        "num_train_epochs": "3", "save_steps": "1000", "logging_steps": "1"}


def test_a_budget_run_fits_every_micro_batch_uses_each_sample_once_per_epoch(budget_args) -> None:
    trainer, rec = _run(_cfg(budget_args))
    budget = 1200
    for shape, batch in zip(rec.shapes, rec.batches, strict=True):
        assert shape[0] * shape[1] <= budget  # the padded tensor the model received
        assert shape == (len(batch), max(rec.lengths[i] for i in batch))
    n = len(rec.lengths)
    per_epoch = len(rec.batches) // 3
    assert per_epoch * 3 == len(rec.batches) and per_epoch % 2 == 0
    assert trainer.state.global_step == len(rec.batches) // 2  # the progress and eta count these steps
    epochs = [rec.batches[e * per_epoch:(e + 1) * per_epoch] for e in range(3)]
    for epoch in epochs:
        assert sorted(i for b in epoch for i in b) == list(range(n))
    assert epochs[0] != epochs[1]  # a new order every epoch
    assert 1 < min(len(b) for b in rec.batches) < max(len(b) for b in rec.batches)  # sizes follow lengths


def test_a_run_stopped_mid_epoch_and_resumed_continues_the_uninterrupted_order(budget_args, tmp_path) -> None:
    _, whole = _run(_cfg(budget_args, output_dir=str(tmp_path / "whole")))
    steps = len(whole.batches) // 2
    stop = steps // 3 + 1  # inside the second epoch
    part = budget_args | {"output_dir": str(tmp_path / "part")}
    _, first = _run(_cfg(part, max_steps=str(stop), save_steps=str(stop)))
    assert (Path(part["output_dir"]) / f"checkpoint-{stop}").is_dir()
    trainer, rest = _run(_cfg(part))  # resume=auto: from checkpoint-<stop>
    assert trainer.state.global_step == steps
    assert first.batches + rest.batches == whole.batches


def test_another_seed_gives_another_order_and_the_same_seed_the_same(budget_args, tmp_path) -> None:
    def order(seed: str, name: str) -> list[list[int]]:
        trainer, _, _ = build(_cfg(budget_args, seed=seed, output_dir=str(tmp_path / name)))
        loader = trainer.get_train_dataloader()
        return [b for b in loader.batch_sampler]

    assert order("1", "a") == order("1", "b")
    assert order("1", "a") != order("2", "c")


def test_a_budget_below_the_longest_sample_stops_before_training_naming_it(budget_args) -> None:
    trainer, _, _ = build(_cfg(budget_args, max_tokens_per_batch="50"))
    with pytest.raises(ConfigError, match=r"--max_tokens_per_batch / MAX_TOKENS_PER_BATCH is 50 tokens.*"
                                          r"training sample \d+ \(.+\), has \d+ tokens"):
        trainer.train()
    assert trainer.state.global_step == 0


def test_a_budget_step_gradient_is_the_mean_of_its_micro_batches_fixed_batch_gradients(budget_args) -> None:
    """Loss normalisation: each micro-batch's loss is its own mean over target frames, and the Trainer
    averages micro-batches over accumulation; so a step's gradient is the mean of the gradients of fixed
    batches of the same samples, computed here without the token-budget loader."""
    trainer, _, _ = build(_cfg(budget_args, max_grad_norm="0"))
    model = trainer.model
    loader = trainer.get_train_dataloader()
    step = [batch for _, batch in zip(range(2), loader, strict=False)]
    trainable = [p for p in model.parameters() if p.requires_grad]

    def grads_of(batches: list[dict[str, torch.Tensor]], through_trainer: bool) -> list[torch.Tensor]:
        model.zero_grad()
        for batch in batches:
            if through_trainer:
                trainer.current_gradient_accumulation_steps = len(batches)
                trainer.training_step(model, batch)
            else:
                (trainer.compute_loss(model, batch) / len(batches)).backward()
        return [p.grad.clone() for p in trainable]

    dataset = trainer.train_dataset
    index = {dataset[i]["input_ids"].tobytes(): i for i in range(len(dataset))}
    fixed = []
    for batch in step:
        rows = [index[r[m].numpy().astype("int64").tobytes()]
                for r, m in zip(batch["input_ids"], batch["attention_mask"].bool(), strict=True)]
        fixed.append(trainer.data_collator([dataset[i] for i in rows]))
    trainer.model.train()
    torch.manual_seed(0)
    ours = grads_of(step, through_trainer=True)
    torch.manual_seed(0)
    reference = grads_of(fixed, through_trainer=False)
    for a, b in zip(ours, reference, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
