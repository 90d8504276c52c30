"""The chart's env vars are the trainer's options: none unknown, every one settable, values parsed back."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.chartlib import (
    CHART,
    CI_DIR,
    VALUE_FILES,
    env_of,
    job_pod_templates,
    pod_templates,
    render,
    the,
    trainer_container,
    value_id,
    values_of,
)
from trainer.config.values import OptionSpec, option_specs, parse_value
from trainer.launch.topology import ENV_VARS as LAUNCHER_ENV

# The only variables the chart sets that are neither trainer options nor the launcher's own (LAUNCHER_ENV,
# which `launch --help` lists: the preflight's settings, NPROC_PER_NODE), and why.
RUNTIME_ENV = {
    "HOME": "the root filesystem is read-only; caches under $HOME go to the /tmp emptyDir",
    "HF_TOKEN": "read by huggingface_hub, from hfToken.secretName",
}
OPTION_ENVS = {s.env: s for s in option_specs()}


def containers(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The trainer container of every replica and the helm test container that shares its env."""
    templates = job_pod_templates(docs).values()
    out = [trainer_container(t) for t in templates]
    out += [c for d in docs if d["kind"] == "Pod" for c in d["spec"]["containers"]]
    return out


@pytest.mark.parametrize("values_file", VALUE_FILES, ids=value_id)
def test_every_env_var_the_chart_sets_is_a_trainer_option(helm4: str, values_file: Path | None) -> None:
    user_env = {e["name"] for e in values_of(values_file).get("extraEnv", [])}
    for c in containers(render(helm4, values_file)):
        names = set(env_of(c)) - user_env - set(RUNTIME_ENV) - set(LAUNCHER_ENV)
        assert names, "no trainer option set"
        unknown = sorted(names - set(OPTION_ENVS))
        assert unknown == [], f"env vars the trainer does not read: {unknown}"


def sample(spec: OptionSpec) -> Any:
    """A valid value of the option that differs from its default, so the test sees it set."""
    d = spec.default
    if spec.kind == "bool":
        return not d
    if spec.kind == "tristate":
        return True
    if spec.kind == "choice":
        return next(c for c in spec.choices or () if c != d)
    if spec.kind == "list":
        return list(spec.choices) if spec.choices else ["first_mod", "second_mod"]
    if spec.kind == "int":
        v = int(d) + 1
        return v if spec.maximum is None or v <= spec.maximum else int(spec.minimum or 0)
    if spec.kind == "float":
        return d / 2 if d else 0.5
    if spec.name == "output_dir":  # must lie on the output volume
        return "/output/sample-run"
    if spec.kind == "path":
        return f"/samples/{spec.name}"
    return f"sample {spec.name}"


# Options the chart refuses as a plain value (tests/chart/test_bad_values.py): they come from a Secret.
SECRET_ONLY = {"pushgateway_password"}


def test_every_trainer_option_can_be_set_from_values(helm: str, tmp_path: Path) -> None:
    specs = [s for s in option_specs() if s.name not in SECRET_ONLY]
    values = {"trainer": {s.name: sample(s) for s in specs},
              "trainerFromSecret": {name: {"name": "creds", "key": name} for name in sorted(SECRET_ONLY)}}
    values_file = tmp_path / "all-options.yaml"
    values_file.write_text(yaml.safe_dump(values))
    for c in containers(render(helm, values_file)):
        env = env_of(c)
        for name in SECRET_ONLY:
            env_name = name.upper()
            assert env[env_name] == {"name": env_name,
                                     "valueFrom": {"secretKeyRef": {"name": "creds", "key": name}}}, env[env_name]
        for s in specs:
            assert s.env in env, f"{s.name} set in values but {s.env} not in the env"
            got = parse_value(s, env[s.env]["value"], s.env)
            want = parse_value(s, sample(s), s.name)
            if isinstance(want, float):
                assert math.isclose(got, want), (s.env, env[s.env]["value"])
            else:
                assert got == want, (s.env, env[s.env]["value"])


def test_values_trainer_block_lists_every_option_in_declaration_order() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert list(values["trainer"]) == [s.name for s in option_specs()]


def test_numbers_render_as_the_trainer_parses_them(helm: str, tmp_path: Path) -> None:
    """Helm holds every number as a float64; integers must not come out as 1e+06."""
    values_file = tmp_path / "numbers.yaml"
    values_file.write_text(
        yaml.safe_dump(
            {
                "trainer": {
                    "max_steps": 10_000_000,
                    "save_steps": 123_456_789,
                    "learning_rate": 2e-5,
                    "num_train_epochs": 3.0,
                }
            }
        )
    )
    env = env_of(trainer_container(pod_templates(the(render(helm, values_file), "PyTorchJob"))["Master"]))
    assert env["MAX_STEPS"]["value"] == "10000000"
    assert env["SAVE_STEPS"]["value"] == "123456789"
    assert float(env["LEARNING_RATE"]["value"]) == 2e-5
    assert float(env["NUM_TRAIN_EPOCHS"]["value"]) == 3.0


