"""SIGTERM to one rank during data preparation, in real launches (`higgs-audio-trainer launch`, torchrun, gloo on
CPU): while rank 0 encodes the audio and the others wait for it, the whole run stops within seconds with 143,
on this node and on the others, and the restart encodes only what is left (see `trainer.train.signals`)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.monitoring.stack import LOOPBACK, free_port
from tests.processes import launch, launch_env, rank_pids, trainer_process
from tests.trainer.datafiles import distinct_clips
from trainer import errors

pytestmark = pytest.mark.slow
CLIPS = 500  # distinct 1 s clips: several seconds of encoding for the tiny audio tokenizer on one core
STARTED = 20  # clips encoded before the signal: rank 0 is well into encoding, the other ranks are waiting


def cached(cache: Path) -> int:
    """Complete entries in a code cache (an entry being written is a hidden temporary file).

    Entries are `<identity>/<2 hex>/<digest>.npy`; the dataset index's columns, deeper, are not entries.
    """
    return sum(1 for p in cache.glob("*/*/*.npy") if not p.name.startswith("."))


def test_sigterm_to_a_rank_waiting_for_the_audio_encoding_stops_the_launch_at_once(base_args, tmp_path) -> None:
    cache = tmp_path / "cache"
    env = launch_env(base_args, tmp_path, nproc_per_node="2", max_steps="2", save_steps="100",
                     train_data_file=str(distinct_clips(tmp_path / "clips", CLIPS)), cache_dir=str(cache))
    log = tmp_path / "launch.log"
    with trainer_process("launch", env, log) as run:
        run.wait_for(lambda: cached(cache) >= STARTED, "rank 0 to encode", timeout=240, interval=0.05)
        os.kill(rank_pids(run.proc.pid)[1], signal.SIGTERM)
        signalled = time.monotonic()
        code = run.proc.wait(timeout=300)
        waited = time.monotonic() - signalled
    text = log.read_text()
    assert code == errors.PREEMPTED, text[-3000:]
    encoded = cached(cache)
    assert encoded < CLIPS, "the run ended only once rank 0 had encoded every clip"
    assert waited < 15, text[-3000:]
    assert "higgs-audio-trainer: stopped by SIGTERM before training started; nothing to save" in text  # rank 1
    assert (tmp_path / "termination-log").read_text().startswith("rank 0: stopped by SIGTERM")
    assert not (Path(base_args["output_dir"]) / "lora_adapters").exists()

    again = launch(env, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"encoding audio: 0/{CLIPS - encoded} clips" in again.stderr  # nothing lost: only the rest is encoded
    assert (Path(base_args["output_dir"]) / "lora_adapters" / "adapter_model.safetensors").is_file()


def test_sigterm_to_a_rank_on_another_node_stops_the_encoding_on_this_one(base_args, tmp_path) -> None:
    # Two launches on this machine as two nodes of one rank each: no torchrun stops the other node's rank.
    manifest, port = distinct_clips(tmp_path / "clips", CLIPS), str(free_port())
    caches = [tmp_path / f"cache-{node}" for node in (0, 1)]
    envs = [launch_env(base_args, tmp_path, termination_log=f"termination-log-{node}", train_data_file=str(manifest),
                       cache_dir=str(caches[node]), nproc_per_node="1", PET_NNODES="2", PET_NODE_RANK=str(node),
                       PET_MASTER_ADDR=LOOPBACK, PET_MASTER_PORT=port) for node in (0, 1)]
    logs = [tmp_path / f"node-{node}.log" for node in (0, 1)]
    with trainer_process("launch", envs[0], logs[0]) as node0, trainer_process("launch", envs[1], logs[1]) as node1:
        node0.wait_for(lambda: cached(caches[0]) >= STARTED, "rank 0 to encode", timeout=240, interval=0.05)
        os.kill(rank_pids(node1.proc.pid)[1], signal.SIGTERM)
        signalled = time.monotonic()
        codes = [node1.proc.wait(timeout=60), node0.proc.wait(timeout=60)]
        waited = time.monotonic() - signalled
    assert codes == [errors.PREEMPTED, errors.PREEMPTED], logs[0].read_text()[-3000:]
    assert cached(caches[0]) < CLIPS, "rank 0 went on encoding every clip"
    assert waited < 15
    assert (tmp_path / "termination-log-0").read_text().startswith(
        "rank 0: stopped by SIGTERM on rank 1 before training started; nothing to save")
