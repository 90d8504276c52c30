"""The chart, installed with `helm install` on the real control plane, run by the real Kubeflow training
operator; its pods run as local processes by the test node agent (tests/cluster/node_agent.py: the stand-in
for a kubelet). Each test asserts what the operator and the API server recorded and what is on the claim."""

from __future__ import annotations

import re
import subprocess
from typing import Any

import pytest

from tests.cluster.cluster import Release
from trainer.errors import ConfigError
from trainer.launch.topology import topology_from_env

pytestmark = pytest.mark.slow


def trainer_reasons(release: Release) -> list[str]:
    return [e.reason for e in release.events() if e.source and e.source.component == "higgs-audio-trainer"]


def test_two_pods_train_a_lora_adapter_with_ddp_and_the_job_succeeds(release: Release) -> None:
    release.install()
    done = release.wait_condition("Succeeded")
    assert "successfully completed" in done["message"]
    pods = {p.metadata.name: p for p in release.pods()}
    assert sorted(pods) == ["demo-master-0", "demo-worker-0"]
    for pod in pods.values():
        assert pod.status.phase == "Succeeded"
        (state,) = pod.status.container_statuses
        assert state.state.terminated.exit_code == 0
        inits = {s.name: s.state.terminated.exit_code for s in pod.status.init_container_statuses or []}
        # the operator's own init container of a Worker waits until the Master's name resolves; the preflight
        # ran in the trainer container, before torchrun
        assert inits == ({"init-pytorch": 0} if "worker" in pod.metadata.name else {})
        log = release.cluster.agent.run_of(release.ns, pod.metadata.name).current.log.read_text()
        assert "higgs-audio-trainer launch: preflight: output volume, /dev/shm, GPUs, inputs and gateway ok" in log
        # WORLD_SIZE as the real operator wrote it: 2 nodes x nprocPerNode "1"; the launcher accepted it (the
        # job trained) and refuses the same env with the node count doubled
        env = {e.name: e.value for e in pod.spec.containers[0].env if e.value is not None}
        assert (env["WORLD_SIZE"], env["PET_NNODES"], env["PET_NPROC_PER_NODE"]) == ("2", "2", "1")
        assert topology_from_env(env, lambda: 0).nnodes == "2"
        with pytest.raises(ConfigError, match="WORLD_SIZE=4 and PET_NNODES=2 x processes per node 1"):
            topology_from_env({**env, "WORLD_SIZE": "4"}, lambda: 0)
    out = release.output()
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-10", "checkpoint-20"]
    for ckpt in out.glob("checkpoint-*"):
        assert (ckpt / "checkpoint_complete.json").is_file()
        # one RNG state per rank: the two pods trained as one DDP group of WORLD_SIZE 2
        assert sorted(p.name for p in ckpt.glob("rng_state_*.pth")) == ["rng_state_0.pth", "rng_state_1.pth"]
    assert (out / "lora_adapters" / "adapter_model.safetensors").is_file()
    # the trainer's own Events, read back from the API server
    assert trainer_reasons(release)[0] == "TrainingStarted" and "TrainingSucceeded" in trainer_reasons(release)
    status = release.status("--wait", "--interval", "1")
    assert (status.returncode, status.stdout) == (0, ""), status.stderr
    shown = release.status()
    assert shown.returncode == 0, shown.stderr
    assert f"PyTorchJob {release.ns}/demo: succeeded" in shown.stdout
    assert "progress: step 20" in shown.stdout
    assert "next: done: succeeded; the result is in /output/demo/lora_adapters" in shown.stdout
    test = release.helm("test", "demo", timeout=300)
    assert "Phase:          Succeeded" in test.stdout or "Succeeded" in test.stdout, test.stdout


def pod_line(text: str, pod: str) -> str:
    # `  ROLE-INDEX POD: ...` (an Event line below also names the pod, as `  REASON: POD: ...`)
    (line,) = [x for x in text.splitlines() if re.match(rf"  \S+-\d+ {re.escape(pod)}: ", x)]
    return line


