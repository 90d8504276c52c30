"""`higgs-audio-trainer launch`: the operator's env -> torchrun arguments, the exit code decision, and real
launches (torchrun with two CPU ranks) for the codes that must survive torchrun and for SIGTERM."""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
from pathlib import Path

import pytest

from tests.processes import launch, launch_env, trainer_process
from trainer import errors, rank_reports
from trainer.__main__ import says_why
from trainer.errors import ConfigError
from trainer.launch.launcher import child_env, decide, finish, launcher_options
from trainer.launch.launcher import main as launch_main
from trainer.launch.supervise import children_of
from trainer.launch.topology import TORCHRUN_MODULE, nproc_per_node, topology_from_env, torchrun_command
from trainer.rank_reports import OUTCOME_DIR_ENV, Outcome


def plan(env: dict[str, str], gpus: int = 0) -> list[str]:
    """The torchrun arguments (between the interpreter and `-m trainer`) for `env`."""
    cmd = torchrun_command(topology_from_env(env, lambda: gpus), ["train"])
    assert cmd[:3] == [sys.executable, "-m", TORCHRUN_MODULE] and cmd[-3:] == ["-m", "trainer", "train"]
    return cmd[3:-3]


# ---- env -> torchrun -------------------------------------------------------------------------------
def test_no_operator_env_is_one_standalone_node_with_one_process_per_gpu_or_one() -> None:
    assert plan({}) == ["--nnodes=1", "--nproc_per_node=1", "--max_restarts=0", "--standalone"]
    assert "--nproc_per_node=4" in plan({}, gpus=4)
    assert "--nproc_per_node=2" in plan({"NPROC_PER_NODE": "2"}, gpus=4)


def test_nproc_per_node_words_and_errors_name_the_variable() -> None:
    assert nproc_per_node({"PET_NPROC_PER_NODE": "auto"}, lambda: 8) == 8
    assert nproc_per_node({"NPROC_PER_NODE": "gpu"}, lambda: 2) == 2
    assert nproc_per_node({"NPROC_PER_NODE": "cpu"}, lambda: 0) == len(os.sched_getaffinity(0))
    assert nproc_per_node({"NPROC_PER_NODE": "3", "PET_NPROC_PER_NODE": "3"}, lambda: 0) == 3
    with pytest.raises(ConfigError, match=r"PET_NPROC_PER_NODE.*gpu.*no GPU"):
        nproc_per_node({"PET_NPROC_PER_NODE": "gpu"}, lambda: 0)
    with pytest.raises(ConfigError, match=r"NPROC_PER_NODE.*'two'"):
        nproc_per_node({"NPROC_PER_NODE": "two"}, lambda: 0)
    with pytest.raises(ConfigError, match=r"NPROC_PER_NODE.*at least 1.*'0'"):
        nproc_per_node({"NPROC_PER_NODE": "0"}, lambda: 0)
    with pytest.raises(ConfigError, match=r"NPROC_PER_NODE='2' and PET_NPROC_PER_NODE='4' \(the PyTorchJob's "
                                          r"spec.nprocPerNode or the TrainJob's spec.trainer.numProcPerNode\) "
                                          r"disagree"):
        nproc_per_node({"NPROC_PER_NODE": "2", "PET_NPROC_PER_NODE": "4"}, lambda: 0)


def test_the_nproc_per_node_flag_outranks_the_variable_and_must_agree_with_the_operator() -> None:
    assert nproc_per_node({"NPROC_PER_NODE": "3"}, lambda: 0, flag="2") == 2
    assert nproc_per_node({"PET_NPROC_PER_NODE": "auto"}, lambda: 8, flag="cpu") == len(os.sched_getaffinity(0))
    assert nproc_per_node({"PET_NPROC_PER_NODE": "2"}, lambda: 0, flag="2") == 2
    assert "--nproc_per_node=2" in torchrun_command(topology_from_env({}, lambda: 4, nproc_flag="2"), ["train"])
    with pytest.raises(ConfigError, match=r"^--nproc_per_node: expected a positive integer, auto, gpu or cpu, "
                                          r"got 'two'$"):
        nproc_per_node({}, lambda: 0, flag="two")
    with pytest.raises(ConfigError, match=r"^--nproc_per_node: expected an integer of at least 1, got '0'"):
        nproc_per_node({}, lambda: 0, flag="0")
    with pytest.raises(ConfigError, match=r"^--nproc_per_node: gpu asks for one process per GPU, but no GPU"):
        nproc_per_node({}, lambda: 0, flag="gpu")
    with pytest.raises(ConfigError, match=r"--nproc_per_node '2' and environment variable PET_NPROC_PER_NODE='4' "
                                          r"\(the PyTorchJob's spec.nprocPerNode or the TrainJob's "
                                          r"spec.trainer.numProcPerNode\) disagree"):
        nproc_per_node({"PET_NPROC_PER_NODE": "4"}, lambda: 0, flag="2")


