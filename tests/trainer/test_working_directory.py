"""No entry point imports from the working directory: the community data layout keeps its clips under
`./datasets/...`, and a run started in that folder must import the installed packages, not the folder.

`datasets` is not installed here, which is the case that broke: transformers asks whether a `datasets` module
can be found, finds the folder (a namespace package), imports it and fails on `datasets.Dataset`. The
`transformers/` folder below also holds an `__init__.py` that raises, so that importing it fails loudly."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import clean_env, to_argv
from tests.trainer.datafiles import DEMO
from trainer.__main__ import drop_working_directory


def test_drop_working_directory_removes_only_the_entry_python_m_put_first() -> None:
    for first in ("", "/data", os.curdir):
        path = [first, "/venv/site-packages", "/data"]
        drop_working_directory(path, "/data", safe_path=False)
        assert path == ["/venv/site-packages", "/data"]
    path = ["/somewhere", "/data"]
    drop_working_directory(path, "/data", safe_path=False)
    assert path == ["/somewhere", "/data"]
    path = ["/data"]
    drop_working_directory(path, "/data", safe_path=True)  # python -P left it out: path[0] is something else
    assert path == ["/data"]


def _data_folder(root: Path) -> Path:
    """A folder laid out as a user's data folder: the clips and their ChatML file under `datasets/`, plus
    `transformers/` and `peft/` folders (one importable, and failing when imported)."""
    shutil.copytree(DEMO, root / "datasets" / "demo")
    (root / "transformers").mkdir()
    (root / "transformers" / "__init__.py").write_text("raise ImportError('imported from the working directory')\n")
    (root / "peft").mkdir()
    return root


def _args(base_args: dict, out: Path) -> dict:
    return base_args | {"train_data_file": "datasets/demo/train.json", "output_dir": str(out), "max_steps": "2",
                        "save_steps": "2", "logging_steps": "1"}


@pytest.mark.slow
def test_python_m_trainer_trains_from_a_folder_holding_datasets_transformers_and_peft(base_args, tmp_path) -> None:
    folder = _data_folder(tmp_path / "data")
    args = _args(base_args, tmp_path / "out")
    proc = subprocess.run([sys.executable, "-m", "trainer", "train", *to_argv(args)], cwd=folder,
                          env=clean_env(OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "out" / "lora_adapters" / "adapter_model.safetensors").is_file()


@pytest.mark.slow
def test_torchrun_and_the_launcher_train_from_a_folder_holding_datasets(base_args, tmp_path) -> None:
    folder = _data_folder(tmp_path / "data")
    env = clean_env(OMP_NUM_THREADS="1")
    torchrun = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", "-m", "trainer",
         "train", *to_argv(_args(base_args, tmp_path / "torchrun"))],
        cwd=folder, env=env, capture_output=True, text=True, timeout=600)
    assert torchrun.returncode == 0, torchrun.stderr[-3000:]
    launch = subprocess.run(
        [sys.executable, "-m", "trainer", "launch", "--nproc_per_node", "2", "train",
         *to_argv(_args(base_args, tmp_path / "launch"))],
        cwd=folder, env=env, capture_output=True, text=True, timeout=600)
    assert launch.returncode == 0, launch.stderr[-3000:]
    for out in ("torchrun", "launch"):
        assert (tmp_path / out / "lora_adapters" / "adapter_model.safetensors").is_file()
