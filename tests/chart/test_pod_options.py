"""Pod-spec values of other clusters: each renders where Kubernetes expects it, under both kinds, and a
typo in a passed-through Kubernetes object fails the strict Kubernetes schema instead of being pruned."""

from __future__ import annotations

import pytest

from tests.chart.chartlib import CHART, CI_DIR, job_pod_templates, render, run_helm, trainer_container
from tests.chart.test_core_schemas import K8S_VERSIONS, core_objects, validate

KINDS = ("PyTorchJob", "TrainJob")
POD_OPTIONS = CI_DIR / "pod-options-values.yaml"


@pytest.mark.parametrize("kind", KINDS)
def test_pod_options_render_in_the_pod_spec(helm4: str, kind: str) -> None:
    for t in job_pod_templates(render(helm4, POD_OPTIONS, "--set", f"kind={kind}")).values():
        spec = t["spec"]
        assert (spec["runtimeClassName"], spec["schedulerName"], spec["dnsPolicy"]) == ("nvidia", "volcano",
                                                                                         "ClusterFirst")
        assert spec["topologySpreadConstraints"][0]["topologyKey"] == "kubernetes.io/hostname"
        assert [c["name"] for c in spec["initContainers"]] == ["fetch-data"]
        assert [c["name"] for c in spec["containers"]][1:] == ["log-shipper"]
        trainer = trainer_container(t)
        assert trainer["args"] == ["prepare"] and "command" not in trainer


@pytest.mark.parametrize("kind", KINDS)
def test_host_network_command_and_istio_opt_out_render(helm4: str, kind: str) -> None:
    sets = ["kind=" + kind, "hostNetwork=true", "dnsPolicy=ClusterFirstWithHostNet", "disableIstioSidecar=true",
            "command[0]=higgs-audio-trainer", "podAnnotations.team=tts"]
    docs = render(helm4, None, *(a for s in sets for a in ("--set", s)))
    for t in job_pod_templates(docs).values():
        assert t["spec"]["hostNetwork"] is True and t["spec"]["dnsPolicy"] == "ClusterFirstWithHostNet"
        assert t["metadata"]["annotations"] == {"sidecar.istio.io/inject": "false", "team": "tts"}
        assert trainer_container(t)["command"] == ["higgs-audio-trainer"]
    for obj in core_objects(docs):
        validate(obj, K8S_VERSIONS[-1])


def test_defaults_leave_the_pod_options_out(helm4: str) -> None:
    for t in job_pod_templates(render(helm4)).values():
        absent = {"runtimeClassName", "schedulerName", "hostNetwork", "dnsPolicy", "topologySpreadConstraints"}
        assert absent.isdisjoint(t["spec"]), t["spec"].keys() & absent
        assert "annotations" not in t["metadata"]
        # the preflight runs in the trainer container (the launcher's PREFLIGHT=true), not as an init container
        assert "initContainers" not in t["spec"]