def test_launcher_options_come_before_the_command_in_either_spelling() -> None:
    assert launcher_options(["--nproc_per_node", "2", "train", "--use_lora"]) == ("2", ["train", "--use_lora"])
    assert launcher_options(["--nproc-per-node=cpu", "--use_lora"]) == ("cpu", ["--use_lora"])
    assert launcher_options(["train", "--nproc_per_node", "2"]) == (None, ["train", "--nproc_per_node", "2"])
    for argv in (["--nproc_per_node"], ["--nproc_per_node", "--use_lora"]):
        with pytest.raises(ConfigError, match=r"^--nproc_per_node: expected a value .* `higgs-audio-trainer launch "
                                              r"--nproc_per_node 2 train \.\.\.`$"):
            launcher_options(argv)


def test_nproc_per_node_without_train_is_a_config_error_before_anything_runs(tmp_path, capsys) -> None:
    env = {"TERMINATION_LOG": str(tmp_path / "termination-log")}
    assert launch_main(["--nproc_per_node", "2", "options"], env) == errors.CONFIG_ERROR
    assert "--nproc_per_node applies to train only; options runs in one process" in capsys.readouterr().err
    assert launch_main(["--nproc_per_node"], env) == errors.CONFIG_ERROR
    assert "--nproc_per_node: expected a value" in (tmp_path / "termination-log").read_text()


def test_the_default_termination_log_is_written_only_where_it_exists(tmp_path, monkeypatch, capsys) -> None:
    # as root on a workstation /dev is writable: a local launch must not leave a file there
    default = tmp_path / "termination-log"
    monkeypatch.setattr(rank_reports, "DEFAULT_TERMINATION_LOG", str(default))
    assert finish(errors.DATA_ERROR, "data error: x", {}) == errors.DATA_ERROR
    assert not default.exists()
    default.write_text("")  # what Kubernetes mounts
    finish(errors.DATA_ERROR, "data error: x", {})
    assert default.read_text() == "data error: x\n"
    assert capsys.readouterr().err.count("higgs-audio-trainer launch: exit code 3: data error: x") == 2


def test_only_local_rank_0_prints_an_error_every_rank_finds_alike() -> None:
    for code in (errors.CONFIG_ERROR, errors.DATA_ERROR):
        assert says_why(code, {}) and says_why(code, {"LOCAL_RANK": "0", "RANK": "2"})
        assert not says_why(code, {"LOCAL_RANK": "1", "RANK": "1"})
    for code in (errors.PREEMPTED, errors.PROCESS_LOST, errors.DISK_FULL, errors.DIVERGED):
        assert says_why(code, {"LOCAL_RANK": "1"})


def test_the_operators_default_auto_gives_way_to_the_containers_nproc_per_node() -> None:
    # Training Operator v1 writes PET_NPROC_PER_NODE=auto into every pod when spec.nprocPerNode is unset
    assert nproc_per_node({"NPROC_PER_NODE": "2", "PET_NPROC_PER_NODE": "auto"}, lambda: 8) == 2
    assert nproc_per_node({"NPROC_PER_NODE": "cpu", "PET_NPROC_PER_NODE": "Auto"}, lambda: 8) == len(
        os.sched_getaffinity(0))
    assert nproc_per_node({"NPROC_PER_NODE": "GPU", "PET_NPROC_PER_NODE": "gpu"}, lambda: 4) == 4


