"""Real `torchrun` runs with two CPU processes (gloo): DDP, the CLI from env vars only, resumption, and what a
failed local multi-process run prints and exits with (through the launcher, and under plain torchrun)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import DEMO_DATA, clean_env, to_argv
from tests.processes import trainer_process
from trainer import errors
from trainer.launch.topology import TORCHRUN_MODULE

pytestmark = pytest.mark.slow
PROBE = Path(__file__).with_name("ddp_probe.py")


def _torchrun() -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
            "--master_port=0", "--standalone"]


def _env(base_args: dict[str, str], **over: str) -> dict[str, str]:
    env = clean_env(**{k.upper(): v for k, v in (base_args | over).items()})
    env["OMP_NUM_THREADS"] = "1"
    return env


def _local_launch(flags: dict[str, str], tmp_path: Path, **env_over: str) -> subprocess.CompletedProcess[str]:
    """The README's local multi-process command, `higgs-audio-trainer launch --nproc_per_node 2 train FLAGS`,
    with nothing from the host's trainer variables; `env_over` adds variables (`USE_LORA="maybe"`)."""
    env = clean_env(OMP_NUM_THREADS="1", TERMINATION_LOG=str(tmp_path / "termination-log"), **env_over)
    argv = [sys.executable, "-m", "trainer", "launch", "--nproc_per_node", "2", "train", *to_argv(flags)]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)


