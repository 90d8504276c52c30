"""What each template renders for the values that shape it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from tests.chart.chartlib import (
    CHART,
    CI_DIR,
    DNS1035,
    VALUE_FILES,
    env_of,
    job_pod_templates,
    objects_of,
    pod_templates,
    render,
    run_helm,
    template_args,
    the,
    trainer_container,
    value_id,
)
from tests.tooling import REPO

MULTI_NODE = CI_DIR / "multi-node-gpu-values.yaml"
ELASTIC = CI_DIR / "elastic-values.yaml"
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def master(docs: list[dict]) -> dict:
    return pod_templates(the(docs, "PyTorchJob"))["Master"]


def test_default_job_is_one_master_with_one_gpu_and_lora(helm4: str) -> None:
    job = the(render(helm4), "PyTorchJob")
    assert list(job["spec"]["pytorchReplicaSpecs"]) == ["Master"]
    assert job["spec"]["pytorchReplicaSpecs"]["Master"]["replicas"] == 1
    assert job["spec"]["nprocPerNode"] == "1"
    c = trainer_container(master([job]))
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert (
        c["image"]
        == f"higgs-audio-trainer:{yaml.safe_load((CHART / 'Chart.yaml').read_text())['appVersion']}"
    )
    assert {"name": "pytorchjob-port", "containerPort": 23456, "protocol": "TCP"} in c["ports"]
    env = env_of(c)
    assert (env["USE_LORA"]["value"], env["DISABLE_EVAL"]["value"]) == ("true", "true")


def test_multi_node_job_has_master_and_workers_on_gpus(helm4: str) -> None:
    job = the(render(helm4, MULTI_NODE), "PyTorchJob")
    specs = job["spec"]["pytorchReplicaSpecs"]
    assert (specs["Master"]["replicas"], specs["Worker"]["replicas"]) == (1, 3)
    assert job["spec"]["nprocPerNode"] == "8"
    for t in pod_templates(job).values():
        res = trainer_container(t)["resources"]
        assert res["limits"]["nvidia.com/gpu"] == res["requests"]["nvidia.com/gpu"] == 8
        assert t["spec"]["priorityClassName"] == "training-high"
        assert t["spec"]["tolerations"][0]["key"] == "nvidia.com/gpu"
        assert t["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
        assert "podAntiAffinity" in t["spec"]["affinity"]
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-queue"
    assert job["spec"]["runPolicy"] == {
        "cleanPodPolicy": "Running",
        "backoffLimit": 10,
        "suspend": False,
        "ttlSecondsAfterFinished": 86400,
        "activeDeadlineSeconds": 259200,
    }


def test_cpu_only_job_requests_no_gpu(helm4: str) -> None:
    job = the(render(helm4, CI_DIR / "cpu-only-values.yaml"), "PyTorchJob")
    res = trainer_container(master([job]))["resources"]
    assert not any("gpu" in k for part in res.values() for k in part)
    assert job["spec"]["nprocPerNode"] == "2"
    assert env_of(trainer_container(master([job])))["BF16"]["value"] == "false"


def test_elastic_job_has_workers_only_and_an_elastic_policy(helm4: str) -> None:
    job = the(render(helm4, ELASTIC), "PyTorchJob")
    assert list(job["spec"]["pytorchReplicaSpecs"]) == ["Worker"]
    assert job["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 2
    assert job["spec"]["elasticPolicy"] == {
        "rdzvBackend": "c10d",
        "minReplicas": 1,
        "maxReplicas": 4,
        "maxRestarts": 10,
    }
    assert "nProcPerNode" not in job["spec"]["elasticPolicy"]
    ports = [
        p["name"]
        for p in trainer_container(job["spec"]["pytorchReplicaSpecs"]["Worker"]["template"])["ports"]
    ]
    assert "metrics" not in ports  # any Worker may host rank 0: every rank pushes instead


def test_elastic_replica_bounds_default_to_workers(helm4: str) -> None:
    job = the(
        render(
            helm4,
            None,
            "--set",
            "elastic.enabled=true",
            "--set",
            "workers=3",
            "--set",
            "storage.output.accessModes={ReadWriteMany}",
        ),
        "PyTorchJob",
    )
    assert (job["spec"]["elasticPolicy"]["minReplicas"], job["spec"]["elasticPolicy"]["maxReplicas"]) == (
        3,
        3,
    )


@pytest.mark.parametrize("values_file", VALUE_FILES, ids=value_id)
def test_trainer_pods_are_hardened(helm4: str, values_file: Path | None) -> None:
    for t in job_pod_templates(render(helm4, values_file)).values():
        pod = t["spec"]["securityContext"]
        assert pod["runAsNonRoot"] is True
        assert (pod["runAsUser"], pod["runAsGroup"], pod["fsGroup"]) == (1000, 1000, 1000)
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
        sc = trainer_container(t)["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert t["spec"]["automountServiceAccountToken"] is True  # events.enabled (default): the Events need it
        assert t["spec"]["terminationGracePeriodSeconds"] > 0


@pytest.mark.parametrize("values_file", VALUE_FILES, ids=value_id)
def test_output_dir_is_on_the_mounted_output_claim(helm4: str, values_file: Path | None) -> None:
    docs = render(helm4, values_file)
    for t in job_pod_templates(docs).values():
        c = trainer_container(t)
        (mount,) = [m for m in c["volumeMounts"] if m["name"] == "output"]
        assert env_of(c)["OUTPUT_DIR"]["value"].startswith(mount["mountPath"].rstrip("/") + "/")
        (volume,) = [v for v in t["spec"]["volumes"] if v["name"] == "output"]
        claim = volume["persistentVolumeClaim"]["claimName"]
        created = [p["metadata"]["name"] for p in objects_of(docs, "PersistentVolumeClaim")]
        assert claim in created or claim == "team-outputs"


@pytest.mark.parametrize("values_file", VALUE_FILES, ids=value_id)
def test_dev_shm_is_a_memory_volume_and_inputs_are_read_only(helm4: str, values_file: Path | None) -> None:
    t = next(iter(job_pod_templates(render(helm4, values_file)).values()))
    volumes = {v["name"]: v for v in t["spec"]["volumes"]}
    assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
    mounts = {m["name"]: m for m in trainer_container(t)["volumeMounts"]}
    assert mounts["dshm"]["mountPath"] == "/dev/shm"
    for name in ("model", "data"):
        assert mounts[name]["readOnly"] is True
        assert volumes[name]["persistentVolumeClaim"]["readOnly"] is True


def test_existing_claim_is_mounted_and_no_claim_is_created(helm4: str) -> None:
    docs = render(helm4, CI_DIR / "existing-claim-values.yaml")
    assert objects_of(docs, "PersistentVolumeClaim") == []
    t = master(docs)
    volumes = {v["name"]: v for v in t["spec"]["volumes"]}
    assert volumes["output"]["persistentVolumeClaim"]["claimName"] == "team-outputs"
    mounts = {m["name"]: m for m in trainer_container(t)["volumeMounts"]}
    assert (mounts["model"]["subPath"], mounts["data"]["subPath"]) == ("models", "datasets/voice-a")
    assert env_of(trainer_container(t))["OUTPUT_DIR"]["value"] == "/outputs/voice-a/run-7"


def test_created_claim_is_kept_on_uninstall_unless_told_otherwise(helm4: str) -> None:
    pvc = the(render(helm4), "PersistentVolumeClaim")
    assert pvc["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    assert pvc["spec"]["resources"]["requests"]["storage"] == "100Gi"
    pvc = the(render(helm4, None, "--set", "storage.output.keepOnUninstall=false"), "PersistentVolumeClaim")
    assert "annotations" not in pvc["metadata"]


def test_dashboard_configmap_wraps_the_dashboard_file_with_the_sidecar_label(helm4: str) -> None:
    cm = the(render(helm4), "ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["higgs-audio-trainer.json"]) == json.loads(
        (CHART / "files" / "grafana-dashboard.json").read_text()
    )
    cm = the(render(helm4, None, "--set", "metrics.dashboard.labels.dash=yes"), "ConfigMap")
    assert cm["metadata"]["labels"]["dash"] == "yes"


def test_prometheus_rule_spec_is_the_rules_file(helm4: str) -> None:
    rule = the(render(helm4, MULTI_NODE), "PrometheusRule")
    assert rule["spec"] == yaml.safe_load((CHART / "files" / "prometheus-rules.yaml").read_text())
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_pod_monitor_scrapes_the_metrics_port_of_rank_0_only(helm4: str) -> None:
    docs = render(helm4, CI_DIR / "pod-monitor-values.yaml", "--set", "workers=2",
                  "--set", "storage.output.accessModes={ReadWriteMany}")
    monitor = the(docs, "PodMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert (endpoint["port"], endpoint["honorLabels"]) == ("metrics", True)
    selector = monitor["spec"]["selector"]
    assert set(selector) == {"matchLabels"}
    ports = {}
    for rtype, template in pod_templates(the(docs, "PyTorchJob")).items():
        assert selector["matchLabels"].items() <= template["metadata"]["labels"].items()
        ports[rtype] = "metrics" in [p["name"] for p in trainer_container(template)["ports"]]
    # the Master runs rank 0; a Worker without the port is no target, so no target is ever down
    assert ports == {"Master": True, "Worker": False}
    assert selector["matchLabels"]["app.kubernetes.io/component"] == "trainer"
    assert objects_of(docs, "Deployment") == objects_of(docs, "ServiceMonitor") == []


def test_service_monitor_scrapes_the_pushgateway_service_with_honor_labels(helm4: str) -> None:
    docs = render(helm4, MULTI_NODE)
    monitor, service = the(docs, "ServiceMonitor"), the(docs, "Service")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["metadata"]["name"] == service["metadata"]["name"]
    assert set(monitor["spec"]) == {"selector", "endpoints"}  # no namespaceSelector: its own namespace
    assert set(monitor["spec"]["selector"]) == {"matchLabels"}
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert service["metadata"]["labels"]["app.kubernetes.io/component"] == "pushgateway"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint == {"port": "metrics", "path": "/metrics", "interval": "30s", "honorLabels": True}
    (port,) = service["spec"]["ports"]
    assert port["name"] == endpoint["port"]
    pushgateway = the(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert port["targetPort"] in [p["name"] for p in pushgateway["ports"]]
    assert objects_of(docs, "PodMonitor") == []
    for template in pod_templates(the(docs, "PyTorchJob")).values():
        c = trainer_container(template)
        assert "metrics" not in [p["name"] for p in c["ports"]]
        assert "METRICS_PORT" not in env_of(c)


def test_plain_manifests_scrape_the_pushgateway_they_deploy() -> None:
    """k8s/prometheus-operator/ holds what makes Prometheus read k8s/'s Pushgateway, with honor labels."""
    service = yaml.safe_load((REPO / "k8s" / "service.yaml").read_text())
    monitor = yaml.safe_load((REPO / "k8s" / "prometheus-operator" / "servicemonitor.yaml").read_text())
    assert monitor["kind"] == "ServiceMonitor"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["honorLabels"] is True
    assert endpoint["port"] in [p["name"] for p in service["spec"]["ports"]]
    assert not (REPO / "k8s" / "prometheus-operator" / "podmonitor.yaml").exists()


