"""FSDP (`--fsdp`) in real two-process launches on CPU (gloo), against DDP runs of the same configuration.

DDP is the reference nothing here changes: the same seed, data and schedule must give the same losses and
weights when the weights are sharded instead of replicated. Each run goes through `higgs-audio-trainer launch`
(real torchrun, real FSDP2 `fully_shard`, gathered checkpoints on disk).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import DEMO_DATA
from tests.processes import launch, launch_env, rank_pids, trainer_process
from trainer.train import checkpoint as ckpt

pytestmark = pytest.mark.slow
STALL = Path(__file__).parent / "stall"
TOL = 1e-5
FSDP_FILES = ("pytorch_model_fsdp.bin", "optimizer.bin")  # what only accelerate's FSDP checkpointing writes


def _args(tiny_ckpt: tuple[Path, Path], code_cache: Path, out: Path, **over: str) -> dict[str, str]:
    model_dir, codec_dir = tiny_ckpt
    return {
        "model_path": str(model_dir), "audio_tokenizer_path": str(codec_dir), "train_data_file": str(DEMO_DATA),
        "output_dir": str(out), "cache_dir": str(code_cache), "disable_eval": "true", "max_steps": "10",
        "save_steps": "5", "logging_steps": "1", "learning_rate": "0.005", "warmup_steps": "0",
        "dataloader_num_workers": "0", "seed": "1", "nproc_per_node": "2", **over,
    }


def _train(tmp: Path, args: dict[str, str]) -> Path:
    proc = launch(launch_env(args, tmp, termination_log=f"termination-{Path(args['output_dir']).name}"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return Path(args["output_dir"])


def _losses(out: Path, step: int = 10) -> list[float]:
    state = json.loads((out / f"checkpoint-{step}" / "trainer_state.json").read_text())
    return [h["loss"] for h in state["log_history"] if "loss" in h]


def _close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name].shape == b[name].shape, name
        assert torch.allclose(a[name], b[name], atol=TOL, rtol=0), (name, (a[name] - b[name]).abs().max())


@pytest.fixture(scope="module")
def runs(tiny_ckpt, code_cache, tmp_path_factory) -> dict[str, Path]:
    """Ten steps each, checkpoints at 5 and 10: full fine-tuning and LoRA, under DDP and under FSDP."""
    tmp = tmp_path_factory.mktemp("fsdp")
    found = {}
    for name, over in {"ddp": {}, "fsdp": {"fsdp": "true"},
                       "ddp_lora": {"use_lora": "true"}, "fsdp_lora": {"use_lora": "true", "fsdp": "true"}}.items():
        found[name] = _train(tmp, _args(tiny_ckpt, code_cache, tmp / name, **over))
    return found


def test_fsdp_losses_equal_ddps_for_ten_steps_with_the_weights_sharded(runs) -> None:
    ddp, fsdp = _losses(runs["ddp"]), _losses(runs["fsdp"])
    assert len(ddp) == len(fsdp) == 10
    assert max(abs(a - b) for a, b in zip(ddp, fsdp, strict=True)) <= TOL, (ddp, fsdp)
    assert ddp[-1] < ddp[0]  # it learned: equal losses of a run that did nothing would prove little
    for step in (5, 10):  # FSDP did run: its checkpoints hold the gathered FSDP state, DDP's do not
        assert all((runs["fsdp"] / f"checkpoint-{step}" / f).is_file() for f in FSDP_FILES)
        assert not any((runs["ddp"] / f"checkpoint-{step}" / f).exists() for f in FSDP_FILES)


def test_fsdp_final_model_is_one_safetensors_file_from_pretrained_loads_equal_to_ddps(runs) -> None:
    from transformers import HiggsAudioV2ForConditionalGeneration

    files = sorted(p.name for p in (runs["fsdp"] / "model").glob("*.safetensors"))
    assert files == ["model.safetensors"]
    model = HiggsAudioV2ForConditionalGeneration.from_pretrained(str(runs["fsdp"] / "model"))
    reference = load_file(str(runs["ddp"] / "model" / "model.safetensors"))
    loaded = {k: v for k, v in model.state_dict().items() if k in reference}
    _close(loaded, reference)  # every weight whole (not rank 0's shard) and trained as DDP trained it


def test_fsdp_checkpoint_marker_comes_after_every_file_of_the_checkpoint(runs) -> None:
    for step in (5, 10):
        path = runs["fsdp"] / f"checkpoint-{step}"
        marker = (path / ckpt.MARKER).stat().st_mtime_ns
        others = [p for p in path.iterdir() if p.name != ckpt.MARKER]
        assert {f for f in FSDP_FILES} <= {p.name for p in others}
        late = [p.name for p in others if p.stat().st_mtime_ns > marker]
        assert not late, f"{path}: written after the completeness marker: {late}"
        assert json.loads((path / ckpt.MARKER).read_text())["bytes"] == sum(p.stat().st_size for p in others)


def test_lora_under_fsdp_saves_adapters_equal_to_ddps_that_load_and_merge(runs, tiny_ckpt, tmp_path) -> None:
    from peft import PeftModel
    from transformers import HiggsAudioV2ForConditionalGeneration

    from trainer.commands.merge import merge

    adapter = runs["fsdp_lora"] / ckpt.ADAPTER_DIR
    _close(load_file(str(adapter / "adapter_model.safetensors")),
           load_file(str(runs["ddp_lora"] / ckpt.ADAPTER_DIR / "adapter_model.safetensors")))
    base = HiggsAudioV2ForConditionalGeneration.from_pretrained(str(tiny_ckpt[0]))
    loaded = PeftModel.from_pretrained(base, str(adapter))
    assert any("lora_A" in name for name, _ in loaded.named_parameters())
    merged = merge(str(tiny_ckpt[0]), str(adapter), str(tmp_path / "merged"))
    folded = HiggsAudioV2ForConditionalGeneration.from_pretrained(str(merged))
    _close(folded.state_dict(), loaded.merge_and_unload().state_dict())


def test_fsdp_full_model_is_a_base_merge_loads(runs, tmp_path) -> None:
    """The FSDP run's final model as `merge`'s base, with the LoRA run's adapter: `merge` loads it whole."""
    from transformers import HiggsAudioV2ForConditionalGeneration

    from trainer.commands.merge import merge

    merged = merge(str(runs["fsdp"] / "model"), str(runs["fsdp_lora"] / ckpt.ADAPTER_DIR), str(tmp_path / "m"))
    model = HiggsAudioV2ForConditionalGeneration.from_pretrained(str(merged))
    trained = load_file(str(runs["fsdp"] / "model" / "model.safetensors"))
    # Only the adapted projections change in a merge; every other weight is the FSDP run's.
    kept = {k: v for k, v in model.state_dict().items() if k in trained and not re.search(r"[qkvo]_proj", k)}
    _close(kept, {k: trained[k] for k in kept})


