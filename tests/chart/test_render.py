"""`helm lint` and `helm template` with Helm 3 and Helm 4, for the defaults and every ci/ values file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.chart.chartlib import CHART, VALUE_FILES, helm_bin, render, run_helm, template_args, value_id, values_of

pytestmark = pytest.mark.parametrize("values_file", VALUE_FILES, ids=value_id)


def test_helm_lint_strict_passes(helm: str, values_file: Path | None) -> None:
    args = ["lint", "--strict", str(CHART)] + (["-f", str(values_file)] if values_file else [])
    proc = run_helm(helm, *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout


def test_helm_template_renders_the_job_and_its_objects(helm: str, values_file: Path | None) -> None:
    docs = render(helm, values_file)
    kinds = [d["kind"] for d in docs]
    job = values_of(values_file).get("kind", "PyTorchJob")
    assert kinds.count(job) == 1
    assert kinds.count({"PyTorchJob": "TrainJob", "TrainJob": "PyTorchJob"}[job]) == 0
    assert kinds.count("Pod") == 1  # the helm test hook
    assert all(d["metadata"]["name"] for d in docs)
    assert len({(d["kind"], d["metadata"]["name"]) for d in docs}) == len(docs), "two objects share a name"


def test_helm3_and_helm4_render_the_same_objects(values_file: Path | None) -> None:
    h3, h4 = helm_bin("helm3"), helm_bin("helm4")
    assert render(h3, values_file) == render(h4, values_file)


def test_helm4_install_dry_run_accepts_the_values(values_file: Path | None) -> None:
    """`helm install --dry-run=client`, what users run first; Helm 3's needs a cluster, Helm 4's does not."""
    helm = helm_bin("helm4")
    proc = run_helm(helm, "install", "--dry-run=client", *template_args(values_file))
    assert proc.returncode == 0, proc.stderr
    manifest = proc.stdout.split("MANIFEST:", 1)[1].split("NOTES:", 1)[0]
    job = values_of(values_file).get("kind", "PyTorchJob")
    assert any(d and d["kind"] == job for d in yaml.safe_load_all(manifest))