def test_pushgateway_service_selects_the_pushgateway_pods(helm4: str) -> None:
    docs = render(helm4, MULTI_NODE)
    service, deployment = the(docs, "Service"), the(docs, "Deployment")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


# Every option that creates an object, in the two sets the chart allows together (a PodMonitor and a
# Pushgateway exclude each other).
ALL_OBJECTS = {
    "push": (
        *("--set", "metrics.pushgateway.create=true"),
        *("--set", "metrics.pushgateway.serviceMonitor.enabled=true"),
        *("--set", "metrics.prometheusRule.enabled=true"),
    ),
    "scrape": ("--set", "metrics.podMonitor.enabled=true", "--set", "metrics.pushgateway.create=false",
               "--set", "metrics.prometheusRule.enabled=true"),
}


def label_maps(node: object) -> list[dict]:
    """Every `labels` and `matchLabels` map in an object, at any depth."""
    if isinstance(node, list):
        return [m for n in node for m in label_maps(n)]
    if not isinstance(node, dict):
        return []
    found = [v for k, v in node.items() if k in ("labels", "matchLabels") and isinstance(v, dict)]
    return found + [m for v in node.values() for m in label_maps(v)]


# Release names without the chart name in them, so that it is appended: one of the audit, and Helm's
# longest (53 characters), with and without a '-' where the names are cut.
LONG_RELEASES = ("my-long-release-name-for-voice-a-2026", "a" * 53, "long-release-" * 4 + "n")


