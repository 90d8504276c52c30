"""The warm-up: a ratio of the run by default, and a warm-up not shorter than the run refused in one line."""

from __future__ import annotations

import pytest

from trainer.config.cli import parse_train_args
from trainer.errors import ConfigError
from trainer.train.args import build_training_args


def _env(base_args: dict[str, str], **over: str) -> dict[str, str]:
    return {k.upper(): v for k, v in (base_args | over).items()}


def test_a_warmup_longer_than_max_steps_is_one_line_naming_both_values(base_args) -> None:
    with pytest.raises(ConfigError) as err:
        parse_train_args([], _env(base_args, max_steps="20", warmup_steps="100"))
    message = str(err.value)
    assert "\n" not in message
    assert "WARMUP_STEPS (100)" in message and "(20 optimizer steps, from --max_steps / MAX_STEPS)" in message


def test_a_warmup_as_long_as_the_run_is_refused_and_one_step_shorter_is_not(base_args) -> None:
    with pytest.raises(ConfigError, match="never leave its warm-up ramp"):
        parse_train_args([], _env(base_args, max_steps="20", warmup_steps="20"))
    assert parse_train_args([], _env(base_args, max_steps="20", warmup_steps="19")).train.warmup_steps == 19


def test_the_default_warmup_is_a_ratio_of_the_run_whatever_its_length(base_args) -> None:
    defaults = {k: v for k, v in base_args.items() if k != "warmup_steps"}
    cfg = parse_train_args([], _env(defaults, max_steps="20"))
    args = build_training_args(cfg, use_cpu=True, bf16=False)
    # transformers' own arithmetic for the steps: ceil(0.05 x 20) and ceil(0.05 x 2000)
    assert (args.get_warmup_steps(20), args.get_warmup_steps(2000)) == (1, 100)


def test_warmup_steps_zero_means_none_and_a_positive_count_is_kept(base_args) -> None:
    none = build_training_args(parse_train_args([], _env(base_args, warmup_steps="0")), use_cpu=True, bf16=False)
    some = build_training_args(parse_train_args([], _env(base_args, warmup_steps="7")), use_cpu=True, bf16=False)
    assert (none.get_warmup_steps(20), some.get_warmup_steps(20)) == (0, 7)
