"""Events on the job: recorded for each step of a real launch's story, best effort when the API is away.

The API here is `events_api.EventsAPI`, a local HTTP server speaking the Events API (the real
apiextensions-apiserver of the status tests serves no core Events); the client is the real `kubernetes`
client with a kubeconfig pointing at it.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import pytest

from tests.processes import launch, launch_env, trainer_process
from tests.trainer.cluster.events_api import JOB_UID, events_api, kubeconfig
from trainer import errors
from trainer.cluster.client import api_client
from trainer.cluster.events import ANNOTATION_PREFIX, EventRecorder


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_recorder_on_a_local_events_api_sets_the_job_uid_and_limits_checkpoint_events(tmp_path) -> None:
    with events_api() as api:
        client, target = api_client({"KUBECONFIG": str(kubeconfig(tmp_path / "kc", api.url))})
        rec = EventRecorder(client, "PyTorchJob", "demo", "team", timeout=2.0, target=target)
        rec.started(1)
        assert rec.checkpoint_saved(10, 100, 2**20, 1.5, now=1000.0)
        assert not rec.checkpoint_saved(20, 100, 2**20, 1.4, now=1030.0)  # within the minute
        assert rec.checkpoint_saved(30, 100, 2**20, 1.3, now=1061.0)
        assert rec.close() == (3, 0)
    assert api.reasons() == ["TrainingStarted", "CheckpointSaved", "CheckpointSaved"]
    ckpt = api.events[1]
    assert ckpt["involvedObject"] == {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "name": "demo",
                                      "namespace": "team", "uid": JOB_UID}
    assert ckpt["message"] == "checkpoint-10 saved at step 10 of 100, 1.0 MiB, loss 1.5"
    assert ckpt["metadata"]["annotations"][ANNOTATION_PREFIX + "step"] == "10"
    assert ckpt["metadata"]["annotations"][ANNOTATION_PREFIX + "max-steps"] == "100"


def test_an_unreachable_api_is_counted_and_close_is_bounded(tmp_path) -> None:
    client, target = api_client({"KUBECONFIG": str(kubeconfig(tmp_path / "kc", f"http://127.0.0.1:{_closed_port()}"))})
    rec = EventRecorder(client, "PyTorchJob", "demo", "team", timeout=0.5, target=target)
    began = time.monotonic()
    rec.started()
    rec.failed(errors.PROCESS_LOST, "rank 1 ended without a reason", 10)
    assert rec.close() == (0, 2)
    assert time.monotonic() - began < 10


def _events_env(base_args, tmp_path, server: str, **over: str) -> dict[str, str]:
    env = launch_env(base_args, tmp_path, nproc_per_node="2", job_name="demo", job_namespace="team",
                     events_timeout_seconds="2", **over)
    env["KUBECONFIG"] = str(kubeconfig(tmp_path / "kubeconfig", server))
    env.pop("KUBERNETES_SERVICE_HOST", None)
    return env


@pytest.mark.slow
def test_events_of_a_real_two_process_launch_on_a_local_events_api_server(base_args, tmp_path) -> None:
    from trainer.launch.supervise import children_of
    from trainer.train.checkpoint import MARKER

    out = Path(base_args["output_dir"])
    with events_api() as api:
        env = _events_env(base_args, tmp_path, api.url, max_steps="400", save_steps="2", logging_steps="1")
        # 1: fresh start, a checkpoint, SIGTERM
        with trainer_process("launch", env, tmp_path / "one.log") as run:
            run.wait_for(lambda: (out / "checkpoint-2" / MARKER).is_file(), "checkpoint-2", timeout=240,
                         interval=0.05)
            run.wait_for(lambda: "CheckpointSaved" in api.reasons(), "the checkpoint Event", timeout=30,
                         interval=0.05)
            run.proc.send_signal(signal.SIGTERM)
            assert run.proc.wait(timeout=120) == errors.PREEMPTED, run.log_text()[-3000:]
        assert api.reasons() == ["TrainingStarted", "CheckpointSaved", "TrainingStopped"]
        stopped = api.events[-1]
        assert stopped["type"] == "Warning"
        assert stopped["message"].startswith("exit code 143: rank 0: stopped by SIGTERM")
        # 2: resumed, then a rank killed without a word: a failure
        first = len(api.events)
        with trainer_process("launch", env, tmp_path / "two.log") as run:
            run.wait_for(lambda: any(e["reason"] == "CheckpointSaved" for e in api.events[first:]),
                         "a checkpoint Event of the resumed run", timeout=240, interval=0.05)
            (torchrun,) = children_of(run.proc.pid)
            os.kill(children_of(torchrun)[1], signal.SIGKILL)
            assert run.proc.wait(timeout=120) == errors.PROCESS_LOST, run.log_text()[-3000:]
        resumed, *_, failed = api.events[first:]
        assert resumed["reason"] == "TrainingResumed" and "resumed from checkpoint-" in resumed["message"]
        assert failed["reason"] == "TrainingFailed"
        assert failed["message"].startswith("exit code 160 (a process ended without a reason")
        assert failed["metadata"]["annotations"][ANNOTATION_PREFIX + "exit-code"] == "160"
        # 3: resumed to the end: success, with where the adapter is
        first = len(api.events)
        step = max(int(p.parent.name.split("-")[1]) for p in out.glob("checkpoint-*/" + MARKER))
        done = launch(env | {"MAX_STEPS": str(step + 2)}, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        assert api.reasons()[first] == "TrainingResumed" and api.reasons()[-1] == "TrainingSucceeded"
        assert f"the result is in {out / 'lora_adapters'}" in api.events[-1]["message"]
    assert {e["involvedObject"]["uid"] for e in api.events} == {JOB_UID}
    assert all(e["source"]["component"] == "higgs-audio-trainer" for e in api.events)


@pytest.mark.slow
def test_with_the_api_unreachable_a_two_process_run_is_unaffected_and_the_failures_counted(base_args, tmp_path) -> None:
    out = Path(base_args["output_dir"])
    env = _events_env(base_args, tmp_path, f"http://127.0.0.1:{_closed_port()}", max_steps="4", save_steps="2")
    done = launch(env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / "lora_adapters" / "adapter_model.safetensors").is_file()
    assert "events: 2 of 2 could not be recorded on PyTorchJob team/demo" in done.stderr  # started, succeeded
    # rank 0's checkpoint Event (one of the two checkpoints: at most one a minute)
    assert "events: 1 of 1 checkpoint Events could not be recorded on PyTorchJob team/demo" in done.stdout + done.stderr