@pytest.mark.parametrize("release", LONG_RELEASES, ids=["audit", "53", "53-cut-at-dash"])
@pytest.mark.parametrize("options", ALL_OBJECTS, ids=list(ALL_OBJECTS))
def test_object_names_and_label_values_fit_with_long_names(helm: str, options: str, release: str) -> None:
    """Long release names plus the chart name, and the longest jobName: every name stays a label."""
    docs = render(helm, None, "--set", "jobName=j" + "x" * 49, *ALL_OBJECTS[options], release=release)
    assert {d["kind"] for d in docs} >= {"PyTorchJob", "PersistentVolumeClaim", "ConfigMap", "Pod"}
    for d in docs:
        name = d["metadata"]["name"]
        assert len(name) <= 63 and DNS1123_LABEL.match(name), f"{d['kind']} {name!r}"
        if d["kind"] == "Service":
            assert DNS1035.match(name), name
        for labels in label_maps(d):
            assert all(len(str(v)) <= 63 for v in labels.values()), labels
    names = [d["metadata"]["name"] for d in docs]
    assert all(n.startswith(release[:40]) for n in names if n != "j" + "x" * 49)
    for kind in ("Service", "ServiceMonitor") if options == "push" else ():
        assert the(docs, kind)["metadata"]["name"].endswith("-pushgateway")