def test_a_configuration_error_fails_the_job_with_exit_code_2_and_status_says_why_in_one_line(
        release: Release) -> None:
    release.install({"args": ["train", "--lora_rnak", "8"]})
    failed = release.wait_condition("Failed", timeout=300)
    # Both replicas meet the same error; whichever ends first fails the job (and the operator then deletes the
    # other's running pod), so the failing replica is the one the condition names.
    roles = [r for r in ("Master", "Worker")
             if failed["message"] == f'job "demo" is failing because "{r}" replica(s) failed.']
    assert roles, failed["message"]
    role = roles[0]
    pod_name = f"demo-{role.lower()}-0"
    failing = next(p for p in release.pods() if p.metadata.name == pod_name)
    (state,) = failing.status.container_statuses
    assert state.state.terminated.exit_code == 2
    assert "--lora_rnak" in state.state.terminated.message  # the launcher's termination message
    assert not release.events(reason="ExitedWithCode") or all(
        "code 2" in e.message for e in release.events(reason="ExitedWithCode"))
    shown = release.status()
    assert shown.returncode == 0, shown.stderr
    line = pod_line(shown.stdout, pod_name)
    assert "Failed, 0 restarts; last exit 2 (configuration error" in line and "--lora_rnak" in line
    assert "is running." not in shown.stdout  # the operator's stale Running message is left out
    assert shown.stdout.rstrip().splitlines()[-1].startswith("next: done: failed; the operator does not restart it")
    waited = release.status("--wait", "--interval", "1")
    assert (waited.returncode, waited.stdout) == (1, "")
    assert not release.output().joinpath("checkpoint-10").exists()


def test_events_go_through_the_charts_role_and_a_role_without_create_counts_them_refused(release: Release) -> None:
    """The same tiny run twice under real RBAC: with the chart's Role the trainer's Events are on the job,
    recorded from the pods' own hosts; with `create` on events taken out of that Role (the job suspended
    until then), none is, the run still succeeds, and the launcher counts the refused ones."""
    release.install({"runPolicy": {"suspend": True}})
    from kubernetes import client

    rbac = client.RbacAuthorizationV1Api(release.cluster.agent.api)
    role_name = "demo-higgs-audio-trainer-events"
    role = rbac.read_namespaced_role(role_name, release.ns)
    assert ["create"] in [r.verbs for r in role.rules if r.resources == ["events"]]
    role.rules = [r for r in role.rules if r.resources != ["events"]]
    rbac.replace_namespaced_role(role_name, release.ns, role)
    release.cluster.custom.patch_namespaced_custom_object("kubeflow.org", "v1", release.ns, "pytorchjobs", "demo",
                                                          {"spec": {"runPolicy": {"suspend": False}}})
    release.wait_condition("Succeeded")
    assert trainer_reasons(release) == []
    log = (release.cluster.agent.run_of(release.ns, "demo-master-0").current.log).read_text()
    (counted,) = re.findall(r"higgs-audio-trainer launch: events: (\d+) of (\d+) could not be recorded", log)
    assert counted[0] == counted[1] and int(counted[0]) >= 2  # started and succeeded, each refused
    assert (release.output() / "lora_adapters" / "adapter_model.safetensors").is_file()

    # the same chart's Role, whole: the Events are there, sent from the master pod (its hostname)
    second = Release(release.cluster, release.ns, "again", release.tmp, release.environ)
    second.install({"jobName": "again"})
    second.wait_condition("Succeeded")
    mine = [e for e in second.events() if e.source and e.source.component == "higgs-audio-trainer"
            and e.involved_object.name == "again"]
    assert mine[0].reason == "TrainingStarted" and mine[-1].reason == "TrainingSucceeded"
    assert {e.source.host for e in mine} == {"again-master-0"}
    assert all(e.involved_object.uid == second.job()["metadata"]["uid"] for e in mine)


