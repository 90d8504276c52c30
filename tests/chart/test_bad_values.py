"""Bad values fail `helm template` and `helm install --dry-run` with a message that names the value."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.chart.chartlib import CHART, helm_bin, run_helm

# id -> (values, release name, the value's name as the message must give it). Helm 3 names a value as
# `a.b`, Helm 4 as `/a/b`; template checks use the dotted form.
CASES = {
    "string-for-number": ({"trainer": {"lora_rank": "8"}}, "run", "trainer.lora_rank"),
    "pushgateway-password-in-plain": ({"trainer": {"pushgateway_password": "s3cret"}}, "run",
                                      "trainer.pushgateway_password"),
    "string-for-count": ({"workers": "two"}, "run", "workers"),
    "string-for-bool": ({"trainer": {"use_lora": "yes"}}, "run", "trainer.use_lora"),
    "number-out-of-range": ({"trainer": {"lora_dropout": 2}}, "run", "trainer.lora_dropout"),
    "unknown-choice": ({"trainer": {"lr_scheduler_type": "step"}}, "run", "trainer.lr_scheduler_type"),
    "unknown-key": ({"wokers": 2}, "run", "wokers"),
    "unknown-nested-key": ({"storage": {"output": {"sise": "1Gi"}}}, "run", "sise"),
    "unknown-trainer-option": ({"trainer": {"use_lroa": True}}, "run", "use_lroa"),
    "required-option-unset": ({"trainer": {"model_path": None}}, "run", "model_path"),
    "job-name-too-long": ({"jobName": "a" * 51}, "run", "jobName"),
    "job-name-not-dns-1035": ({"jobName": "9-lives"}, "run", "jobName"),
    "job-name-uppercase": ({"jobName": "MyRun"}, "run", "jobName"),
    "release-name-not-dns-1035": ({}, "1st-run", "jobName"),
    "elastic-with-zero-workers": ({"elastic": {"enabled": True}}, "run", "workers"),
    "elastic-range-excludes-workers": (
        {
            "workers": 2,
            "elastic": {"enabled": True, "minReplicas": 3},
            "storage": {"output": {"accessModes": ["ReadWriteMany"]}},
        },
        "run",
        "elastic.minReplicas",
    ),
    "multi-node-read-write-once": ({"workers": 1}, "run", "storage.output.accessModes"),
    "request-above-default-limit": (
        {"resources": {"requests": {"memory": "512Gi"}}},
        "run",
        "resources.requests.memory",
    ),
    "bad-quantity": ({"storage": {"output": {"size": "lots"}}}, "run", "storage.output.size"),
    "bad-restart-policy": ({"restartPolicy": "Sometimes"}, "run", "restartPolicy"),
    "trainer-option-in-extra-env": ({"extraEnv": [{"name": "USE_LORA", "value": "true"}]}, "run", "extraEnv"),
    "output-dir-off-the-volume": ({"trainer": {"output_dir": "/tmp/out"}}, "run", "trainer.output_dir"),
    "signal-save-timeout-past-the-grace-period": (
        {"trainer": {"signal_save_timeout_seconds": 120}}, "run", "trainer.signal_save_timeout_seconds"
    ),
    "option-set-twice": (
        {"trainer": {"seed": 1}, "trainerFromSecret": {"seed": {"name": "s", "key": "k"}}},
        "run",
        "trainer.seed",
    ),
    "secret-for-unknown-option": (
        {"trainerFromSecret": {"passwd": {"name": "s", "key": "k"}}},
        "run",
        "passwd",
    ),
    "suspend-under-kueue": (
        {"kueue": {"queueName": "q"}, "runPolicy": {"suspend": True}},
        "run",
        "runPolicy.suspend",
    ),
    "metrics-port-twice": (
        {"trainer": {"metrics_port": 9000},
         "metrics": {"podMonitor": {"enabled": True}, "pushgateway": {"create": False}}},
        "run",
        "trainer.metrics_port",
    ),
    "grace-period-too-short-to-save": ({"terminationGracePeriodSeconds": 29}, "run", "terminationGracePeriodSeconds"),
    # Each series would reach Prometheus twice: scraped from rank 0 and from the gateway it pushes to.
    "pod-monitor-and-chart-pushgateway": (
        {"metrics": {"podMonitor": {"enabled": True}, "pushgateway": {"create": True}}},
        "run",
        "metrics.podMonitor.enabled",
    ),
    "pod-monitor-and-own-pushgateway": (
        {"metrics": {"podMonitor": {"enabled": True}, "pushgateway": {"create": False}}, "trainer": {"pushgateway_url": "http://gw:9091"}},
        "run",
        "metrics.podMonitor.enabled",
    ),
    "pod-monitor-and-pushgateway-url-from-secret": (
        {
            "metrics": {"podMonitor": {"enabled": True}, "pushgateway": {"create": False}},
            "trainerFromSecret": {"pushgateway_url": {"name": "gw", "key": "url"}},
        },
        "run",
        "metrics.podMonitor.enabled",
    ),
    "service-monitor-without-the-pushgateway": (
        {"metrics": {"pushgateway": {"create": False, "serviceMonitor": {"enabled": True}}}},
        "run",
        "metrics.pushgateway.serviceMonitor.enabled",
    ),
    # Rank 0 may run on any Worker: every other Worker would be a target that never answers.
    "pod-monitor-with-elastic-training": (
        {"metrics": {"podMonitor": {"enabled": True}, "pushgateway": {"create": False}},
         "elastic": {"enabled": True}, "workers": 2, "storage": {"output": {"accessModes": ["ReadWriteMany"]}}},
        "run",
        "elastic.enabled",
    ),
    "release-label-not-a-label-value": ({"monitoring": {"releaseLabel": "kube prometheus"}}, "run", "releaseLabel"),
    "service-monitor-enabled-not-bool-or-auto": (
        {"metrics": {"pushgateway": {"serviceMonitor": {"enabled": "yes"}}}},
        "run",
        "enabled",
    ),
    "full-name-override-upper-case": ({"fullnameOverride": "Voice-A"}, "run", "fullnameOverride"),
    "name-override-with-a-dot": ({"nameOverride": "tts.trainer"}, "run", "nameOverride"),
    "unknown-job-kind": ({"kind": "MPIJob"}, "run", "kind"),
    "host-network-without-its-dns-policy": ({"hostNetwork": True}, "run", "hostNetwork"),
    "bad-dns-policy": ({"dnsPolicy": "ClusterFirstWithHost"}, "run", "dnsPolicy"),
    "container-without-image": ({"initContainers": [{"name": "x"}]}, "run", "initContainers"),
    "bad-preflight-size": ({"preflight": {"minShm": "lots"}}, "run", "preflight.minShm"),
    "trainjob-elastic": (
        {"kind": "TrainJob", "workers": 1, "elastic": {"enabled": True},
         "storage": {"output": {"accessModes": ["ReadWriteMany"]}}},
        "run",
        "elastic.enabled",
    ),
    "pushgateway-service-name-not-dns-1035": (
        {"jobName": "run", "metrics": {"pushgateway": {"create": True}}},
        "v1.2",
        "fullnameOverride",
    ),
}


def names_value(message: str, path: str) -> bool:
    return path in message or "/" + path.replace(".", "/") in message


def write_values(tmp_path: Path, values: dict) -> Path:
    f = tmp_path / "bad-values.yaml"
    f.write_text(yaml.safe_dump(values))
    return f


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_helm_template_rejects_bad_value_naming_it(helm: str, tmp_path: Path, case: str) -> None:
    values, release, path = CASES[case]
    proc = run_helm(helm, "template", release, str(CHART), "-f", str(write_values(tmp_path, values)))
    assert proc.returncode != 0, f"accepted: {values}"
    assert names_value(proc.stderr, path), proc.stderr


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_helm_install_dry_run_rejects_bad_value_naming_it(tmp_path: Path, case: str) -> None:
    """Helm 4's client-side dry run; Helm 3's `install --dry-run` needs a cluster to talk to."""
    values, release, path = CASES[case]
    helm = helm_bin("helm4")
    proc = run_helm(
        helm, "install", "--dry-run=client", release, str(CHART), "-f", str(write_values(tmp_path, values))
    )
    assert proc.returncode != 0, f"accepted: {values}"
    assert names_value(proc.stderr, path), proc.stderr


def test_set_string_for_number_names_the_value(helm: str) -> None:
    proc = run_helm(helm, "template", "run", str(CHART), "--set-string", "trainer.max_steps=100")
    assert proc.returncode != 0
    assert names_value(proc.stderr, "trainer.max_steps"), proc.stderr


@pytest.mark.parametrize("grace", [0, 20, 29])
def test_short_grace_period_is_named_when_the_save_timeout_is_derived(helm: str, grace: int) -> None:
    """Past the schema (--skip-schema-validation), the derived timeout's check names the value to change."""
    proc = run_helm(
        helm,
        "template",
        "run",
        str(CHART),
        "--skip-schema-validation",
        "--set",
        f"terminationGracePeriodSeconds={grace}",
    )
    assert proc.returncode != 0, f"accepted terminationGracePeriodSeconds={grace}"
    assert f"terminationGracePeriodSeconds: {grace} is too short" in proc.stderr, proc.stderr
    assert "leave it null" not in proc.stderr