def operator_env(rank: int, nnodes: int = 2, nproc: str = "2") -> dict[str, str]:
    """What the training operator injects into replica `rank` of a Master + Workers PyTorchJob."""
    return {
        "PYTHONUNBUFFERED": "1",
        "MASTER_ADDR": "job-master-0", "MASTER_PORT": "23456",
        "PET_MASTER_ADDR": "job-master-0", "PET_MASTER_PORT": "23456",
        "WORLD_SIZE": str(nnodes * int(nproc)) if nproc.isdigit() else str(nnodes),
        "RANK": str(rank), "PET_NODE_RANK": str(rank), "PET_NNODES": str(nnodes), "PET_NPROC_PER_NODE": nproc,
    }


def test_operator_env_gives_a_static_multi_node_launch() -> None:
    assert plan(operator_env(1)) == ["--nnodes=2", "--nproc_per_node=2", "--max_restarts=0", "--node_rank=1",
                                     "--master_addr=job-master-0", "--master_port=23456"]
    # WORLD_SIZE counts processes there (2 nodes x 2), and is not taken for the node count.
    assert "--nnodes=2" in plan(operator_env(0, nnodes=2, nproc="2"))
    assert "--nproc_per_node=4" in plan(operator_env(0, nproc="auto"), gpus=4)


def test_older_operator_env_without_pet_variables() -> None:
    env = {"MASTER_ADDR": "job-master-0", "MASTER_PORT": "23456", "WORLD_SIZE": "3", "RANK": "2"}
    assert plan(env) == ["--nnodes=3", "--nproc_per_node=1", "--max_restarts=0", "--node_rank=2",
                         "--master_addr=job-master-0", "--master_port=23456"]


def test_a_job_of_one_node_runs_standalone_even_with_a_master_address() -> None:
    assert "--standalone" in plan(operator_env(0, nnodes=1))


def test_elastic_env_gives_a_c10d_rendezvous() -> None:
    env = {"PET_RDZV_ENDPOINT": "job-worker-0:23456", "PET_RDZV_BACKEND": "c10d", "PET_NNODES": "1:3",
           "PET_MAX_RESTARTS": "3", "PET_NPROC_PER_NODE": "2", "PET_RDZV_ID": "job"}
    assert plan(env) == ["--nnodes=1:3", "--nproc_per_node=2", "--max_restarts=3", "--rdzv_backend=c10d",
                         "--rdzv_endpoint=job-worker-0:23456", "--rdzv_id=job"]


@pytest.mark.parametrize(("env", "message"), [
    ({"PET_NNODES": "2", "PET_NODE_RANK": "0"}, r"PET_MASTER_ADDR \(or MASTER_ADDR\): required with PET_NNODES=2"),
    ({"PET_NNODES": "2", "PET_MASTER_ADDR": "m"}, r"PET_NODE_RANK \(or RANK\): required"),
    ({**operator_env(0), "PET_NODE_RANK": "2"}, r"PET_NODE_RANK: expected an integer of at least 0 and at most 1"),
    ({**operator_env(0), "PET_MASTER_PORT": "http"}, r"PET_MASTER_PORT: expected an integer"),
    ({"PET_NNODES": "zero"}, r"PET_NNODES: expected an integer"),
    ({"PET_RDZV_ENDPOINT": "w:1"}, r"PET_NNODES: required with PET_RDZV_ENDPOINT"),
    ({"PET_RDZV_ENDPOINT": "w:1", "PET_NNODES": "3:1"}, r"PET_NNODES: MIN above MAX"),
])
def test_bad_topology_env_is_a_config_error_naming_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        topology_from_env(env, lambda: 0)


def test_child_env_drops_pet_variables_and_adds_the_outcome_dir() -> None:
    env = child_env({**operator_env(1), "USE_LORA": "true"}, "/tmp/x")
    assert not [k for k in env if k.startswith("PET_")]
    assert env[OUTCOME_DIR_ENV] == "/tmp/x" and env["USE_LORA"] == "true" and env["RANK"] == "1"
    assert OUTCOME_DIR_ENV not in child_env({}, None)


# ---- the exit code ---------------------------------------------------------------------------------
def o(rank: int, code: int, reason: str = "") -> Outcome:
    return Outcome(rank, code, reason)