def test_derived_options_come_from_the_job_name_and_output_mount(helm4: str) -> None:
    docs = render(helm4)
    env = env_of(trainer_container(pod_templates(the(docs, "PyTorchJob"))["Master"]))
    job = the(docs, "PyTorchJob")["metadata"]["name"]
    assert env["RUN_NAME"]["value"] == job
    assert env["OUTPUT_DIR"]["value"] == f"/output/{job}"
    assert env["METRICS_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    # the default metrics path: the chart's Pushgateway
    assert env["PUSHGATEWAY_URL"]["value"] == "http://test-run-higgs-audio-trainer-pushgateway:9091"
    assert "METRICS_PORT" not in env


def test_signal_save_timeout_is_derived_below_the_termination_grace_period(helm4: str) -> None:
    for grace, expected in ((120, 100.0), (600, 580.0), (30, 10.0)):
        docs = render(helm4, None, "--set", f"terminationGracePeriodSeconds={grace}")
        template = pod_templates(the(docs, "PyTorchJob"))["Master"]
        env = env_of(trainer_container(template))
        assert template["spec"]["terminationGracePeriodSeconds"] == grace
        assert float(env["SIGNAL_SAVE_TIMEOUT_SECONDS"]["value"]) == expected < grace
    docs = render(helm4, None, "--set", "trainer.signal_save_timeout_seconds=30")
    env = env_of(trainer_container(pod_templates(the(docs, "PyTorchJob"))["Master"]))
    assert float(env["SIGNAL_SAVE_TIMEOUT_SECONDS"]["value"]) == 30.0


def test_pushgateway_address_is_wired_when_created(helm4: str) -> None:
    docs = render(helm4, CI_DIR / "multi-node-gpu-values.yaml")
    service = the(docs, "Service")
    for template in pod_templates(the(docs, "PyTorchJob")).values():
        env = env_of(trainer_container(template))
        assert (
            env["PUSHGATEWAY_URL"]["value"]
            == f"http://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}"
        )
        assert "METRICS_PORT" not in env


def test_metrics_port_is_wired_with_the_pod_monitor(helm4: str) -> None:
    docs = render(helm4, CI_DIR / "pod-monitor-values.yaml")
    for template in pod_templates(the(docs, "PyTorchJob")).values():
        c = trainer_container(template)
        env = env_of(c)
        (port,) = [p for p in c["ports"] if p["name"] == "metrics"]
        assert env["METRICS_PORT"]["value"] == str(port["containerPort"])
        assert "PUSHGATEWAY_URL" not in env


def test_options_set_in_values_win_over_derived_ones(helm4: str) -> None:
    docs = render(
        helm4,
        None,
        "--set",
        "trainer.run_name=custom",
        "--set",
        "trainer.output_dir=/output/x/y",
        "--set",
        "metrics.pushgateway.create=true",
        "--set",
        "trainer.pushgateway_url=http://gw:9091",
    )
    env = env_of(trainer_container(pod_templates(the(docs, "PyTorchJob"))["Master"]))
    assert (env["RUN_NAME"]["value"], env["OUTPUT_DIR"]["value"]) == ("custom", "/output/x/y")
    assert env["PUSHGATEWAY_URL"]["value"] == "http://gw:9091"


def test_trainer_options_from_secrets_are_secret_key_refs(helm4: str) -> None:
    docs = render(helm4, CI_DIR / "multi-node-gpu-values.yaml")
    env = env_of(trainer_container(pod_templates(the(docs, "PyTorchJob"))["Worker"]))
    assert env["PUSHGATEWAY_PASSWORD"] == {
        "name": "PUSHGATEWAY_PASSWORD",
        "valueFrom": {"secretKeyRef": {"name": "pushgateway-auth", "key": "password"}},
    }
    assert env["HF_TOKEN"]["valueFrom"] == {"secretKeyRef": {"name": "hf-token", "key": "token"}}


@pytest.mark.parametrize("values_file", VALUE_FILES, ids=value_id)
def test_home_is_the_writable_tmp_volume(helm4: str, values_file: Path | None) -> None:
    for c in containers(render(helm4, values_file)):
        assert env_of(c)["HOME"]["value"] == "/tmp"
        assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