def test_schema_holds_the_grace_period_floor(helm: str) -> None:
    """values.schema.json rejects it before any template runs (the template check is for skipped schemas)."""
    proc = run_helm(helm, "template", "run", str(CHART), "--set", "terminationGracePeriodSeconds=29")
    assert proc.returncode != 0
    assert names_value(proc.stderr, "terminationGracePeriodSeconds") and "30" in proc.stderr, proc.stderr
    assert "is too short" not in proc.stderr, "the template check answered, not the schema"
    proc = run_helm(helm, "template", "run", str(CHART), "--set", "terminationGracePeriodSeconds=30")
    assert proc.returncode == 0, proc.stderr


def test_a_plain_pushgateway_password_is_refused_without_echoing_it_and_a_secret_is_referenced(helm: str,
                                                                                               tmp_path: Path) -> None:
    plain = write_values(tmp_path, {"trainer": {"pushgateway_password": "s3cret-value"}})
    proc = run_helm(helm, "template", "run", str(CHART), "-f", str(plain))
    assert proc.returncode != 0 and "trainerFromSecret.pushgateway_password" in proc.stderr
    assert "s3cret-value" not in proc.stderr + proc.stdout
    ref = write_values(tmp_path, {"trainerFromSecret": {"pushgateway_password": {"name": "gw", "key": "pw"}}})
    proc = run_helm(helm, "template", "run", str(CHART), "-f", str(ref))
    assert proc.returncode == 0, proc.stderr
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d and d["kind"] == "PyTorchJob"]
    pod = docs[0]["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    for container in pod["containers"]:
        (var,) = [e for e in container["env"] if e["name"] == "PUSHGATEWAY_PASSWORD"]
        assert var == {"name": "PUSHGATEWAY_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "gw", "key": "pw"}}}