@pytest.mark.parametrize(("returncode", "outcomes", "received", "expected"), [
    (0, [o(0, 0), o(1, 0)], None, (0, "")),
    (0, [], signal.SIGTERM, (0, "")),  # the run finished before the signal mattered
    (1, [o(0, 0), o(1, 3, "data error: x")], None, (3, "rank 1: data error: x")),
    (1, [o(0, 143, "stopped"), o(1, 2, "configuration error: y")], signal.SIGTERM,
     (2, "rank 1: configuration error: y")),
    (1, [o(0, 143, "stopped by SIGTERM at step 4: saved"), o(1, 143, "z")], signal.SIGTERM,
     (143, "rank 0: stopped by SIGTERM at step 4: saved")),
    (1, [], signal.SIGINT, (130, "stopped by SIGINT")),
    (1, [o(0, 143, "stopped"), o(1, 1, "unexpected error: RuntimeError: boom")], None,
     (1, "rank 1: unexpected error: RuntimeError: boom")),
    (1, [o(1, 143, "stopped by SIGTERM before training started")], None,
     (143, "rank 1: stopped by SIGTERM before training started")),
    (137, [], None, (137, "the trainer was killed by signal 9")),
])
def test_decide(returncode: int, outcomes: list[Outcome], received: int | None, expected: tuple[int, str]) -> None:
    assert decide(returncode, outcomes, received) == expected


def test_decide_a_failure_no_rank_explains_is_retried_under_torchrun_and_kept_for_one_process() -> None:
    code, reason = decide(1, [o(0, 0)], None)
    assert code == errors.PROCESS_LOST and code >= 128 and "no rank said why" in reason
    assert decide(3, [], None, torchrun=False)[0] == 3


def test_decide_a_rank_that_died_silently_outweighs_the_errors_it_caused_in_the_others() -> None:
    lost = decide(1, [o(0, 1, "unexpected error: RuntimeError: Connection closed by peer")], None, expected=2)
    assert lost == (errors.PROCESS_LOST, "1 of 2 training processes ended without a reason (killed, for "
                    "example out of memory); see the log above")
    assert decide(1, [o(0, 3, "data error: x")], None, expected=2)[0] == errors.DATA_ERROR


# ---- real launches ---------------------------------------------------------------------------------
def test_bad_env_value_exits_2_before_torchrun_with_the_variable_named(base_args, tmp_path) -> None:
    env = launch_env(base_args, tmp_path, use_lora="maybe")
    started = time.monotonic()
    proc = launch(env)
    assert proc.returncode == errors.CONFIG_ERROR
    assert time.monotonic() - started < 30
    assert "environment variable USE_LORA: expected a boolean" in proc.stderr
    assert TORCHRUN_MODULE not in proc.stderr
    message = (tmp_path / "termination-log").read_text()
    assert message.startswith("configuration error: environment variable USE_LORA") and message.count("\n") == 1


def test_unknown_command_and_topology_errors_exit_2(base_args, tmp_path) -> None:
    env = launch_env(base_args, tmp_path)
    assert launch(env, "serve").returncode == errors.CONFIG_ERROR
    proc = launch({**env, "PET_NNODES": "2", "PET_NODE_RANK": "0"})
    assert proc.returncode == errors.CONFIG_ERROR and "PET_MASTER_ADDR" in proc.stderr
    assert "PET_MASTER_ADDR" in (tmp_path / "termination-log").read_text()


def test_nproc_per_node_after_the_command_says_where_it_goes(base_args, tmp_path) -> None:
    proc = launch(launch_env(base_args, tmp_path), "train", "--nproc_per_node=2")
    assert proc.returncode == errors.CONFIG_ERROR
    assert ("--nproc_per_node is an option of launch, not of the trainer: put it before the command, as in "
            "`higgs-audio-trainer launch --nproc_per_node 2 train ...`") in proc.stderr


def test_no_termination_log_is_written_where_its_directory_is_missing(base_args, tmp_path) -> None:
    env = launch_env(base_args, tmp_path, use_lora="maybe")
    env["TERMINATION_LOG"] = str(tmp_path / "missing" / "termination-log")
    assert launch(env).returncode == errors.CONFIG_ERROR
    assert not (tmp_path / "missing").exists()


