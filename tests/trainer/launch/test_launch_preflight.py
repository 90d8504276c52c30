"""The preflight inside `higgs-audio-trainer launch` (PREFLIGHT=true, as the chart sets it): a failed check
exits 2 before torchrun starts, one line per check, the reason as the termination message and as a
`PreflightFailed` Warning Event on the job (here on the local Events API; on the real control plane in
tests/cluster/test_training_jobs.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.processes import launch, launch_env
from tests.trainer.cluster.events_api import JOB_UID, events_api, kubeconfig
from trainer import errors
from trainer.errors import ConfigError
from trainer.launch import preflight
from trainer.launch.topology import ENV_VARS, TORCHRUN_MODULE


def test_a_failed_preflight_exits_2_before_torchrun_and_says_which_checks_failed(base_args, tmp_path) -> None:
    (tmp_path / "blocked").write_text("a file where the output volume's directory belongs")
    with events_api() as api:
        env = launch_env(base_args, tmp_path, output_dir=str(tmp_path / "blocked" / "out"), job_name="demo",
                         job_namespace="team", events_timeout_seconds="2")
        env.update(PREFLIGHT="true", PREFLIGHT_MIN_SHM="1Pi", KUBECONFIG=str(kubeconfig(tmp_path / "kc", api.url)))
        proc = launch(env)
        assert proc.returncode == errors.CONFIG_ERROR, proc.stderr
        assert TORCHRUN_MODULE not in proc.stderr
        lines = [x.removeprefix("preflight failed: ") for x in proc.stderr.splitlines()
                 if x.startswith("preflight failed: ")]
        assert len(lines) == 2, proc.stderr
        assert lines[0].startswith(f"output_dir {tmp_path}/blocked/out: not writable")
        assert lines[1].startswith("/dev/shm: ") and "at least 1048576.00 GiB needed" in lines[1]
        reason = "preflight failed: " + "; ".join(lines)
        assert (tmp_path / "termination-log").read_text() == reason + "\n"
        assert proc.stderr.rstrip().splitlines()[-1] == f"higgs-audio-trainer launch: exit code 2: {reason}"
        (event,) = api.events
    assert (event["reason"], event["type"]) == ("PreflightFailed", "Warning")
    assert event["involvedObject"]["uid"] == JOB_UID and event["involvedObject"]["name"] == "demo"
    assert event["message"] == f"{os.uname().nodename}: exit code 2: {reason}"
    assert event["metadata"]["annotations"] == {"higgs-audio-trainer/exit-code": "2"}


@pytest.mark.slow
def test_without_preflight_true_the_launcher_checks_nothing(base_args, tmp_path) -> None:
    """A workstation launch (PREFLIGHT unset) runs no preflight: a /dev/shm it would refuse does not stop
    `prepare`, which then runs."""
    env = launch_env(base_args, tmp_path, PREFLIGHT_MIN_SHM="1Pi")
    proc = launch(env, "prepare")
    assert proc.returncode == errors.OK and "preflight" not in proc.stderr, proc.stderr
    proc = launch({**env, "PREFLIGHT": "true", "PREFLIGHT_MIN_SHM": "1"}, "prepare")
    assert proc.returncode == errors.OK, proc.stderr
    assert "higgs-audio-trainer launch: preflight: output volume, /dev/shm, GPUs, inputs and gateway ok" in proc.stderr


@pytest.mark.parametrize(("env", "message"), [
    ({"PREFLIGHT": "maybe"}, "environment variable PREFLIGHT: expected true or false, got 'maybe'"),
    ({"PREFLIGHT": "true", "PREFLIGHT_MIN_SHM": "lots"}, "environment variable PREFLIGHT_MIN_SHM: expected a size"),
    ({"PREFLIGHT": "true", "PREFLIGHT_EXPECT_GPUS": "-1"},
     "environment variable PREFLIGHT_EXPECT_GPUS: expected a whole number of at least 0, got '-1'"),
])
def test_a_bad_preflight_variable_exits_2_naming_it(base_args, tmp_path, env: dict[str, str], message: str) -> None:
    proc = launch({**launch_env(base_args, tmp_path), **env})
    assert proc.returncode == errors.CONFIG_ERROR
    assert message in proc.stderr and TORCHRUN_MODULE not in proc.stderr


def test_settings_come_from_the_preflight_variables() -> None:
    assert preflight.settings_from_env({}) == preflight.Settings()
    got = preflight.settings_from_env({"PREFLIGHT_EXPECT_GPUS": "4", "PREFLIGHT_MIN_SHM": "2Gi",
                                       "PREFLIGHT_MIN_FREE_SPACE": "20Gi", "PREFLIGHT_GATEWAY_TIMEOUT_SECONDS": "2.5"})
    assert got == preflight.Settings(expect_gpus=4, min_shm=2 * 2**30, min_free_space=20 * 2**30,
                                     gateway_timeout_seconds=2.5)
    assert [preflight.enabled({"PREFLIGHT": v}) for v in ("true", "1", "false", "0", "")] == [
        True, True, False, False, False]
    with pytest.raises(ConfigError):
        preflight.enabled({"PREFLIGHT": "maybe"})
    for name in (preflight.PREFLIGHT_ENV, preflight.EXPECT_GPUS_ENV, preflight.MIN_SHM_ENV,
                 preflight.MIN_FREE_SPACE_ENV, preflight.GATEWAY_TIMEOUT_ENV):
        assert name in ENV_VARS  # `launch --help` and docs/container-image.md list it


def test_the_preflight_command_reads_its_defaults_from_the_launchers_variables(tmp_path: Path) -> None:
    from trainer.commands.preflight import build_parser

    args = build_parser({"PREFLIGHT_MIN_SHM": "3Gi", "PREFLIGHT_EXPECT_GPUS": "2"}).parse_args([])
    assert (args.min_shm, args.expect_gpus) == (3 * 2**30, 2)
    assert build_parser({"PREFLIGHT_MIN_SHM": "3Gi"}).parse_args(["--min_shm=1Gi"]).min_shm == 2**30
