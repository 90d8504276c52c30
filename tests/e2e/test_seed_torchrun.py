"""A dataset exactly in the seed scripts' layout trains end to end under a real two-process `torchrun`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import clean_env
from tests.trainer.datafiles import seed_dataset

pytestmark = pytest.mark.slow


def test_seed_layout_trains_under_torchrun_from_env_vars_with_adapters_in_every_checkpoint(base_args, tmp_path):
    data = seed_dataset(tmp_path / "seed", count=8)  # 22.05 kHz WAV, relative paths, Arabic transcripts
    env = clean_env(**{k.upper(): v for k, v in base_args.items()})
    env.update(TRAIN_DATA_FILE=str(data), USE_LORA="true", DISABLE_EVAL="true", MAX_STEPS="6", SAVE_STEPS="3",
               CACHE_DIR=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone", "-m", "trainer", "train"],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "data: 8 training samples, no evaluation samples, 0 bad samples skipped" in proc.stderr
    out = Path(base_args["output_dir"])
    adapters = sorted(p.relative_to(out).as_posix() for p in out.rglob("adapter_model.safetensors"))
    assert adapters == ["checkpoint-3/lora_adapters/adapter_model.safetensors",
                        "checkpoint-6/lora_adapters/adapter_model.safetensors",
                        "lora_adapters/adapter_model.safetensors"]
    assert all((out / f"checkpoint-{s}" / "checkpoint_complete.json").is_file() for s in (3, 6))
    # every clip encoded once, references included: code-cache entries are <identity>/<2 hex>/<digest>.npy,
    # the dataset index's columns lie deeper, under <identity>/index/
    assert len(list((tmp_path / "cache").glob("*/*/*.npy"))) == 8