def test_shell_and_single_process_subcommands_are_reachable(base_args, tmp_path) -> None:
    env = launch_env(base_args, tmp_path)
    shell = launch(env, "shell", "-c", "echo from-bash $0")
    assert shell.returncode == 0 and shell.stdout.strip() == "from-bash bash"
    options = launch(env, "options")
    assert options.returncode == 0 and "`USE_LORA`" in options.stdout
    assert TORCHRUN_MODULE not in options.stderr


@pytest.mark.slow
def test_data_error_in_the_ranks_exits_3_through_torchrun(base_args, tmp_path) -> None:
    manifest = tmp_path / "bad.jsonl"
    manifest.write_text(json.dumps({"audio": "missing.wav", "text": "hello"}) + "\n")
    env = launch_env(base_args, tmp_path, train_data_file=str(manifest), nproc_per_node="2")
    proc = launch(env)
    assert proc.returncode == errors.DATA_ERROR, proc.stderr[-3000:]
    assert "--nproc_per_node=2" in proc.stderr
    assert "data error" in proc.stderr and "missing.wav" in proc.stderr
    message = (tmp_path / "termination-log").read_text()
    assert re.match(r"rank \d: data error: .*missing\.wav", message)


@pytest.mark.slow
def test_config_error_found_inside_the_ranks_exits_2_through_torchrun(base_args, tmp_path) -> None:
    # bf16 on a CPU-only machine is only found once the ranks look at the device.
    env = launch_env(base_args, tmp_path, bf16="true", nproc_per_node="2")
    proc = launch(env)
    assert proc.returncode == errors.CONFIG_ERROR, proc.stderr[-3000:]
    assert "BF16" in (tmp_path / "termination-log").read_text()


@pytest.mark.slow
def test_sigterm_saves_one_checkpoint_exits_143_and_the_next_launch_resumes(base_args, tmp_path) -> None:
    out = Path(base_args["output_dir"])
    env = launch_env(base_args, tmp_path, nproc_per_node="2", max_steps="100000", save_steps="100000",
                     logging_steps="1", dataloader_num_workers="1")
    log = tmp_path / "launch.log"
    with trainer_process("launch", env, log) as run:
        run.wait_for_log("{'loss'", timeout=240, interval=0.2)
        run.proc.send_signal(signal.SIGTERM)
        code = run.proc.wait(timeout=120)
    text = log.read_text()
    assert code == errors.PREEMPTED, text[-3000:]
    complete = [p.parent for p in out.glob("checkpoint-*/checkpoint_complete.json")]
    assert len(complete) == 1
    step = int(complete[0].name.split("-")[1])
    assert (complete[0] / "rng_state_0.pth").is_file() and (complete[0] / "rng_state_1.pth").is_file()
    assert not (out / "lora_adapters").exists()
    assert text.count(f"stopped by SIGTERM at step {step}: checkpoint-{step} saved") >= 2  # both ranks, one step
    assert (tmp_path / "termination-log").read_text().startswith(f"rank 0: stopped by SIGTERM at step {step}")

    again = launch(launch_env(base_args, tmp_path, nproc_per_node="2", max_steps=str(step + 2), logging_steps="1"))
    assert again.returncode == 0, again.stderr[-3000:]
    assert re.search(rf"resuming from \S*checkpoint-{step} at step {step}\b", again.stderr), again.stderr[-3000:]
    assert (out / "lora_adapters" / "adapter_model.safetensors").is_file()


