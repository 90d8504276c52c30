"""kind: TrainJob (Kubeflow Trainer v2): every values file rendered as a TrainJob passes the v2 CRD schemas
(unknown fields rejected) and the v2 webhook rules, under Helm 3 and Helm 4, and runs the PyTorchJob's pod
template."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from tests.chart.chartlib import (
    CHART,
    CI_DIR,
    V1_VALUE_FILES,
    crds_dir,
    env_of,
    objects_of,
    pod_templates,
    render,
    run_helm,
    runtime_pod_templates,
    the,
    trainer_container,
    v2_crd_errors,
    v2_webhook_violations,
    value_id,
)

TRAINJOB = ("--set", "kind=TrainJob")
# Elastic training has no v2 equivalent: test_elastic_values_are_refused_under_trainjob.
V2_FILES = [f for f in V1_VALUE_FILES if f is None or f.stem != "elastic-values"] + [CI_DIR / "trainjob-values.yaml"]
V2_KINDS = ("TrainJob", "TrainingRuntime", "ClusterTrainingRuntime")


def v2_objects(docs: list[dict]) -> list[dict]:
    return [d for d in docs if d["kind"] in V2_KINDS]


@pytest.mark.parametrize("values_file", V2_FILES, ids=value_id)
def test_trainjob_and_runtime_pass_strict_v2_schemas_and_webhook_rules(helm: str, values_file: Path | None) -> None:
    docs = render(helm, values_file, *TRAINJOB)
    assert [d["kind"] for d in v2_objects(docs)] == ["TrainJob", "TrainingRuntime"]
    assert objects_of(docs, "PyTorchJob") == []
    for obj in v2_objects(docs):
        assert v2_crd_errors(obj) == [], obj["kind"]
        assert v2_webhook_violations(obj) == [], obj["kind"]


@pytest.mark.parametrize("values_file", V2_FILES, ids=value_id)
def test_trainjob_runtime_ref_names_the_rendered_runtime(helm4: str, values_file: Path | None) -> None:
    docs = render(helm4, values_file, *TRAINJOB)
    ref = the(docs, "TrainJob")["spec"]["runtimeRef"]
    runtime = the(docs, "TrainingRuntime")
    assert ref == {"apiGroup": "trainer.kubeflow.org", "kind": "TrainingRuntime", "name": runtime["metadata"]["name"]}


@pytest.mark.parametrize("values_file", V2_FILES, ids=value_id)
def test_runtime_holds_the_pytorchjob_pod_template(helm4: str, values_file: Path | None) -> None:
    """One helper: the v2 pod differs from the v1 Master only where the APIs differ."""
    (v2,) = runtime_pod_templates(the(render(helm4, values_file, *TRAINJOB), "TrainingRuntime")).values()
    v1 = pod_templates(the(render(helm4, values_file, "--set", "kind=PyTorchJob"), "PyTorchJob"))["Master"]
    v1 = copy.deepcopy(v1)
    v2 = copy.deepcopy(v2)
    assert trainer_container(v2)["name"] == "node"
    assert v2["spec"].pop("restartPolicy") == "Never"
    for t, kind in ((v1, "PyTorchJob"), (v2, "TrainJob")):
        for c in t["spec"]["containers"] + t["spec"].get("initContainers", []):
            # the job's kind, which the Events name, is the one variable that must differ
            kinds = [e for e in c.get("env", []) if e["name"] == "JOB_KIND"]
            assert kinds in ([], [{"name": "JOB_KIND", "value": kind}]), c["name"]
            c["env"] = [e for e in c.get("env", []) if e["name"] != "JOB_KIND"]
        c = trainer_container(t)
        c.pop("name")
        c["ports"] = [p for p in c.get("ports", []) if p["name"] != "pytorchjob-port"]
        if not c["ports"]:
            del c["ports"]
    assert v1 == v2


def test_the_upstream_torch_runtime_passes_the_checks() -> None:
    """The checks accept what Kubeflow itself installs (and would refuse its copy with a renamed container)."""
    import yaml

    runtime = yaml.safe_load((crds_dir() / "torch_distributed_runtime.yaml").read_text())
    assert v2_crd_errors(runtime) == [] and v2_webhook_violations(runtime) == []
    runtime_pod_templates(runtime)["node"]["spec"]["containers"][0]["name"] = "trainer"
    assert any("named node" in v for v in v2_webhook_violations(runtime))


def test_nodes_and_processes_map_to_num_nodes_and_num_proc_per_node(helm4: str) -> None:
    docs = render(helm4, CI_DIR / "trainjob-values.yaml")
    trainer = the(docs, "TrainJob")["spec"]["trainer"]
    assert (trainer["numNodes"], trainer["numProcPerNode"]) == (2, 4)
    runtime = the(docs, "TrainingRuntime")["spec"]
    assert runtime["mlPolicy"] == {"numNodes": 2, "torch": {}}
    assert "PET_NNODES" not in env_of(trainer_container(runtime_pod_templates(the(docs, "TrainingRuntime"))["node"]))


def test_a_word_for_processes_per_node_reaches_the_launcher(helm4: str) -> None:
    """numProcPerNode takes numbers only; the launcher reads auto/gpu/cpu from NPROC_PER_NODE."""
    docs = render(helm4, None, *TRAINJOB, "--set", "nprocPerNode=gpu")
    assert "numProcPerNode" not in the(docs, "TrainJob")["spec"]["trainer"]
    env = env_of(trainer_container(runtime_pod_templates(the(docs, "TrainingRuntime"))["node"]))
    assert env["NPROC_PER_NODE"]["value"] == "gpu"


def test_exit_code_restart_policy_fails_on_1_to_127_and_recreates_the_jobset_otherwise(helm4: str) -> None:
    docs = render(helm4, CI_DIR / "trainjob-values.yaml")
    spec = the(docs, "TrainingRuntime")["spec"]["template"]["spec"]
    assert spec["failurePolicy"]["maxRestarts"] == 5
    assert spec["failurePolicy"]["rules"][0]["action"] == "FailJobSet"
    (rjob,) = spec["replicatedJobs"]
    job = rjob["template"]["spec"]
    assert job["backoffLimit"] == 0
    # one container: the launcher's preflight exits 2 from `node` too (no init container of its own)
    fail, ignore = job["podFailurePolicy"]["rules"]
    assert fail["onExitCodes"] == {"containerName": "node", "operator": "In", "values": list(range(1, 128))}
    assert fail["action"] == "FailJob"
    assert ignore == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}
    assert spec["ttlSecondsAfterFinished"] == 86400


def test_existing_runtime_is_referenced_and_the_trainer_travels_in_spec_trainer(helm: str) -> None:
    docs = render(helm, None, *TRAINJOB, "--set", "trainJob.runtimeRef.name=torch-distributed")
    assert objects_of(docs, "TrainingRuntime") == []
    job = the(docs, "TrainJob")
    assert job["spec"]["runtimeRef"] == {
        "apiGroup": "trainer.kubeflow.org", "kind": "ClusterTrainingRuntime", "name": "torch-distributed"
    }
    trainer = job["spec"]["trainer"]
    assert trainer["image"].startswith("higgs-audio-trainer:")
    assert env_of(trainer)["OUTPUT_DIR"]["value"] == "/output/test-run"
    assert trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == 1
    assert v2_crd_errors(job) == [] and v2_webhook_violations(job) == []


def test_the_referenced_upstream_runtime_is_documented() -> None:
    """A runtime the chart does not render must be one the docs tell users where to get."""
    from tests.tooling import REPO

    assert "torch-distributed" in (REPO / "docs" / "kubernetes.md").read_text()


def test_strict_v2_schema_rejects_unknown_fields(helm4: str) -> None:
    docs = render(helm4, None, *TRAINJOB)
    job, runtime = copy.deepcopy(the(docs, "TrainJob")), copy.deepcopy(the(docs, "TrainingRuntime"))
    job["spec"]["trainer"]["numNode"] = 2
    trainer_container(runtime_pod_templates(runtime)["node"])["volumeMount"] = []
    assert any("numNode" in e for e in v2_crd_errors(job))
    assert any("volumeMount" in e for e in v2_crd_errors(runtime))


@pytest.mark.parametrize(
    ("kind", "mutate", "expected"),
    [
        ("TrainJob", lambda o: o["metadata"].update(name="Bad_Name"), "DNS-1035"),
        ("TrainJob", lambda o: o["spec"]["trainer"].update(env=[{"name": "PET_NNODES", "value": "2"}]), "reserved"),
        ("TrainJob", lambda o: o["spec"]["trainer"].update(numProcPerNode=0), "numProcPerNode"),
        ("TrainJob", lambda o: o["spec"]["runtimeRef"].pop("name"), "runtimeRef.name"),
        ("TrainingRuntime", lambda o: o["spec"]["template"]["spec"]["replicatedJobs"][0].update(replicas=2),
         "replicas 1"),
        ("TrainingRuntime", lambda o: trainer_container(runtime_pod_templates(o)["node"]).update(name="pytorch"),
         "named node"),
        ("TrainingRuntime", lambda o: o["spec"]["mlPolicy"].update(mpi={}), "only one"),
    ],
    ids=["name", "reserved-env", "nproc-zero", "runtime-name", "trainer-replicas", "container-name", "two-policies"],
)
def test_v2_webhook_rules_catch_each_violation(helm4: str, kind: str, mutate, expected: str) -> None:  # type: ignore[no-untyped-def]
    obj = copy.deepcopy(the(render(helm4, None, *TRAINJOB), kind))
    mutate(obj)
    assert any(expected in v for v in v2_webhook_violations(obj)), v2_webhook_violations(obj)


@pytest.mark.parametrize(
    ("values", "named"),
    [
        (("--set", "elastic.enabled=true", "--set", "workers=1", "--set", "storage.output.accessModes={ReadWriteMany}"),
         "elastic.enabled"),
        (("--set", "restartPolicy=Always"), "restartPolicy"),
        (("--set", "runPolicy.schedulingPolicy.queue=q"), "runPolicy.schedulingPolicy"),
        (("--set", "extraEnv[0].name=PET_MASTER_PORT", "--set", "extraEnv[0].value=1"), "extraEnv"),
        (("--set", "trainJob.runtimeRef.name=torch-distributed", "--set", "extraContainers[0].name=x",
          "--set", "extraContainers[0].image=x"), "trainJob.runtimeRef.name"),
        (("--set", "trainJob.runtimeRef.kind=Runtime"), "trainJob"),
        (("--set", "kind=MPIJob"), "kind"),
        (("--set", "workers=1"), "storage.output.accessModes"),
    ],
    ids=["elastic", "restart-always", "scheduling-policy", "reserved-env", "pod-values-with-existing-runtime",
         "runtime-kind", "unknown-kind", "multi-node-read-write-once"],
)
def test_values_a_trainjob_cannot_honour_are_refused_by_name(helm: str, values: tuple[str, ...], named: str) -> None:
    proc = run_helm(helm, "template", "run", str(CHART), *TRAINJOB, *values)
    assert proc.returncode != 0, proc.stdout[-500:]
    assert named in proc.stderr or "/" + named.replace(".", "/") in proc.stderr, proc.stderr


def test_elastic_values_are_refused_under_trainjob(helm: str) -> None:
    proc = run_helm(helm, "template", "run", str(CHART), "-f", str(CI_DIR / "elastic-values.yaml"), *TRAINJOB)
    assert proc.returncode != 0 and "elastic.enabled" in proc.stderr, proc.stderr


def test_plain_v2_manifests_pass_strict_v2_checks_and_name_their_runtime() -> None:
    import yaml

    from tests.tooling import REPO

    docs = [yaml.safe_load(f.read_text()) for f in sorted((REPO / "k8s" / "trainer-v2").glob("*.yaml"))]
    assert objects_of(docs, "PyTorchJob") == []
    for obj in v2_objects(docs):
        assert v2_crd_errors(obj) == [] and v2_webhook_violations(obj) == [], obj["kind"]
    assert the(docs, "TrainJob")["spec"]["runtimeRef"]["name"] == the(docs, "TrainingRuntime")["metadata"]["name"]


@pytest.mark.parametrize("values_file", V2_FILES, ids=value_id)
def test_helm_lint_strict_passes_with_trainjob(helm: str, values_file: Path | None) -> None:
    args = ["lint", "--strict", str(CHART), *TRAINJOB] + (["-f", str(values_file)] if values_file else [])
    proc = run_helm(helm, *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout


def test_notes_say_how_to_watch_a_trainjob(helm4: str) -> None:
    proc = run_helm(helm4, "install", "--dry-run=client", "voice-a", str(CHART), *TRAINJOB)
    notes = proc.stdout.split("NOTES:", 1)[1]
    assert "TrainJob voice-a" in notes and "on TrainingRuntime voice-a" in notes
    assert "get trainjob voice-a" in notes and "pytorchjob" not in notes.lower()
