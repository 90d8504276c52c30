"""The node agent's own rules, checked against what Kubernetes documents for them (fast; no cluster)."""

from __future__ import annotations

from tests.cluster.pod_run import expand, quantity


def test_dependent_variables_expand_as_kubernetes_documents() -> None:
    """`$(VAR)` of a variable defined earlier is replaced, `$$(VAR)` is the literal `$(VAR)`, an undefined one
    stays as written (kubernetes.io, "Define Dependent Environment Variables")."""
    env = {"HOST": "demo-master-0", "PORT": "23456"}
    assert expand("$(HOST):$(PORT)", env) == "demo-master-0:23456"
    assert expand("$$(HOST)", env) == "$(HOST)"
    assert expand("$(NOPE)-$(PORT)", env) == "$(NOPE)-23456"


def test_quantities_become_the_bytes_tmpfs_takes() -> None:
    assert quantity("2Gi") == 2 * 1024**3
    assert quantity("500M") == 500 * 10**6
    assert quantity("1024") == 1024
