"""Shared fixtures: one tiny random Higgs Audio v2 checkpoint and one code cache per test session.

The checkpoint is built with the real classes and saved with `save_pretrained`; every test loads it
through `from_pretrained` exactly as a real checkpoint would be loaded.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.tooling import REPO

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DEMO_DATA = REPO / "examples" / "demo_data" / "train.json"


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(model dir, audio tokenizer dir) of a tiny random checkpoint."""
    from trainer.model.tiny import build_tiny_checkpoint

    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def code_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A code cache shared by the session's runs (entries are written atomically, so sharing is safe)."""
    return tmp_path_factory.mktemp("code_cache")


@pytest.fixture
def base_args(tiny_ckpt: tuple[Path, Path], code_cache: Path, tmp_path: Path) -> dict[str, str]:
    """Option values of a quick LoRA run on the bundled demo data (override per test)."""
    model_dir, codec_dir = tiny_ckpt
    return {
        "model_path": str(model_dir),
        "audio_tokenizer_path": str(codec_dir),
        "train_data_file": str(DEMO_DATA),
        "output_dir": str(tmp_path / "out"),
        "cache_dir": str(code_cache),
        "use_lora": "true",
        "disable_eval": "true",
        "max_steps": "20",
        "save_steps": "10",
        "logging_steps": "5",
        "learning_rate": "0.005",
        "warmup_steps": "0",
        "dataloader_num_workers": "0",
        "seed": "1",
    }


def to_argv(values: dict[str, str]) -> list[str]:
    """Option values -> command-line flags."""
    argv: list[str] = []
    for k, v in values.items():
        argv += [f"--{k}", v]
    return argv


def clean_env(**extra: str) -> dict[str, str]:
    """The current environment without any trainer option variable (so the host cannot leak settings)."""
    from trainer.config.values import option_specs

    names = {s.env for s in option_specs()} | {"CONFIG"}
    env = {k: v for k, v in os.environ.items() if k not in names}
    env.update({"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env