def test_fsdp_run_killed_mid_run_resumes_to_the_uninterrupted_runs_losses_and_weights(
        runs, tiny_ckpt, code_cache, tmp_path) -> None:
    out = tmp_path / "killed"
    args = _args(tiny_ckpt, code_cache, out, fsdp="true")
    stall = tmp_path / "stall"
    stall.mkdir()
    # Rank 0 hangs after step 7 (checkpoint-5 complete, step 6 and 7 done): then every process is SIGKILLed.
    env = launch_env(args, tmp_path, STALL_DIR=str(stall), STALL_RANK="0", STALL_AFTER_STEP="7",
                     PYTHONPATH=os.pathsep.join(filter(None, [str(STALL), os.environ.get("PYTHONPATH")])))
    with trainer_process("launch", env, tmp_path / "first.log") as first:  # kill() walks the tree: torchrun, ranks
        first.wait_for((stall / "stalled-rank-0").is_file, "rank 0 to stall after step 7", timeout=300,
                       interval=0.1)
        ranks = rank_pids(first.proc.pid)
        first.kill()
    for pid in ranks.values():  # the ranks themselves were SIGKILLed, not only the launcher above them
        assert _gone(pid), f"rank process {pid} outlived the kill"
    assert ckpt.is_complete(out / "checkpoint-5") and not (out / "checkpoint-10").exists()
    again = launch(launch_env(args, tmp_path, termination_log="termination-again"))
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert re.search(r"resuming from \S*checkpoint-5 at step 5\b", again.stdout + again.stderr)
    uninterrupted, resumed = _losses(runs["fsdp"]), _losses(out)
    assert len(resumed) == 10
    assert max(abs(a - b) for a, b in zip(uninterrupted, resumed, strict=True)) <= TOL, (uninterrupted, resumed)
    _close(load_file(str(out / "model" / "model.safetensors")),
           load_file(str(runs["fsdp"] / "model" / "model.safetensors")))


