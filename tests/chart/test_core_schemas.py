"""Every core Kubernetes object the chart renders, and every replica's pod template, against the
Kubernetes OpenAPI schemas (kubernetes-validate, strict: unknown fields rejected), oldest and newest
version the chart supports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.chartlib import VALUE_FILES, job_pod_templates, render, the, value_id
from tests.tooling import REPO, missing

# Chart.yaml's kubeVersion floor, and the newest schemas kubernetes-validate carries.
K8S_VERSIONS = ("1.27.0", "1.37.0")
# Served by the Prometheus Operator's CRDs, not by Kubernetes: checked in test_templates.py.
OPERATOR_KINDS = {"PyTorchJob", "TrainJob", "TrainingRuntime", "PodMonitor", "ServiceMonitor", "PrometheusRule"}


def validate(obj: dict[str, Any], version: str) -> None:
    try:
        import kubernetes_validate
    except ImportError:
        missing("the Python package kubernetes-validate")
    kubernetes_validate.validate(obj, version, strict=True)


def core_objects(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Core objects, plus each replica's pod template wrapped as a PodTemplate object."""
    objs = [d for d in docs if d["kind"] not in OPERATOR_KINDS]
    for rtype, template in job_pod_templates(docs).items():
        objs.append(
            {
                "apiVersion": "v1",
                "kind": "PodTemplate",
                "metadata": {"name": rtype.lower()},
                "template": template,
            }
        )
    return objs


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("values_file", VALUE_FILES, ids=value_id)
def test_core_objects_and_pod_templates_validate_strictly(
    helm4: str, values_file: Path | None, version: str
) -> None:
    objs = core_objects(render(helm4, values_file))
    assert any(o["kind"] == "PodTemplate" for o in objs)
    for obj in objs:
        validate(obj, version)


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_plain_manifests_validate_strictly(version: str) -> None:
    for folder in ("k8s", "k8s/trainer-v2"):
        files = sorted((REPO / folder).glob("*.yaml"))
        assert files
        for f in files:
            obj = yaml.safe_load(f.read_text())
            if obj["kind"] in ("PyTorchJob", "TrainingRuntime"):
                obj = core_objects([obj])[-1]
            elif obj["kind"] in OPERATOR_KINDS:
                continue
            validate(obj, version)


def test_strict_validation_rejects_an_unknown_field(helm4: str) -> None:
    """The check is not vacuous: an unknown field in a PVC fails."""
    import jsonschema

    pvc = the(render(helm4), "PersistentVolumeClaim")
    pvc["spec"]["storageClass"] = "fast"
    with pytest.raises(jsonschema.ValidationError):
        validate(pvc, K8S_VERSIONS[-1])
