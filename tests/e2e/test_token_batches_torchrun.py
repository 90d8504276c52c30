"""Token-budget micro-batches under a real two-process `torchrun` (gloo): every rank steps the same number of
times, the ranks together draw every sample once per epoch, and a run stopped mid-epoch and resumed draws,
on each rank, what the uninterrupted run drew."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import clean_env
from tests.processes import torchrun_probe

pytestmark = pytest.mark.slow
PROBE = Path(__file__).with_name("token_batches_probe.py")
BUDGET = 1200


def _launch(args: dict[str, str], probe_dir: Path) -> list[dict]:
    env = clean_env(**{k.upper(): v for k, v in args.items()}, OMP_NUM_THREADS="1")
    return torchrun_probe(PROBE, env, probe_dir)


def test_two_ranks_step_equally_draw_every_sample_once_and_resume_in_order(base_args, tmp_path) -> None:
    args = base_args | {"max_tokens_per_batch": str(BUDGET), "gradient_accumulation_steps": "2",
                        "max_steps": "-1", "num_train_epochs": "2", "save_steps": "1000", "logging_steps": "1",
                        "output_dir": str(tmp_path / "whole")}
    whole = _launch(args, tmp_path / "probe-whole")
    lengths = whole[0]["lengths"]
    assert len(whole[0]["batches"]) == len(whole[1]["batches"])  # else a collective would hang
    assert whole[0]["step"] == whole[1]["step"] == len(whole[0]["batches"]) // 2
    per_epoch = len(whole[0]["batches"]) // 2
    for epoch in range(2):
        drawn = sorted(i for rank in whole for b in rank["batches"][epoch * per_epoch:(epoch + 1) * per_epoch]
                       for i in b)
        assert drawn == list(range(len(lengths)))
    for rank in whole:
        for shape, batch in zip(rank["shapes"], rank["batches"], strict=True):
            assert shape[0] * shape[1] <= BUDGET
            assert shape == [len(batch), max(lengths[i] for i in batch)]

    steps = whole[0]["step"]
    stop = steps // 2 + 1  # inside the second epoch, where the epoch's own order must be the one resumed
    part = args | {"output_dir": str(tmp_path / "part")}
    first = _launch(part | {"max_steps": str(stop), "save_steps": str(stop)}, tmp_path / "probe-first")
    rest = _launch(part, tmp_path / "probe-rest")
    assert rest[0]["step"] == rest[1]["step"] == steps
    for r in (0, 1):
        assert first[r]["batches"] + rest[r]["batches"] == whole[r]["batches"]