@pytest.mark.parametrize("release", LONG_RELEASES, ids=["audit", "53", "53-cut-at-dash"])
def test_the_output_claim_keeps_the_name_earlier_chart_versions_gave_it(helm4: str, release: str) -> None:
    """An upgrade must find the claim that holds the checkpoints: its name is still the release-chart prefix
    cut to 52 characters, then "-output", as before names were fitted to 63 characters."""
    (claim,) = objects_of(render(helm4, None, release=release), "PersistentVolumeClaim")
    prefix = f"{release}-higgs-audio-trainer"[:52].rstrip("-")
    assert claim["metadata"]["name"] == f"{prefix}-output"


def test_default_install_has_the_pushgateway_and_no_operator_objects_without_the_operator(helm4: str) -> None:
    kinds = {d["kind"] for d in render(helm4)}
    # The ServiceAccount, Role and RoleBinding of the Events (events.enabled) are on by default.
    assert kinds == {"PyTorchJob", "PersistentVolumeClaim", "ConfigMap", "Pod", "ServiceAccount", "Role", "RoleBinding",
                     "Deployment", "Service"}


def test_helm_test_pod_checks_inputs_without_the_output_claim(helm4: str) -> None:
    docs = render(helm4, CI_DIR / "eval-values.yaml")
    (pod,) = objects_of(docs, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    c = pod["spec"]["containers"][0]
    assert c["image"] == trainer_container(master(docs))["image"]
    script = c["command"][-1]
    for var in ("MODEL_PATH", "AUDIO_TOKENIZER_PATH", "TRAIN_DATA_FILE", "EVAL_DATA_FILE"):
        assert f"${var}" in script and var in env_of(c)
    assert "output" not in {m["name"] for m in c["volumeMounts"]}
    assert {m["name"] for m in c["volumeMounts"]} >= {"model", "data"}
    # What it declares it mounts: a declared claim alone would hold the pod (and a ReadWriteOnce output
    # claim's binding) until the claim could be attached.
    assert {v["name"] for v in pod["spec"]["volumes"]} == {m["name"] for m in c["volumeMounts"]}


def test_job_name_defaults_to_release_name_and_is_the_run_name(helm4: str) -> None:
    job = the(render(helm4, None, release="voice-a"), "PyTorchJob")
    assert job["metadata"]["name"] == "voice-a"
    assert env_of(trainer_container(master([job])))["RUN_NAME"]["value"] == "voice-a"
    job = the(render(helm4, None, "--set", "jobName=voice-b", release="voice-a"), "PyTorchJob")
    assert job["metadata"]["name"] == "voice-b"


def test_image_digest_replaces_the_tag(helm4: str) -> None:
    digest = "sha256:" + "a" * 64
    c = trainer_container(
        master(
            render(
                helm4,
                None,
                "--set",
                f"image.digest={digest}",
                "--set",
                "image.repository=registry.example/team/trainer",
            )
        )
    )
    assert c["image"] == f"registry.example/team/trainer@{digest}"


def test_notes_say_how_to_watch_the_job_and_where_adapters_land(helm4: str) -> None:
    proc = run_helm(helm4, "install", "--dry-run=client", "-n", "tts", *template_args(None))
    assert proc.returncode == 0, proc.stderr
    notes = proc.stdout.split("NOTES:", 1)[1]
    assert "kubectl -n tts get pytorchjob test-run -w" in notes
    assert "kubectl -n tts logs -f test-run-master-0" in notes
    assert "/output/test-run" in notes and "lora_adapters/" in notes
    assert "helm -n tts test test-run" in notes
    dashboard = json.loads((CHART / "files" / "grafana-dashboard.json").read_text())
    assert f'dashboard "{dashboard["title"]}" (uid {dashboard["uid"]})' in notes