@pytest.mark.slow
def test_a_rank_killed_without_a_word_gives_a_retried_code_and_the_restart_resumes(base_args, tmp_path) -> None:
    from trainer.train.checkpoint import MARKER, newest_complete, step_of

    out = tmp_path / "out"
    env = launch_env(base_args, tmp_path, output_dir=str(out), nproc_per_node="2", max_steps="400",
                     save_steps="4", logging_steps="1")
    log = tmp_path / "launch.log"
    with trainer_process("launch", env, log) as run:
        run.wait_for(lambda: (out / "checkpoint-4" / MARKER).is_file(), "checkpoint-4", timeout=240, interval=0.1)
        (torchrun,) = children_of(run.proc.pid)
        ranks = children_of(torchrun)
        assert len(ranks) == 2
        os.kill(ranks[1], signal.SIGKILL)
        code = run.proc.wait(timeout=120)
    assert code == errors.PROCESS_LOST, log.read_text()[-3000:]
    assert "without a reason" in (tmp_path / "termination-log").read_text()
    assert "ChildFailedError" in log.read_text()  # no rank said why: torchrun's report of exit codes is shown
    resume_point, _ = newest_complete(out)
    assert resume_point is not None and resume_point.name != "checkpoint-400"

    # the operator retries the code: the launch again (4 more steps, to keep the test short) continues
    # from the newest complete checkpoint
    restart = launch(env | {"MAX_STEPS": str(step_of(resume_point) + 4)}, timeout=300)
    assert restart.returncode == 0, restart.stderr[-3000:]
    assert f"resuming from {resume_point} at step {step_of(resume_point)}" in restart.stderr
    assert (out / "lora_adapters" / "adapter_model.safetensors").is_file()


def _losses(checkpoint: Path) -> dict[int, float]:
    """Step -> training loss of every step logged up to `checkpoint` (exact floats, logging_steps=1)."""
    history = json.loads((checkpoint / "trainer_state.json").read_text())["log_history"]
    return {h["step"]: h["loss"] for h in history if "loss" in h}


@pytest.mark.slow
def test_sigterm_to_one_rank_then_restart_gives_the_losses_of_an_uninterrupted_run(base_args, tmp_path) -> None:
    steps = "60"
    same = {"nproc_per_node": "2", "max_steps": steps, "save_steps": "100000", "logging_steps": "1",
            "dataloader_num_workers": "1"}
    whole_out, cut_out = tmp_path / "whole", tmp_path / "cut"
    whole = launch(launch_env(base_args, tmp_path, output_dir=str(whole_out), **same))
    assert whole.returncode == 0, whole.stderr[-3000:]
    expected = _losses(whole_out / f"checkpoint-{steps}")
    assert sorted(expected) == list(range(1, int(steps) + 1))

    env = launch_env(base_args, tmp_path, output_dir=str(cut_out), **same)
    log = tmp_path / "cut.log"
    with trainer_process("launch", env, log) as run:
        run.wait_for_log("{'loss'", count=3, timeout=240, interval=0.05)
        (torchrun,) = children_of(run.proc.pid)
        ranks = children_of(torchrun)
        os.kill(ranks[1], signal.SIGTERM)  # one rank only: the other learns it through the all_reduce
        code = run.proc.wait(timeout=120)
    assert code == errors.PREEMPTED, log.read_text()[-3000:]
    (saved,) = [p.parent for p in cut_out.glob("checkpoint-*/checkpoint_complete.json")]
    stopped = int(saved.name.split("-")[1])
    assert 3 <= stopped < int(steps), "the signal landed after the run had ended"
    # Lost: nothing; the checkpoint is the step both ranks stopped at.
    assert _losses(saved) == {s: expected[s] for s in range(1, stopped + 1)}

    again = launch(launch_env(base_args, tmp_path, output_dir=str(cut_out), **same))
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming from {saved} at step {stopped}" in again.stderr
    resumed = _losses(cut_out / f"checkpoint-{steps}")
    after = range(stopped + 1, int(steps) + 1)
    assert [resumed[s] for s in after] == [expected[s] for s in after]


def test_decide_a_lost_peer_outweighs_the_signal_stop_torchrun_then_sends_the_rank_it_waited_for() -> None:
    # Rank 1 gave up waiting past --ddp_timeout (160); torchrun then stopped rank 0 with SIGTERM (143).
    outcomes = [o(0, 143, "stopped by SIGTERM at step 2: checkpoint-2 saved"),
                o(1, 160, "lost a peer: DistStoreError: waiting for rank 0's samples at step 2: ...")]
    assert decide(1, outcomes, None, expected=2) == (
        errors.PROCESS_LOST, "rank 1: lost a peer: DistStoreError: waiting for rank 0's samples at step 2: ...")


def test_child_env_keeps_torchrun_from_importing_the_working_directory() -> None:
    assert child_env({}, None)["PYTHONSAFEPATH"] == "1"