def running_run(release: Release, pod: str, after: set[str]) -> Any:
    """The agent's run of `pod` whose trainer container is running, of a pod uid not in `after`."""
    def found() -> Any:
        run = release.cluster.agent.run_of(release.ns, pod)
        ok = run is not None and run.uid not in after and run.current is not None and run.current.name == "pytorch"
        return run if ok and run.current.pid1() is not None else None
    return release.wait_for(found, f"{pod}'s trainer container to run", timeout=300, interval=0.2)


def test_a_sigkilled_worker_is_recreated_and_the_job_resumes_from_the_last_complete_checkpoint(
        release: Release) -> None:
    from trainer.train.checkpoint import MARKER

    # The operator recreates the worker while the master still runs the old group: the new worker's ranks can
    # join that group's store and wait for peers that are gone. ddp_timeout bounds that wait (160, retried).
    release.install({"trainer": {"max_steps": 40, "save_steps": 10, "logging_steps": 1, "ddp_timeout": 60}})
    out = release.output()
    worker = running_run(release, "demo-worker-0", set())
    release.wait_for(lambda: (out / "checkpoint-10" / MARKER).is_file(), "checkpoint-10", interval=0.1)
    worker.kill()  # as the out-of-memory killer would: the container's PID 1 and every process in it
    assert worker.done.wait(60) and worker.exit_code == 137
    done = release.wait_condition("Succeeded", timeout=900)
    assert done["status"] == "True"
    exited = [e.message for e in release.events(reason="ExitedWithCode")]
    assert any("demo-worker-0 exited with code 137" in m for m in exited), exited
    assert release.events(reason="PyTorchJobRestarting")  # the operator's own record of the retry
    resumed = [e for e in release.events(reason="TrainingResumed")]
    assert resumed and "checkpoint-" in resumed[-1].message
    assert (out / "checkpoint-40" / MARKER).is_file()
    assert (out / "lora_adapters" / "adapter_model.safetensors").is_file()
    # What the operator recorded of the worker's failed endings, oldest first (a folded Event counts each; it
    # records the final exit 0 too): the kill, and under load sometimes a 160 after it (the recreated worker
    # met the old group; see above).
    codes = [int(m["code"]) for e in release.events(reason="ExitedWithCode")
             for m in [re.search(r"demo-worker-0 exited with code (?P<code>\d+)", e.message)] if m
             for _ in range(e.count or 1) if m["code"] != "0"]
    assert codes[0] == 137 and set(codes) <= {137, 160}, codes
    shown = release.status()
    line = pod_line(shown.stdout, "demo-worker-0")
    assert f"Succeeded, {len(codes)} restarts; recreated by the operator after exit {codes[-1]} (" in line, shown.stdout
    assert "last exit 0 (success)" in line


def test_crashes_before_any_checkpoint_spend_the_retry_budget_and_fail_the_job_with_exit_code_6(
        release: Release) -> None:
    release.install({"workers": 0, "trainer": {"retry_budget": 2, "max_steps": 1000, "save_steps": 1000}})
    from trainer.launch.ledger import LEDGER_NAME, read

    ledger = release.output() / LEDGER_NAME
    seen: set[str] = set()
    for n in range(1, 3):  # two attempts SIGKILLed before their first checkpoint, once the launcher logged them
        run = running_run(release, "demo-master-0", seen)
        seen.add(run.uid)
        release.wait_for(lambda n=n: ledger.is_file() and len(read(ledger)) == n, f"attempt {n} in the ledger",
                         interval=0.1)
        run.kill()
        assert run.done.wait(60) and run.exit_code == 137
    failed = release.wait_condition("Failed", timeout=600)
    assert failed["message"] == 'job "demo" is failing because "Master" replica(s) failed.'
    (master,) = release.pods()
    assert master.metadata.uid not in seen  # the third pod
    (state,) = master.status.container_statuses
    assert state.state.terminated.exit_code == 6
    assert state.state.terminated.message.startswith("retry budget spent: the last 2 attempts (of --retry_budget 2)")
    assert [a.code for a in read(ledger)] == [None, None, 6]  # the kills wrote no end
    shown = release.status()
    line = pod_line(shown.stdout, "demo-master-0")
    assert "Failed, 2 restarts; recreated by the operator after exit 137" in line
    assert "last exit 6 (retry budget spent" in line