def _gone(pid: int, wait: float = 10.0) -> bool:
    """Whether `pid` has exited (gone from /proc, or a zombie) within `wait` seconds: a SIGKILL lands at once,
    its process's end a moment later."""
    import time

    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
        except (OSError, IndexError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


def test_fsdp_checkpoint_of_two_processes_resumes_on_one(runs, tiny_ckpt, code_cache, tmp_path) -> None:
    """FULL_STATE_DICT checkpoints hold whole tensors: a different number of processes loads them."""
    import shutil

    out = tmp_path / "one"
    out.mkdir()
    shutil.copytree(runs["fsdp"] / "checkpoint-5", out / "checkpoint-5")
    # One process with two accumulated micro-batches: the same samples per optimizer step as two processes.
    args = _args(tiny_ckpt, code_cache, out, fsdp="true", nproc_per_node="1", gradient_accumulation_steps="2")
    proc = launch(launch_env(args, tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert re.search(r"resuming from \S*checkpoint-5 at step 5\b", proc.stdout + proc.stderr)
    state = json.loads((out / "checkpoint-10" / "trainer_state.json").read_text())
    assert state["global_step"] == 10
    losses = [h["loss"] for h in state["log_history"] if "loss" in h]
    assert losses[:5] == _losses(runs["fsdp"])[:5]  # the history it resumed from
    assert losses[5] < losses[0]  # the resumed weights, not fresh ones: step 6 starts below step 1's loss


def test_fsdp_sigterm_on_one_rank_saves_a_complete_gathered_checkpoint_that_resumes(
        tiny_ckpt, code_cache, tmp_path) -> None:
    import signal

    from trainer import errors

    out = tmp_path / "term"
    args = _args(tiny_ckpt, code_cache, out, fsdp="true", max_steps="100000", save_steps="100000")
    log = tmp_path / "launch.log"
    with trainer_process("launch", launch_env(args, tmp_path), log) as run:
        run.wait_for_log("{'loss'", count=3, timeout=240, interval=0.05)
        os.kill(rank_pids(run.proc.pid)[1], signal.SIGTERM)  # one rank: every rank stops at the same step end
        code = run.proc.wait(timeout=180)
    assert code == errors.PREEMPTED, log.read_text()[-3000:]
    (saved,) = [p for p in out.glob("checkpoint-*") if ckpt.is_complete(p)]
    assert all((saved / f).is_file() for f in FSDP_FILES)
    step = ckpt.step_of(saved)
    again = launch(launch_env(_args(tiny_ckpt, code_cache, out, fsdp="true", max_steps=str(step + 2),
                                    save_steps="100000"), tmp_path, termination_log="termination-again"))
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert f"resuming from {saved} at step {step}" in again.stdout + again.stderr


def test_lora_under_fsdp_resumes_to_the_uninterrupted_runs_losses_and_adapter(runs, tiny_ckpt, code_cache,
                                                                              tmp_path) -> None:
    import shutil

    out = tmp_path / "lora"
    out.mkdir()
    shutil.copytree(runs["fsdp_lora"] / "checkpoint-5", out / "checkpoint-5")
    again = launch(launch_env(_args(tiny_ckpt, code_cache, out, fsdp="true", use_lora="true"), tmp_path))
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    uninterrupted, resumed = _losses(runs["fsdp_lora"]), _losses(out)
    assert len(resumed) == 10
    assert max(abs(a - b) for a, b in zip(uninterrupted, resumed, strict=True)) <= TOL, (uninterrupted, resumed)
    adapter = f"{ckpt.ADAPTER_DIR}/adapter_model.safetensors"
    _close(load_file(str(out / adapter)), load_file(str(runs["fsdp_lora"] / adapter)))
