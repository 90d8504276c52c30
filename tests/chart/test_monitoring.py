"""What a default install gives Prometheus and Grafana: a metrics path whenever the dashboard ships, the
`release` label kube-prometheus-stack selects by on every monitor and rule, and the gateway's options.

`--api-versions monitoring.coreos.com/v1` stands in for a cluster that serves the Prometheus Operator's
API (what `.Capabilities.APIVersions` reports there); without it Helm renders as for a cluster without.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.chart.chartlib import (
    CHART,
    CI_DIR,
    VALUE_FILES,
    env_of,
    objects_of,
    pod_templates,
    render,
    run_helm,
    runtime_pod_templates,
    template_args,
    the,
    trainer_container,
    value_id,
)

OPERATOR = ("--api-versions", "monitoring.coreos.com/v1")
MONITOR_KINDS = ("ServiceMonitor", "PodMonitor", "PrometheusRule")
RULES = CHART / "files" / "prometheus-rules.yaml"


def metrics_path(docs: list[dict]) -> str | None:
    """How the run's series reach Prometheus in these objects, or None.

    A path is: every trainer pod pushes to a gateway the release deploys, or one it names itself; or rank 0
    serves /metrics on a port a PodMonitor of the release scrapes.
    """
    runtimes = objects_of(docs, "TrainingRuntime")
    templates = runtime_pod_templates(runtimes[0]) if runtimes else pod_templates(the(docs, "PyTorchJob"))
    envs = {r: env_of(trainer_container(t)) for r, t in templates.items()}
    if all("PUSHGATEWAY_URL" in e for e in envs.values()):
        url = next(iter(envs.values()))["PUSHGATEWAY_URL"].get("value", "")
        services = {f"http://{s['metadata']['name']}:{s['spec']['ports'][0]['port']}"
                    for s in objects_of(docs, "Service")}
        return "chart pushgateway" if url in services else "own pushgateway"
    monitors = objects_of(docs, "PodMonitor")
    if monitors and "METRICS_PORT" in envs.get("Master", {}):
        port = int(envs["Master"]["METRICS_PORT"]["value"])
        declared = [p for p in trainer_container(templates["Master"])["ports"] if p["name"] == "metrics"]
        if declared and declared[0]["containerPort"] == port:
            return "pod monitor"
    return None


@pytest.mark.parametrize("operator", [False, True], ids=["no-operator", "operator"])
@pytest.mark.parametrize("values_file", VALUE_FILES, ids=value_id)
def test_a_metrics_path_exists_whenever_the_dashboard_is_rendered(helm: str, values_file: Path | None,
                                                                  operator: bool) -> None:
    docs = render(helm, values_file, *(OPERATOR if operator else ()))
    dashboards = [d for d in objects_of(docs, "ConfigMap") if "higgs-audio-trainer.json" in d.get("data", {})]
    if dashboards:
        assert metrics_path(docs) is not None, value_id(values_file)


def test_the_default_path_is_the_charts_pushgateway_scraped_by_a_service_monitor_under_the_operator(
    helm: str,
) -> None:
    plain, operated = render(helm), render(helm, None, *OPERATOR)
    assert metrics_path(plain) == metrics_path(operated) == "chart pushgateway"
    assert objects_of(plain, "ServiceMonitor") == objects_of(plain, "PrometheusRule") == []
    assert {d["kind"] for d in operated} >= {"ServiceMonitor", "PrometheusRule"}
    assert the(operated, "ServiceMonitor")["metadata"]["name"] == the(operated, "Service")["metadata"]["name"]


@pytest.mark.parametrize("options", [
    (),
    ("-f", str(CI_DIR / "pod-monitor-values.yaml")),
    ("-f", str(CI_DIR / "multi-node-gpu-values.yaml")),
], ids=["defaults", "pod-monitor", "multi-node"])
def test_with_the_operator_api_every_monitor_and_rule_carries_the_release_label(helm: str,
                                                                               options: tuple[str, ...]) -> None:
    docs = render(helm, None, *options, *OPERATOR)
    monitors = [d for d in docs if d["kind"] in MONITOR_KINDS]
    assert len(monitors) == 2, [d["kind"] for d in monitors]  # a monitor and the rules
    for d in monitors:
        assert d["metadata"]["labels"]["release"] == "kube-prometheus-stack", d["kind"]
    docs = render(helm, None, *options, *OPERATOR, "--set", "monitoring.releaseLabel=prom")
    assert {d["metadata"]["labels"]["release"] for d in docs if d["kind"] in MONITOR_KINDS} == {"prom"}
    docs = render(helm, None, *options, *OPERATOR, "--set", "monitoring.releaseLabel=")
    assert all("release" not in d["metadata"]["labels"] for d in docs if d["kind"] in MONITOR_KINDS)


def test_an_objects_own_release_label_wins_over_the_release_label_value(helm4: str) -> None:
    docs = render(helm4, None, *OPERATOR, "--set", "metrics.prometheusRule.labels.release=other")
    assert the(docs, "PrometheusRule")["metadata"]["labels"]["release"] == "other"
    assert the(docs, "ServiceMonitor")["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_operator_objects_switched_off_stay_off_under_the_operator(helm4: str) -> None:
    docs = render(helm4, None, *OPERATOR, "--set", "metrics.pushgateway.serviceMonitor.enabled=false",
                  "--set", "metrics.prometheusRule.enabled=false")
    assert [d for d in docs if d["kind"] in MONITOR_KINDS] == []


def test_plain_manifests_for_the_operator_carry_the_release_label() -> None:
    folder = CHART.parents[1] / "k8s" / "prometheus-operator"
    files = sorted(folder.glob("*.yaml"))
    assert [f.name for f in files] == ["prometheusrule.yaml", "servicemonitor.yaml"]
    for f in files:
        assert yaml.safe_load(f.read_text())["metadata"]["labels"]["release"] == "kube-prometheus-stack", f


def test_elastic_training_is_scraped_through_the_gateway_and_no_worker_declares_a_metrics_port(helm4: str) -> None:
    docs = render(helm4, CI_DIR / "elastic-values.yaml", *OPERATOR)
    assert metrics_path(docs) == "chart pushgateway"
    assert objects_of(docs, "PodMonitor") == []
    for template in pod_templates(the(docs, "PyTorchJob")).values():
        assert "metrics" not in [p["name"] for p in trainer_container(template)["ports"]]


def test_pushgateway_persistence_keeps_its_groups_on_a_claim(helm4: str) -> None:
    docs = render(helm4, CI_DIR / "elastic-values.yaml")
    deployment = the(docs, "Deployment")
    claim = next(c for c in objects_of(docs, "PersistentVolumeClaim") if c["metadata"]["name"].endswith(
        "-pushgateway-data"))
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert "--persistence.file=/data/pushgateway.db" in container["args"]
    assert {"name": "data", "mountPath": "/data"} in container["volumeMounts"]
    assert pod["volumes"] == [{"name": "data", "persistentVolumeClaim": {"claimName": claim["metadata"]["name"]}}]
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert claim["spec"]["storageClassName"] == "standard"
    memory = the(render(helm4), "Deployment")["spec"]["template"]["spec"]
    assert "args" not in memory["containers"][0] and "volumes" not in memory


def test_pushgateway_pulls_with_the_charts_image_pull_secrets(helm4: str) -> None:
    docs = render(helm4, None, "--set", "imagePullSecrets[0].name=registry-creds")
    pod = the(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "registry-creds"}]
    assert "imagePullSecrets" not in the(render(helm4), "Deployment")["spec"]["template"]["spec"]


def test_rule_values_reach_the_rules_runbook_base_url_and_sample_quality_margins(helm4: str) -> None:
    docs = render(helm4, None, *OPERATOR, "--set", "metrics.prometheusRule.runbookBaseUrl=https://docs.example/t/",
                  "--set-json", "metrics.prometheusRule.sampleQuality.werMargin=0.2",
                  "--set-json", "metrics.prometheusRule.sampleQuality.speakerSimilarityMargin=0.1")
    rules = [r for g in the(docs, "PrometheusRule")["spec"]["groups"] for r in g["rules"]]
    for rule in rules:
        assert rule["annotations"]["runbook_url"].startswith("https://docs.example/t/docs/runbook.md#"), rule
    (quality,) = [r for r in rules if r["alert"] == "HiggsTrainerSampleQualityWorse"]
    assert "> 0.2 # werMargin" in quality["expr"] and "> 0.1 # speakerSimilarityMargin" in quality["expr"]
    # with the defaults the spec is the rules file as it is, which promtool tests
    default = the(render(helm4, None, *OPERATOR), "PrometheusRule")
    assert default["spec"] == yaml.safe_load(RULES.read_text())


def test_notes_say_what_feeds_the_dashboard_and_when_it_stays_empty(helm4: str) -> None:
    def notes(*extra: str) -> str:
        proc = run_helm(helm4, "install", "--dry-run=client", "-n", "tts", *template_args(None, *extra))
        assert proc.returncode == 0, proc.stderr
        return " ".join(proc.stdout.split("NOTES:", 1)[1].split())

    default = notes()
    assert "pushes to the chart's Pushgateway http://test-run-higgs-audio-trainer-pushgateway:9091" in default
    assert "which nothing scrapes yet" in default and "the dashboard stays empty until Prometheus scrapes" in default
    nothing = notes("--set", "metrics.pushgateway.create=false")
    assert "Fed by: nothing" in nothing and "the dashboard stays empty" in nothing
    own = notes("--set", "metrics.pushgateway.create=false", "--set", "trainer.pushgateway_url=http://gw:9091")
    assert "your Pushgateway (http://gw:9091)" in own and "honor_labels: true" in own
    scraped = notes("-f", str(CI_DIR / "pod-monitor-values.yaml"))
    assert "PodMonitor test-run-higgs-audio-trainer (label release=kube-prometheus-stack)" in scraped
    assert "Alerts: PrometheusRule test-run-higgs-audio-trainer" in scraped
    assert 'dashboard "Higgs Audio trainer"' in default
