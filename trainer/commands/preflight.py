"""`higgs-audio-trainer preflight`: the cheap checks a pod can fail before any model loads, as a command.

The launcher runs the same checks before torchrun when `PREFLIGHT=true` (the chart's `preflight.enabled`;
see `trainer.launch.preflight`); this command runs them alone, in a pod (`kubectl exec`, `kubectl debug`)
or on a workstation. The trainer's options come from its environment, the checks' settings from the flags
below, whose defaults are the launcher's `PREFLIGHT_*` variables. Every check runs; each failed one prints a
line; the exit code is CONFIG_ERROR (not retried).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping, Sequence

from trainer import errors, rank_reports
from trainer.config.options import Config
from trainer.config.values import SPECS, build_config, parse_value
from trainer.launch import preflight as checks
from trainer.launch.preflight import FULL_FACTOR, LORA_FACTOR, weight_bytes

__all__ = ["FULL_FACTOR", "LORA_FACTOR", "build_parser", "options_from_env", "preflight", "quantity", "run",
           "weight_bytes"]


def quantity(text: str) -> int:
    """Bytes of a Kubernetes quantity (`1Gi`, `500M`, `1024`), for argparse."""
    try:
        return checks.quantity(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def build_parser(environ: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    """The command's flags; their defaults come from the `PREFLIGHT_*` variables in `environ`."""
    defaults = checks.settings_from_env(os.environ if environ is None else environ)
    p = argparse.ArgumentParser(prog="higgs-audio-trainer preflight", description=__doc__.splitlines()[0])
    p.add_argument("--expect_gpus", type=int, default=defaults.expect_gpus,
                   help=f"GPUs this pod must see (the chart's gpu.count) [env: {checks.EXPECT_GPUS_ENV}]")
    p.add_argument("--min_shm", type=quantity, default=defaults.min_shm,
                   help=f"smallest /dev/shm size accepted (default 1Gi) [env: {checks.MIN_SHM_ENV}]")
    p.add_argument("--shm_path", default=defaults.shm_path, help="where shared memory is mounted")
    p.add_argument("--min_free_space", type=quantity, default=defaults.min_free_space,
                   help="free space the output volume needs (default: estimated from the model's weight files) "
                        f"[env: {checks.MIN_FREE_SPACE_ENV}]")
    p.add_argument("--gateway_timeout_seconds", type=float, default=defaults.gateway_timeout_seconds,
                   help=f"how long the Pushgateway may take [env: {checks.GATEWAY_TIMEOUT_ENV}]")
    return p


def options_from_env(environ: Mapping[str, str]) -> Config:
    """The trainer's options from its environment, as `train` reads them, without its path checks.

    The path checks are this command's, each reported on its own line.
    """
    values = {spec.name: parse_value(spec, raw, f"environment variable {spec.env}")
              for spec in SPECS.values() if (raw := environ.get(spec.env)) is not None and raw.strip() != ""}
    return build_config(values)


def preflight(args: argparse.Namespace, environ: Mapping[str, str], visible: Callable[[], int]) -> list[str]:
    """Every failed check's line (empty: all passed)."""
    try:
        cfg = options_from_env(environ)
    except errors.ConfigError as err:
        return [f"options: {err}"]
    settings = checks.Settings(expect_gpus=args.expect_gpus, min_shm=args.min_shm, shm_path=args.shm_path,
                               min_free_space=args.min_free_space,
                               gateway_timeout_seconds=args.gateway_timeout_seconds)
    return checks.run_checks(cfg, settings, visible)


def run(argv: Sequence[str]) -> int:
    """`higgs-audio-trainer preflight`: run every check and exit 2 naming each failure."""
    from trainer.launch.topology import visible_gpus

    try:
        parser = build_parser()
    except errors.ConfigError as err:
        print(checks.PREFIX + str(err), flush=True)
        return errors.CONFIG_ERROR
    failed = preflight(parser.parse_args(list(argv)), os.environ, visible_gpus)
    for line in failed:
        print(checks.PREFIX + line, flush=True)
    if failed:
        # The container's termination message: `kubectl describe pod` and `status` show why it failed.
        env = os.environ
        if env.get(rank_reports.TERMINATION_LOG_ENV) or os.path.exists(rank_reports.DEFAULT_TERMINATION_LOG):
            rank_reports.write_termination_log(checks.reason(failed), env)
        return errors.CONFIG_ERROR
    print("preflight: output volume, /dev/shm, GPUs, inputs and gateway ok", flush=True)
    return errors.OK