def test_a_failing_preflight_fails_the_job_with_exit_code_2_and_status_names_the_check(release: Release) -> None:
    """The output claim cannot be written (an immutable directory: even root cannot create files in it). The
    launcher's preflight exits 2 from container `pytorch` before torchrun starts; under `restartPolicy:
    ExitCode` the operator fails the job at once (an init container's failure it never reads: it recreated
    that pod in a loop). The termination message, a PreflightFailed Event and `status` name the check."""
    claim = release.cluster.agent.claim_dir(release.ns, "demo-higgs-audio-trainer-output")
    subprocess.run(["chattr", "+i", str(claim)], check=True)
    try:
        release.install({"workers": 0})
        failed = release.wait_condition("Failed", timeout=300)
        assert failed["message"] == 'job "demo" is failing because "Master" replica(s) failed.'
        (master,) = release.pods()
        assert not master.spec.init_containers
        (state,) = master.status.container_statuses
        assert state.name == "pytorch" and state.state.terminated.exit_code == 2
        why = "preflight failed: output_dir /output/demo: not writable"
        assert state.state.terminated.message.startswith(why), state.state.terminated.message
        # one pod, never recreated
        assert sum(e.count or 1 for e in release.events(reason="SuccessfulCreatePod")) == 1
        assert all("code 2" in e.message for e in release.events(reason="ExitedWithCode"))
        (event,) = release.events(reason="PreflightFailed")
        assert (event.type, event.source.host, event.involved_object.uid) == (
            "Warning", "demo-master-0", release.job()["metadata"]["uid"])
        assert event.message.startswith(f"demo-master-0: exit code 2: {why}"), event.message
        log = release.cluster.agent.run_of(release.ns, "demo-master-0").current.log.read_text()
        assert "trainer.launch.torchrun" not in log  # torchrun never started
        shown = release.status()
        assert shown.returncode == 0, shown.stderr
        line = pod_line(shown.stdout, "demo-master-0")
        assert "Failed, 0 restarts; last exit 2 (configuration error" in line and why in line, shown.stdout
        assert f"  PreflightFailed: demo-master-0: exit code 2: {why}" in shown.stdout
        assert "is running." not in shown.stdout
        assert shown.stdout.rstrip().splitlines()[-1].startswith("next: done: failed; the operator does not restart it")
        waited = release.status("--wait", "--interval", "1")
        assert (waited.returncode, waited.stdout) == (1, "")
    finally:
        subprocess.run(["chattr", "-i", str(claim)], check=True)


def test_an_elastic_job_trains_through_the_rendezvous_the_operator_sets(release: Release) -> None:
    release.install({"workers": 2, "elastic": {"enabled": True, "minReplicas": 1, "maxReplicas": 2},
                     "trainer": {"max_steps": 10, "save_steps": 10}})
    release.wait_condition("Succeeded")
    pods = {p.metadata.name: p for p in release.pods()}
    assert sorted(pods) == ["demo-worker-0", "demo-worker-1"]  # Workers only, no Master
    env = {e.name: e.value for e in pods["demo-worker-1"].spec.containers[0].env}
    assert env["PET_RDZV_ENDPOINT"] == "demo-worker-0:23456" and env["PET_NNODES"] == "1:2"
    assert "MASTER_ADDR" not in env
    out = release.output()
    # min 1: the rendezvous may close with the first Worker alone (one RNG state, rng_state.pth) or both
    ranks = sorted(p.name for p in (out / "checkpoint-10").glob("rng_state*.pth"))
    assert ranks in (["rng_state.pth"], ["rng_state_0.pth", "rng_state_1.pth"]), ranks
    assert (out / "checkpoint-10" / "checkpoint_complete.json").is_file()
    assert (out / "lora_adapters" / "adapter_model.safetensors").is_file()
