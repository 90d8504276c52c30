"""Every rendered PyTorchJob against the real CRD schema (unknown fields rejected) and the webhook's rules."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from tests.chart.chartlib import (
    CI_DIR,
    V1_VALUE_FILES,
    crd_errors,
    pod_templates,
    render,
    the,
    trainer_container,
    value_id,
    values_of,
    webhook_violations,
)
from tests.tooling import REPO

K8S_JOB = REPO / "k8s" / "pytorchjob.yaml"


@pytest.mark.parametrize("values_file", V1_VALUE_FILES, ids=value_id)
def test_pytorchjob_validates_against_crd_schema_with_unknown_fields_rejected(
    helm4: str, values_file: Path | None
) -> None:
    job = the(render(helm4, values_file), "PyTorchJob")
    assert crd_errors(job) == []


def test_plain_manifest_pytorchjob_validates_against_crd_schema() -> None:
    job = yaml.safe_load(K8S_JOB.read_text())
    assert crd_errors(job) == []
    assert webhook_violations(job) == []


def test_strict_crd_schema_rejects_an_unknown_field(helm4: str) -> None:
    """The strict schema is not vacuous: a misspelt field deep in the pod template fails."""
    job = the(render(helm4), "PyTorchJob")
    bad = copy.deepcopy(job)
    trainer_container(bad["spec"]["pytorchReplicaSpecs"]["Master"]["template"])["volumeMount"] = []
    bad["spec"]["runPolicy"]["cleanupPolicy"] = "All"
    errors = crd_errors(bad)
    assert any("volumeMount" in e for e in errors), errors
    assert any("cleanupPolicy" in e for e in errors), errors


@pytest.mark.parametrize("values_file", V1_VALUE_FILES, ids=value_id)
def test_pytorchjob_passes_operator_webhook_rules(helm4: str, values_file: Path | None) -> None:
    job = the(render(helm4, values_file), "PyTorchJob")
    assert webhook_violations(job) == []


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda j: j["metadata"].update(name="Bad_Name"), "DNS-1035"),
        (lambda j: j["metadata"].update(name="a" * 64), "DNS-1035"),
        (
            lambda j: j["spec"]["pytorchReplicaSpecs"].update(
                Chief=j["spec"]["pytorchReplicaSpecs"]["Master"]
            ),
            "Chief",
        ),
        (
            lambda j: trainer_container(j["spec"]["pytorchReplicaSpecs"]["Master"]["template"]).update(
                name="x"
            ),
            "pytorch",
        ),
        (lambda j: j["spec"]["pytorchReplicaSpecs"]["Master"].update(replicas=2), "replicas must be 1"),
        (lambda j: j["spec"].update(elasticPolicy={"nProcPerNode": 1}), "both set"),
        (lambda j: j["spec"].update(elasticPolicy={"rdzvBackend": "c10d"}), "needs a Worker"),
    ],
    ids=[
        "name-charset",
        "name-length",
        "replica-type",
        "container-name",
        "master-replicas",
        "nproc-twice",
        "elastic-without-worker",
    ],
)
def test_webhook_rules_catch_each_violation(helm4: str, mutate, expected: str) -> None:  # type: ignore[no-untyped-def]
    job = the(render(helm4), "PyTorchJob")
    mutate(job)
    assert any(expected in v for v in webhook_violations(job)), webhook_violations(job)


@pytest.mark.parametrize("values_file", V1_VALUE_FILES, ids=value_id)
def test_pod_and_service_names_of_every_replica_fit_a_dns_label(helm4: str, values_file: Path | None) -> None:
    """The operator names pods and services `<job>-<type>-<index>`; a service name fits in 63 characters."""
    job = the(render(helm4, values_file), "PyTorchJob")
    for rtype, spec in job["spec"]["pytorchReplicaSpecs"].items():
        last = f"{job['metadata']['name']}-{rtype.lower()}-{spec['replicas'] - 1}"
        assert len(last) <= 63, last


def test_longest_job_name_with_most_workers_still_fits(helm4: str) -> None:
    name = "j" * 50
    job = the(
        render(
            helm4,
            None,
            "--set",
            f"jobName={name}",
            "--set",
            "workers=999",
            "--set",
            "storage.output.accessModes={ReadWriteMany}",
        ),
        "PyTorchJob",
    )
    assert len(f"{name}-worker-998") <= 63
    assert webhook_violations(job) == []
    assert crd_errors(job) == []


def test_master_and_worker_share_one_pod_template(helm4: str) -> None:
    """Only the `metrics` port differs: it is declared where rank 0 runs, the only pod serving /metrics."""
    scraped = ("metrics.pushgateway.create=false", "metrics.pushgateway.serviceMonitor.enabled=false")
    scraped += ("metrics.podMonitor.enabled=true",)
    docs = render(helm4, CI_DIR / "multi-node-gpu-values.yaml", *(a for s in scraped for a in ("--set", s)))
    templates = pod_templates(the(docs, "PyTorchJob"))
    ports = {r: [p["name"] for p in trainer_container(t)["ports"]] for r, t in templates.items()}
    assert ports == {"Master": ["pytorchjob-port", "metrics"], "Worker": ["pytorchjob-port"]}
    for t in templates.values():
        trainer_container(t)["ports"] = [p for p in trainer_container(t)["ports"] if p["name"] != "metrics"]
    assert templates["Master"] == templates["Worker"]


@pytest.mark.parametrize("values_file", V1_VALUE_FILES, ids=value_id)
def test_restart_policy_defaults_to_exit_code_on_every_replica(helm4: str, values_file: Path | None) -> None:
    job = the(render(helm4, values_file), "PyTorchJob")
    want = values_of(values_file).get("restartPolicy", "ExitCode")
    assert {s["restartPolicy"] for s in job["spec"]["pytorchReplicaSpecs"].values()} == {want}
