"""Helpers of the chart tests: the helm binaries, rendering, the PyTorchJob CRD schema, the webhook rules.

Everything here runs real tools (Helm 3 and Helm 4 from scripts/ci/install_k8s_tools.sh) on the real chart;
renderings are cached per process because many tests look at the same output. Nothing writes outside
pytest's tmp_path, so the tests run in parallel.
"""

from __future__ import annotations

import copy
import functools
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.tooling import REPO, missing, require_tool

CHART = REPO / "charts" / "higgs-audio-trainer"
CI_DIR = CHART / "ci"
TOOLS_BIN = REPO / ".cache" / "tools" / "bin"
HELMS = ("helm3", "helm4")
RELEASE = "test-run"
VALUE_FILES: list[Path | None] = [None, *sorted(CI_DIR.glob("*.yaml"))]
# The files that render a PyTorchJob (the v2 tests render every file again with kind=TrainJob).
V1_VALUE_FILES = [
    f for f in VALUE_FILES if f is None or (yaml.safe_load(f.read_text()) or {}).get("kind") != "TrainJob"
]
DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def value_id(values_file: Path | None) -> str:
    return "defaults" if values_file is None else values_file.stem


def helm_bin(name: str) -> str:
    """Path of helm3 or helm4 (skips locally, fails under CI, when the install script has not run)."""
    return require_tool(name, TOOLS_BIN)


def run_helm(helm: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm, *args], capture_output=True, text=True, timeout=120, check=False)


@functools.cache
def _template(helm: str, args: tuple[str, ...]) -> str:
    proc = run_helm(helm, "template", *args)
    if proc.returncode != 0:
        raise AssertionError(f"helm template {' '.join(args)} failed:\n{proc.stderr}")
    return proc.stdout


def template_args(values_file: Path | None = None, *extra: str, release: str = RELEASE) -> tuple[str, ...]:
    args = [release, str(CHART)]
    if values_file is not None:
        args += ["-f", str(values_file)]
    return (*args, *extra)


def render(
    helm: str, values_file: Path | None = None, *extra: str, release: str = RELEASE
) -> list[dict[str, Any]]:
    """The chart's objects (test hook included) for one values file; a fresh copy each call."""
    text = _template(helm, template_args(values_file, *extra, release=release))
    return [d for d in yaml.safe_load_all(text) if d]