def test_two_process_ddp_trains_keeps_ranks_equal_and_writes_one_adapter_set(base_args, tmp_path) -> None:
    env = _env(base_args, max_steps="10", save_steps="5")
    env["PROBE_DIR"] = str(tmp_path)
    proc = subprocess.run([*_torchrun(), str(PROBE)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["world_size"] == r1["world_size"] == 2
    assert r0["step"] == r1["step"] == 10
    assert r0["digest"] == r1["digest"]
    out = Path(base_args["output_dir"])
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-10", "checkpoint-5"]
    adapters = sorted(p.relative_to(out).as_posix() for p in out.rglob("adapter_model.safetensors"))
    assert adapters == ["checkpoint-10/lora_adapters/adapter_model.safetensors",
                        "checkpoint-5/lora_adapters/adapter_model.safetensors",
                        "lora_adapters/adapter_model.safetensors"]
    for ckpt in out.glob("checkpoint-*"):
        assert (ckpt / "checkpoint_complete.json").is_file()
        assert (ckpt / "rng_state_0.pth").is_file() and (ckpt / "rng_state_1.pth").is_file()


def test_cli_under_torchrun_from_environment_variables_only(base_args) -> None:
    env = _env(base_args, max_steps="4", save_steps="100")
    proc = subprocess.run([*_torchrun(), "-m", "trainer", "train"], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (Path(base_args["output_dir"]) / "lora_adapters" / "adapter_model.safetensors").is_file()


def test_killed_run_resumes_from_the_last_complete_checkpoint(base_args, tmp_path) -> None:
    out = Path(base_args["output_dir"])
    env = _env(base_args, max_steps="100000", save_steps="10", logging_steps="1", warmup_steps="0")
    with trainer_process("train", env, tmp_path / "first.log", own_group=True) as first:
        marker = out / "checkpoint-30" / "checkpoint_complete.json"
        first.wait_for(marker.is_file, "checkpoint-30 to be complete", timeout=300, interval=0.05)
        first.kill()
    complete = sorted(int(p.parent.name.split("-")[1]) for p in out.glob("checkpoint-*/checkpoint_complete.json"))
    last = complete[-1]
    assert last >= 30
    # A save that died half-way: a newer checkpoint directory without its marker.
    partial = out / f"checkpoint-{last + 10}"
    partial.mkdir(exist_ok=True)
    (partial / "optimizer.pt").write_bytes(b"truncated")
    env2 = _env(base_args, max_steps=str(last + 5), save_steps="1000", logging_steps="1")
    second = subprocess.run([sys.executable, "-m", "trainer", "train"], env=env2, capture_output=True, text=True,
                            timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    log = second.stdout + second.stderr
    assert f"ignoring incomplete checkpoint {partial}" in log
    assert re.search(rf"resuming from \S*checkpoint-{last} at step {last}\b", log), log[-2000:]
    assert not partial.exists()
    state = json.loads((out / f"checkpoint-{last}" / "trainer_state.json").read_text())
    assert state["global_step"] == last
    # logging_steps=1: one printed loss line per optimizer step. From scratch it would be last + 5.
    step_logs = [line for line in second.stdout.splitlines() if line.startswith("{'loss':")]
    assert len(step_logs) == 5, second.stdout[-2000:]
    assert (out / "lora_adapters" / "adapter_model.safetensors").is_file()


@pytest.mark.parametrize(("drop", "env_over", "message"), [
    ("use_lora", {"USE_LORA": "maybe"}, "configuration error: environment variable USE_LORA: expected a boolean"),
    ("train_data_file", {}, "configuration error: --train_data_file / TRAIN_DATA_FILE: required, not set"),
])
def test_local_launch_config_error_exits_2_with_one_message_and_no_traceback(
    base_args, tmp_path, drop: str, env_over: dict[str, str], message: str
) -> None:
    flags = {k: v for k, v in base_args.items() if k != drop}
    proc = _local_launch(flags, tmp_path, **env_over)
    assert proc.returncode == errors.CONFIG_ERROR, proc.stderr[-3000:]
    assert proc.stderr.count(message) == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert TORCHRUN_MODULE not in proc.stderr  # found before any rank started


def test_local_launch_data_error_exits_3_and_only_local_rank_0_prints_it(base_args, tmp_path) -> None:
    data = tmp_path / "train.csv"
    data.write_text("audio,text\n")
    proc = _local_launch(base_args | {"train_data_file": str(data)}, tmp_path)
    assert proc.returncode == errors.DATA_ERROR, proc.stderr[-3000:]
    assert "--nproc_per_node=2" in proc.stderr  # two ranks ran and both found it
    assert proc.stderr.count(f"higgs-audio-trainer: data error: {data}: unknown data format") == 1, proc.stderr[-3000:]
    assert f"higgs-audio-trainer launch: exit code 3: rank 0: data error: {data}: unknown data format" in proc.stderr


def test_plain_torchrun_prints_a_config_error_once_and_exits_with_torchruns_1(base_args, tmp_path) -> None:
    flags = {k: v for k, v in base_args.items() if k != "use_lora"}
    proc = subprocess.run([*_torchrun(), "-m", "trainer", "train", *to_argv(flags)],
                          env=_env({}, use_lora="maybe"), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stderr[-3000:]  # torchrun's own code for any failed worker group
    message = "higgs-audio-trainer: configuration error: environment variable USE_LORA: expected a boolean"
    assert proc.stderr.count(message) == 1, proc.stderr[-3000:]
    assert "exitcode: 2" in proc.stderr  # each rank's own code, in torchrun's report


def test_local_launch_on_bad_samples_ends_with_the_report_as_its_last_line_and_exits_3(base_args, tmp_path) -> None:
    good = sorted((DEMO_DATA.parent / "audio").rglob("*.flac"))[0]
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps({"audio": str(good), "text": "A fine sample."}) + "\n"
                    + json.dumps({"audio": str(tmp_path / "missing.flac"), "text": "Missing audio."}) + "\n")
    proc = _local_launch(base_args | {"train_data_file": str(data)}, tmp_path)
    assert proc.returncode == errors.DATA_ERROR, proc.stderr[-3000:]
    assert "--nproc_per_node=2" in proc.stderr  # both ranks ran
    last = proc.stderr.rstrip("\n").splitlines()[-1]
    assert last == (f"higgs-audio-trainer launch: exit code 3: rank 0: data error: 1 bad sample: {data}:2: audio "
                    f"file not found: {tmp_path / 'missing.flac'} Fix these samples, or pass --skip_bad_samples "
                    "(SKIP_BAD_SAMPLES=true) to skip them."), proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "ChildFailedError" not in proc.stderr, proc.stderr[-3000:]


def test_progress_lines_of_a_two_process_launch_come_from_rank_0_only(base_args, tmp_path) -> None:
    proc = _local_launch(base_args, tmp_path)  # max_steps 20, logging_steps 5; stderr is a pipe, not a terminal
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if "trainer.progress: step " in line]
    assert lines and all("[rank 0] INFO trainer.progress: step " in line for line in lines), lines
    steps = [re.search(r"step (\d+)/20, loss \d+\.\d{4}", line)[1] for line in lines]  # type: ignore[index]
    assert steps == ["1", "5", "10", "15", "20"], lines
    assert re.search(r"step 20/20, loss \d+\.\d{4}, [\d.]+ steps/s, eta 0:00:00$", lines[-1]), lines[-1]
