"""The trainer's ServiceAccount, Role and RoleBinding against what the code calls: no verb, resource or API
group the code does not use (`trainer.cluster.events.API_USE`), no wildcard, and the token mounted only when
the Events are on."""

from __future__ import annotations

import pytest

from tests.chart.chartlib import RELEASE, objects_of, pod_templates, render, the, trainer_container
from trainer.cluster.client import KINDS
from trainer.cluster.events import API_USE


def grants(role: dict) -> set[tuple[str, str, str]]:
    return {(group, resource, verb) for rule in role["rules"] for group in rule["apiGroups"]
            for resource in rule["resources"] for verb in rule["verbs"]}


@pytest.mark.parametrize("kind", ["PyTorchJob", "TrainJob"])
def test_the_role_grants_only_what_the_code_uses_for_its_job_kind(helm4: str, kind: str) -> None:
    # `kind` is the value of the TrainJob branch's schema; until it lands there, past this schema.
    docs = render(helm4) if kind == "PyTorchJob" else render(helm4, None, "--skip-schema-validation", "--set",
                                                              f"kind={kind}")
    role = the(docs, "Role")
    job = KINDS[kind]
    used = {u for u in API_USE if u[1] in ("events", job.plural)}
    assert grants(role) == used
    for rule in role["rules"]:
        assert "*" not in rule["apiGroups"] + rule["resources"] + rule["verbs"]
        if rule["resources"] == [job.plural]:
            assert rule["resourceNames"] == [RELEASE]  # its own job only
    binding = the(docs, "RoleBinding")
    account = the(docs, "ServiceAccount")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["metadata"]["name"],
                                    "namespace": "default"}]


def test_every_api_call_of_the_code_is_granted() -> None:
    # API_USE is the list the recorder's calls are checked against: get the job (CustomObjectsApi) and
    # create an Event (CoreV1Api); the job kinds are those the client knows.
    assert {(k.group, k.plural, "get") for k in KINDS.values()} | {("", "events", "create")} == set(API_USE)


def test_the_pods_use_the_account_and_mount_its_token_only_with_events(helm4: str) -> None:
    docs = render(helm4)
    account = the(docs, "ServiceAccount")["metadata"]["name"]
    for t in pod_templates(the(docs, "PyTorchJob")).values():
        assert t["spec"]["serviceAccountName"] == account
        assert t["spec"]["automountServiceAccountToken"] is True
        env = {e["name"]: e for e in trainer_container(t)["env"]}
        assert env["JOB_NAME"]["value"] == RELEASE and env["JOB_KIND"]["value"] == "PyTorchJob"
        assert env["JOB_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
        assert env["EVENTS"]["value"] == "true" and env["RETRY_BUDGET"]["value"] == "3"

    off = render(helm4, None, "--set", "events.enabled=false")
    assert objects_of(off, "Role") == [] and objects_of(off, "RoleBinding") == []
    for t in pod_templates(the(off, "PyTorchJob")).values():
        assert t["spec"]["automountServiceAccountToken"] is False
        assert {e["name"]: e.get("value") for e in trainer_container(t)["env"]}["EVENTS"] == "false"

    existing = render(helm4, None, "--set", "serviceAccount.create=false", "--set", "serviceAccount.name=reader")
    assert objects_of(existing, "ServiceAccount") == []
    assert the(existing, "RoleBinding")["subjects"][0]["name"] == "reader"


def test_active_deadline_has_a_documented_default(helm4: str) -> None:
    assert the(render(helm4), "PyTorchJob")["spec"]["runPolicy"]["activeDeadlineSeconds"] == 604800


@pytest.mark.parametrize(
    ("settings", "account"),
    [
        ((), f"{RELEASE}-higgs-audio-trainer"),
        (("--set", "serviceAccount.name=voice-sa"), "voice-sa"),
        (("--set", "serviceAccount.create=false", "--set", "serviceAccount.name=reader"), "reader"),
        (("--set", "serviceAccount.create=false"), None),
    ],
    ids=["created", "created-named", "existing", "namespace-default"],
)
def test_the_helm_test_pod_runs_under_the_trainers_account_without_its_token(
    helm: str, settings: tuple[str, ...], account: str | None
) -> None:
    """The test pod reads the trainer's inputs with the trainer's image, so it needs what the trainer's
    account carries (image pull secrets, a cloud identity that may read the data); the API token it never uses."""
    docs = render(helm, None, *settings)
    (pod,) = objects_of(docs, "Pod")
    assert pod["spec"].get("serviceAccountName") == account
    for t in pod_templates(the(docs, "PyTorchJob")).values():
        assert t["spec"].get("serviceAccountName") == account
    assert pod["spec"]["automountServiceAccountToken"] is False