def objects_of(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def the(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = objects_of(docs, kind)
    return found


def pod_templates(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {rtype: spec["template"] for rtype, spec in job["spec"]["pytorchReplicaSpecs"].items()}


def trainer_container(template: dict[str, Any]) -> dict[str, Any]:
    """The trainer: container `pytorch` under a PyTorchJob, `node` under a TrainingRuntime."""
    (c,) = [c for c in template["spec"]["containers"] if c["name"] in ("pytorch", "node")]
    return c


def runtime_pod_templates(runtime: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Replicated job name -> pod template of a (Cluster)TrainingRuntime."""
    jobs = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    return {j["name"]: j["template"]["spec"]["template"] for j in jobs}


def job_pod_templates(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The trainer pod templates of a rendering, whichever kind of job it holds."""
    if objects_of(docs, "TrainingRuntime"):
        return runtime_pod_templates(the(docs, "TrainingRuntime"))
    return pod_templates(the(docs, "PyTorchJob"))


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def values_of(values_file: Path | None) -> dict[str, Any]:
    return yaml.safe_load(values_file.read_text()) if values_file else {}


def crds_dir() -> Path:
    """The Kubeflow CRDs: $KUBEFLOW_CRDS_DIR, else ../shared/crds beside the repository."""
    d = Path(os.environ.get("KUBEFLOW_CRDS_DIR") or REPO.parent / "shared" / "crds")
    if not (d / "kubeflow.org_pytorchjobs.yaml").is_file():
        missing(f"the Kubeflow CRDs folder ({d}: set KUBEFLOW_CRDS_DIR)")
    return d


def strict(schema: Any) -> Any:
    """A copy of an OpenAPI v3 CRD schema that rejects unknown fields, as the API server prunes/rejects them.

    Every object with `properties` and without `x-kubernetes-preserve-unknown-fields` gets
    `additionalProperties: false`.
    """
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@functools.lru_cache(maxsize=1)
def pytorchjob_validator():  # type: ignore[no-untyped-def]
    """A jsonschema validator of the PyTorchJob v1 CRD's openAPIV3Schema, made strict."""
    try:
        import jsonschema
    except ImportError:
        missing("the Python package jsonschema")
    crd = yaml.safe_load((crds_dir() / "kubeflow.org_pytorchjobs.yaml").read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema = strict(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
    return jsonschema.Draft7Validator(schema)


def crd_errors(job: dict[str, Any]) -> list[str]:
    return [
        f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in pytorchjob_validator().iter_errors(job)
    ]


def webhook_violations(job: dict[str, Any]) -> list[str]:
    """The training operator's admission webhook rules (v1.9) for a PyTorchJob, as its README lists them."""
    errors = []
    name = job.get("metadata", {}).get("name", "")
    if len(name) > 63 or not DNS1035.match(name):
        errors.append(f"metadata.name {name!r} is not a DNS-1035 label")
    spec = job.get("spec", {})
    replicas = spec.get("pytorchReplicaSpecs") or {}
    for rtype, rspec in replicas.items():
        if rtype not in ("Master", "Worker"):
            errors.append(f"replica type {rtype!r} is not Master or Worker")
        containers = ((rspec or {}).get("template") or {}).get("spec", {}).get("containers") or []
        if not containers:
            errors.append(f"{rtype}: no containers")
        if not any(c.get("name") == "pytorch" for c in containers):
            errors.append(f"{rtype}: no container named pytorch")
        if any(not c.get("image") for c in containers):
            errors.append(f"{rtype}: a container without image")
        if rtype == "Master" and (rspec or {}).get("replicas") != 1:
            errors.append("Master: replicas must be 1")
    elastic = spec.get("elasticPolicy")
    if spec.get("nprocPerNode") is not None and elastic and elastic.get("nProcPerNode") is not None:
        errors.append("spec.nprocPerNode and spec.elasticPolicy.nProcPerNode are both set")
    if elastic is not None and not replicas.get("Worker"):
        errors.append("elasticPolicy needs a Worker replica spec")
    return errors


V2_RESERVED_ENV = ("PET_NNODES", "PET_NPROC_PER_NODE", "PET_NODE_RANK", "PET_MASTER_ADDR", "PET_MASTER_PORT")
V2_CRDS = {
    "TrainJob": "trainer.kubeflow.org_trainjobs.yaml",
    "TrainingRuntime": "trainer.kubeflow.org_trainingruntimes.yaml",
    "ClusterTrainingRuntime": "trainer.kubeflow.org_clustertrainingruntimes.yaml",
}


@functools.cache
def v2_validator(kind: str):  # type: ignore[no-untyped-def]
    """A strict jsonschema validator of a Kubeflow Trainer v2 CRD (v1alpha1)."""
    try:
        import jsonschema
    except ImportError:
        missing("the Python package jsonschema")
    path = crds_dir() / V2_CRDS[kind]
    if not path.is_file():
        missing(f"the Kubeflow Trainer v2 CRD {path}")
    crd = yaml.safe_load(path.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    return jsonschema.Draft7Validator(strict(copy.deepcopy(version["schema"]["openAPIV3Schema"])))


def v2_crd_errors(obj: dict[str, Any]) -> list[str]:
    return [
        f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in v2_validator(obj["kind"]).iter_errors(obj)
    ]


def v2_webhook_violations(obj: dict[str, Any]) -> list[str]:
    """Kubeflow Trainer v2's admission rules that its CRD schemas do not hold (kubeflow/trainer pkg/webhooks/
    and the torch plugin's Validate, as ../shared/crds/README.md writes them down), plus the CEL rules of the
    schema that jsonschema cannot run (numProcPerNode >= 1, one ML policy)."""
    errors = []
    name = obj.get("metadata", {}).get("name", "")
    spec = obj.get("spec", {})
    if obj["kind"] == "TrainJob":
        # The JobSet and its headless Service take the TrainJob's name: a DNS-1035 label, with room for
        # "-node-0-<index>".
        if len(name) > 63 or not DNS1035.match(name):
            errors.append(f"metadata.name {name!r} is not a DNS-1035 label")
        if not (spec.get("runtimeRef") or {}).get("name"):
            errors.append("spec.runtimeRef.name is required")
        trainer = spec.get("trainer") or {}
        reserved = sorted({e.get("name") for e in trainer.get("env") or []} & set(V2_RESERVED_ENV))
        if reserved:
            errors.append(f"spec.trainer.env must not set the torch plugin's reserved variables {reserved}")
        if "numProcPerNode" in trainer and not (isinstance(trainer["numProcPerNode"], int)
                                                and trainer["numProcPerNode"] >= 1):
            errors.append("spec.trainer.numProcPerNode must be an integer >= 1")
        return errors
    policy = spec.get("mlPolicy") or {}
    if sum(k in policy for k in ("torch", "mpi", "jax", "xgboost", "flux")) > 1:
        errors.append("mlPolicy: only one of the policies can be configured")
    for rjob in (spec.get("template") or {}).get("spec", {}).get("replicatedJobs") or []:
        labels = (rjob.get("template") or {}).get("metadata", {}).get("labels") or {}
        step = labels.get("trainer.kubeflow.org/trainjob-ancestor-step")
        containers = rjob["template"]["spec"]["template"]["spec"].get("containers") or []
        names = [c.get("name") for c in containers]
        if step == "trainer":
            if rjob.get("replicas", 1) != 1:
                errors.append(f"replicatedJob {rjob['name']}: the trainer step must have replicas 1")
            if "node" not in names:
                errors.append(f"replicatedJob {rjob['name']}: the trainer step needs a container named node")
        elif step in ("dataset-initializer", "model-initializer") and step not in names:
            errors.append(f"replicatedJob {rjob['name']}: the {step} step needs a container named {step}")
    return errors