@pytest.mark.parametrize(
    ("value", "typo"),
    [
        ("affinity.podAntiAfinity.requiredDuringSchedulingIgnoredDuringExecution[0].topologyKey=h", "podAntiAfinity"),
        ("podSecurityContext.fsGrup=1000", "fsGrup"),
        ("securityContext.readOnlyRootFileSystem=true", "readOnlyRootFileSystem"),
        ("tolerations[0].efect=NoSchedule", "efect"),
        ("topologySpreadConstraints[0].maxSkew=1,topologySpreadConstraints[0].topologyKey=h,"
         "topologySpreadConstraints[0].whenUnsatisfiable=DoNotSchedule,topologySpreadConstraints[0].labelSelecter.a=b",
         "labelSelecter"),
        ("extraContainers[0].name=x,extraContainers[0].image=x,extraContainers[0].resource.limits.cpu=1", "resource"),
    ],
    ids=["affinity", "pod-security-context", "security-context", "toleration", "topology-spread", "container"],
)
@pytest.mark.parametrize("kind", KINDS)
def test_a_typo_in_a_passed_through_object_fails_the_kubernetes_schema(
    helm4: str, kind: str, value: str, typo: str
) -> None:
    import jsonschema

    docs = render(helm4, None, "--set", f"kind={kind}", "--set", value)
    templates = [o for o in core_objects(docs) if o["kind"] == "PodTemplate"]
    assert templates
    with pytest.raises(jsonschema.ValidationError, match=typo):
        for obj in templates:
            validate(obj, K8S_VERSIONS[-1])


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("runtimeClassName=Nvidia_GPU", "runtimeClassName"),
        ("schedulerName=Volcano Scheduler", "schedulerName"),
        ("hostNetwork=yes", "hostNetwork"),
        ("dnsPolicy=ClusterFirstWithHost", "dnsPolicy"),
        ("disableIstioSidecar=sure", "disableIstioSidecar"),
        ("initContainers[0].name=no-image", "initContainers"),
        ("extraContainers[0].image=x", "extraContainers"),
        ("command=launch", "command"),
        ("args[0]=1", "args"),
        ("topologySpreadConstraints[0].maxSkew=1", "topologySpreadConstraints"),
        ("preflight.minShm=lots", "preflight.minShm"),
        ("preflight.enable=false", "enable"),
    ],
)
def test_bad_pod_option_is_refused_naming_it(helm: str, value: str, named: str) -> None:
    proc = run_helm(helm, "template", "run", str(CHART), "--set" if named != "args" else "--set-json",
                    value if named != "args" else "args=[1]")
    assert proc.returncode != 0, f"accepted {value}"
    assert named in proc.stderr or "/" + named.replace(".", "/") in proc.stderr, proc.stderr


@pytest.mark.parametrize(("kind", "runtime"), [("PyTorchJob", ""), ("TrainJob", ""), ("TrainJob", "team-torch")])
def test_the_trainer_container_runs_the_preflight_with_settings_the_launcher_accepts(
        helm4: str, kind: str, runtime: str) -> None:
    """The chart's PREFLIGHT_* variables are read by the launcher's own parser into the values set, in the
    trainer container that mounts the output volume and /dev/shm it checks (or, on an existing Trainer v2
    runtime, in the TrainJob's spec.trainer.env); no init container remains for the operator to loop on."""
    from trainer.launch import preflight

    sets = ("--set", f"kind={kind}", "--set", "preflight.minFreeSpace=20Gi", "--set", "gpu.count=4",
            "--set-json", "preflight.gatewayTimeoutSeconds=2.5", "--set", f"trainJob.runtimeRef.name={runtime}")
    docs = render(helm4, None, *sets)
    if runtime:
        (job,) = [d for d in docs if d["kind"] == "TrainJob"]
        envs = [job["spec"]["trainer"]["env"]]
    else:
        templates = job_pod_templates(docs).values()
        assert templates and all("initContainers" not in t["spec"] for t in templates)
        assert all({"/output", "/dev/shm"} <= {m["mountPath"] for m in trainer_container(t)["volumeMounts"]}
                   for t in templates)
        envs = [trainer_container(t)["env"] for t in templates]
    for env in envs:
        values = {e["name"]: e["value"] for e in env if "value" in e}
        assert preflight.enabled(values)
        assert preflight.settings_from_env(values) == preflight.Settings(
            expect_gpus=4, min_shm=2**30, min_free_space=20 * 2**30, gateway_timeout_seconds=2.5)


def test_preflight_can_be_turned_off(helm4: str) -> None:
    for t in job_pod_templates(render(helm4, None, "--set", "preflight.enabled=false")).values():
        assert "initContainers" not in t["spec"]
        env = {e["name"]: e.get("value") for e in trainer_container(t)["env"]}
        assert not preflight_enabled(env) and not [n for n in env if n.startswith("PREFLIGHT")]


def preflight_enabled(env: dict[str, str | None]) -> bool:
    from trainer.launch import preflight

    return preflight.enabled({k: v for k, v in env.items() if v is not None})
