"""`higgs-audio-trainer launch`: `torchrun` with the documented exit codes, in a container or on a workstation.

`USAGE` (its `--help`) says where the nodes come from and what it does with signals and the ranks' exit codes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence

from trainer import errors, rank_reports
from trainer.config.options import Config
from trainer.errors import ConfigError
from trainer.launch import preflight
from trainer.launch.topology import (
    ENV_VARS,
    NPROC_FLAG,
    NPROC_FLAGS,
    topology_from_env,
    torchrun_command,
)
from trainer.launch.torchrun import TORCHRUN_REPORT_ENV

USAGE = """`higgs-audio-trainer launch`: `torchrun` with the documented exit codes, in a container or on a workstation.

    higgs-audio-trainer launch [--nproc_per_node N] [train] [train flags]
                                                        torchrun ... -m trainer train (the default)
    higgs-audio-trainer launch prepare|merge|options|make-tiny-model [flags]
                                                        that subcommand, in one process
    higgs-audio-trainer launch shell [bash arguments]   an interactive shell (replaces the launcher)

Where the nodes come from (in this order):
- the Kubeflow training operator's elastic variables (`PET_RDZV_ENDPOINT`, `PET_RDZV_BACKEND`,
  `PET_RDZV_ID`, `PET_RDZV_CONF`, `PET_NNODES` as MIN:MAX, `PET_MAX_RESTARTS`): c10d rendezvous;
- its static variables (`PET_NNODES`, `PET_NODE_RANK`, `PET_MASTER_ADDR`, `PET_MASTER_PORT`, or the
  older `WORLD_SIZE` (nodes), `RANK` (node rank), `MASTER_ADDR`, `MASTER_PORT`): one node of N;
- none of them, or one node: `torchrun --standalone`.
Processes per node: `--nproc_per_node` (before the command), else `NPROC_PER_NODE` or `PET_NPROC_PER_NODE`:
a number, `auto` (one per visible GPU, 1 without GPUs; the default), `gpu` (one per GPU, an error without)
or `cpu` (one per usable CPU core). The operator sets `PET_NPROC_PER_NODE=auto` in every pod by default;
that gives way to the other two.

On a workstation, `higgs-audio-trainer launch --nproc_per_node 2 train --model_path ...` is the
multi-process run: plain `torchrun -m trainer train` exits with 1 whatever went wrong, where the
launcher exits with the code the ranks report (2 for a configuration error, 3 for a data error) and
ends with one line saying why. torchrun's own failure report (a traceback and a box of exit codes) is
shown only where no rank said why (a rank killed, a peer lost), or with LOG_LEVEL=debug.

Trainer options come from the flags after the command and their own variables (`USE_LORA`,
`DISABLE_EVAL`, ...) and are checked here first: a bad value exits with code 2 before torchrun starts.
With `PREFLIGHT=true` (the chart sets it), train and prepare first run the preflight's checks on this pod
(`higgs-audio-trainer preflight`: output volume, /dev/shm, GPUs, inputs, Pushgateway; settings from
`PREFLIGHT_*`): a failed check exits with code 2, one line per check, and a `PreflightFailed` Warning Event
on the job.
The launcher passes SIGTERM/SIGINT on to the ranks so they can save a checkpoint (`trainer.launch.supervise`,
`trainer.train.signals`), decides the exit code from what every rank reports (`trainer.rank_reports`, `decide`),
and writes a one-line reason to `TERMINATION_LOG` (default /dev/termination-log, written only where it
exists, as Kubernetes mounts it) when the run fails.
"""

TORCHRUN_REPORT = "torchrun-failure.txt"  # in the outcome directory
TRAINER_COMMANDS = ("train", "prepare", "merge", "options", "make-tiny-model")
PREFLIGHT_COMMANDS = ("train", "prepare")  # the ones that read the inputs and write the output volume


@contextlib.contextmanager
def _outcome_dir() -> Iterator[str | None]:
    """A fresh directory for the ranks' outcomes.

    None without a writable temporary directory (a read-only root filesystem and no /tmp volume), where codes come from
    the processes alone.
    """
    try:
        path = tempfile.mkdtemp(prefix="higgs-launch-")
    except OSError:
        yield None
        return
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def child_env(environ: Mapping[str, str], outcome_dir: str | None) -> dict[str, str]:
    """The child's environment.

    PET_* removed (torchrun would read them as defaults behind the explicit arguments, which are the only truth), the
    per-launch outcome directory and torchrun's report file added.
    """
    env = {k: v for k, v in environ.items() if not k.startswith("PET_")}
    if outcome_dir:
        env[rank_reports.OUTCOME_DIR_ENV] = outcome_dir
        env[TORCHRUN_REPORT_ENV] = os.path.join(outcome_dir, TORCHRUN_REPORT)
    env.setdefault("PYTHONUNBUFFERED", "1")
    # torchrun itself (`python -m torch.distributed.run`) must not import from the working directory either:
    # a data folder holding `datasets/` or `transformers/` would shadow the installed packages.
    env.setdefault("PYTHONSAFEPATH", "1")
    return env


def decide(
    returncode: int,
    outcomes: Sequence[rank_reports.Outcome],
    received: int | None,
    *,
    expected: int = 1,
    torchrun: bool = True,
) -> tuple[int, str]:
    """The launch's exit code and reason, from the child's code, what each rank reported and our signal.

    A rank's configuration or data error wins (a retry cannot fix it), then a signal the launcher got,
    then a rank that ended without a word (of the `expected` local processes; killed, for example out of
    memory: the errors of the others follow from it, and a restart can succeed), then a rank's
    unexpected error, then a rank that lost a peer (160), then a rank stopped by a signal from elsewhere.
    A torchrun failure no rank explains (a lost peer, a failed rendezvous) is retried too; a single process's own code
    (`torchrun=False`) is kept.
    """
    failed = [o for o in outcomes if o.code != errors.OK]
    if returncode == 0 and not failed:
        return errors.OK, ""

    def told(o: rank_reports.Outcome) -> str:
        return f"rank {o.rank}: {o.reason}" if o.reason else f"rank {o.rank}: exit code {o.code}"

    permanent = [o for o in failed if errors.FAILURE < o.code < errors.SIGNAL_BASE]
    if permanent:
        return permanent[0].code, told(permanent[0])
    if received is not None:
        code = errors.for_signal(received)
        same = [o for o in failed if o.code == code]  # the ranks say whether they saved a checkpoint
        return code, told(same[0]) if same else f"stopped by {signal.Signals(received).name}"
    if torchrun and outcomes and len(outcomes) < expected:
        silent = expected - len(outcomes)
        return errors.PROCESS_LOST, (
            f"{silent} of {expected} training processes ended without a reason (killed, for example out of "
            "memory); see the log above")
    # A rank that lost its peer (a collective or a wait past --ddp_timeout: 160) says what went wrong; the signal
    # torchrun then sends the rank it waited for is only the consequence.
    for wanted in (lambda c: c == errors.FAILURE, lambda c: c == errors.PROCESS_LOST,
                   lambda c: c >= errors.SIGNAL_BASE):
        match = [o for o in failed if wanted(o.code)]
        if match:
            return match[0].code, told(match[0])
    if returncode >= errors.SIGNAL_BASE:
        return returncode, f"the trainer was killed by signal {returncode - errors.SIGNAL_BASE}"
    if not torchrun:
        return returncode, errors.TABLE.get(returncode, f"exit code {returncode}")
    return errors.PROCESS_LOST, (
        f"torchrun failed (exit code {returncode}) and no rank said why: a rank was killed (for example out of "
        "memory), or a peer or the rendezvous was lost; see the log above")


def torchrun_report(outcome_dir: str | None) -> str:
    """Torchrun's failure report (`trainer.launch.torchrun`), or "" when it wrote none."""
    if not outcome_dir:
        return ""
    with contextlib.suppress(OSError), open(os.path.join(outcome_dir, TORCHRUN_REPORT)) as f:
        return f.read()
    return ""


def explained(code: int, reason: str, outcomes: Sequence[rank_reports.Outcome]) -> bool:
    """The launch ends with a rank's own reason (a configuration or data error, a rank's exception, a signal stop).

    That rank's message is in the log, and torchrun's report of exit codes would only bury it. Where the launch's reason
    is not a rank's (a rank killed without a word), torchrun's report is the evidence.
    """
    return any(o.code == code and o.reason and reason == f"rank {o.rank}: {o.reason}" for o in outcomes)


def finish(code: int, reason: str, environ: Mapping[str, str]) -> int:
    """Report a failed launch on stderr and in the termination log; return `code`.

    The default termination log is written only where it exists, as Kubernetes mounts it: on a
    workstation run as root, /dev is writable, and a launch must not leave a file there.
    """
    if code != errors.OK:
        reason = reason or errors.TABLE.get(code, "failed")
        print(f"higgs-audio-trainer launch: exit code {code}: {rank_reports.one_line(reason)}", file=sys.stderr)
        if environ.get(rank_reports.TERMINATION_LOG_ENV) or os.path.exists(rank_reports.DEFAULT_TERMINATION_LOG):
            rank_reports.write_termination_log(reason, environ)
    return code


def run_preflight(cfg: Config, settings: preflight.Settings, environ: Mapping[str, str]) -> tuple[int, str] | None:
    """The preflight's checks on this pod: None when they pass, else (exit code 2, the one-line reason).

    Each failed check is a line on stderr; the reason becomes the container's termination message (`finish`)
    and a Warning Event on the job from this pod, so that `higgs-audio-trainer status` and `kubectl describe`
    say which check failed without the pod's log. Every node records its own: the failing one may be a worker.
    """
    from trainer.cluster.events import recorder_from_options
    from trainer.launch.topology import visible_gpus

    failed = preflight.run_checks(cfg, settings, visible_gpus)
    if not failed:
        print("higgs-audio-trainer launch: preflight: output volume, /dev/shm, GPUs, inputs and gateway ok",
              file=sys.stderr, flush=True)
        return None
    for line in failed:
        print(preflight.PREFIX + line, file=sys.stderr, flush=True)
    reason = preflight.reason(failed)
    events = recorder_from_options(cfg.cluster, environ)
    if events is not None:
        events.preflight_failed(errors.CONFIG_ERROR, reason)
        _, unsent = events.close()
        if unsent:
            print(f"higgs-audio-trainer launch: events: the preflight's Event could not be recorded on "
                  f"{events.target}", file=sys.stderr, flush=True)
    return errors.CONFIG_ERROR, reason


def _stop_now(signum: int, frame: object) -> None:
    raise errors.Stopped(errors.for_signal(signum), f"stopped by {signal.Signals(signum).name} before launch")


def launcher_options(args: Sequence[str]) -> tuple[str | None, list[str]]:
    """(`--nproc_per_node`'s value or None, the arguments after the launcher's own options).

    The launcher's options come before the command, so that the trainer's flags after it stay the
    trainer's; raises `ConfigError` for a flag without its value.
    """
    rest, nproc = list(args), None
    while rest and rest[0].split("=", 1)[0] in NPROC_FLAGS:
        flag, eq, value = rest.pop(0).partition("=")
        if not eq:
            if not rest or rest[0].startswith("-"):
                raise ConfigError(f"{flag}: expected a value (a number, auto, gpu or cpu), as in "
                                  f"`higgs-audio-trainer launch {NPROC_FLAG} 2 train ...`")
            value = rest.pop(0)
        nproc = value
    return nproc, rest


def _misplaced_nproc(args: Sequence[str]) -> None:
    """A `--nproc_per_node` among the trainer's flags is meant for the launcher.

    Say where it goes instead of letting the trainer's parser call it unknown.
    """
    for arg in args:
        if arg.split("=", 1)[0] in NPROC_FLAGS:
            raise ConfigError(f"{arg.split('=', 1)[0]} is an option of launch, not of the trainer: put it before "
                              f"the command, as in `higgs-audio-trainer launch {NPROC_FLAG} 2 train ...`")


def usage() -> str:
    """The launcher's help text, with the environment variables it reads."""
    rows = "\n".join(f"  {name:<20} {text}" for name, text in ENV_VARS.items())
    return f"{USAGE}\nEnvironment variables read by the launcher:\n{rows}\n"


def main(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> int:
    """Run the launch; returns its exit code (see `trainer.errors`)."""
    env = dict(os.environ if environ is None else environ)
    args = list(argv)
    if args and args[0] in ("-h", "--help"):
        print(usage())
        return errors.OK
    try:
        nproc_flag, args = launcher_options(args)
    except ConfigError as err:
        return finish(errors.CONFIG_ERROR, f"configuration error: {err}", env)
    command = args.pop(0) if args and not args[0].startswith("-") else "train"
    if command == "shell" and nproc_flag is None:
        os.execvpe("bash", ["bash", *args], env)
    if command not in (*TRAINER_COMMANDS, "shell"):
        return finish(errors.CONFIG_ERROR, f"unknown command {command!r}; one of "
                      f"{', '.join((*TRAINER_COMMANDS, 'shell'))}", env)
    if nproc_flag is not None and command != "train":
        return finish(errors.CONFIG_ERROR, f"configuration error: {NPROC_FLAG} applies to train only; "
                      f"{command} runs in one process", env)
    # As PID 1 a signal without a handler is ignored: until the supervisor takes over, stop at once.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stop_now)
    try:
        if command == "train":
            from trainer.config.cli import parse_train_args

            _misplaced_nproc(args)
            cfg = parse_train_args(args, env)  # a bad value stops here, before torchrun starts
            topo = topology_from_env(env, nproc_flag=nproc_flag)
            cmd, local_processes = torchrun_command(topo, [command, *args]), topo.nproc_per_node
        else:
            cmd, local_processes = [sys.executable, "-m", "trainer", command, *args], 1
        checks = None
        if command in PREFLIGHT_COMMANDS and preflight.enabled(env):
            if command != "train":
                from trainer.config.cli import parse_train_args

                cfg = parse_train_args(args, env)
            checks = preflight.settings_from_env(env)
    except ConfigError as err:
        return finish(errors.CONFIG_ERROR, f"configuration error: {err}", env)
    except errors.Stopped as err:
        return finish(err.code, err.reason, env)
    if checks is not None:  # before the output lock and the ledger, which need the volume it checks
        try:
            failed = run_preflight(cfg, checks, env)
        except errors.Stopped as err:  # a SIGTERM while a check waits (the Pushgateway's timeout)
            return finish(err.code, err.reason, env)
        if failed:
            return finish(*failed, env)
    torchrun = command == "train"
    attempt = None
    if torchrun:  # the retry ledger and the job's Events (node 0 keeps them)
        from trainer.launch.attempt import TrainingAttempt

        attempt = TrainingAttempt(cfg, env, keeper=topo.standalone or topo.node_rank == 0)
        refused = attempt.begin()
        if refused:
            attempt.end(*refused)
            return finish(*refused, env)
    print(f"higgs-audio-trainer launch: {' '.join(cmd)}", file=sys.stderr, flush=True)
    from trainer.launch.supervise import Supervisor

    with _outcome_dir() as outcome_dir:
        supervisor = Supervisor(cmd, child_env(env, outcome_dir), to_children=torchrun)
        returncode = supervisor.run()
        outcomes = rank_reports.collect(outcome_dir) if outcome_dir else []
        report = torchrun_report(outcome_dir)
    code, reason = decide(returncode, outcomes, supervisor.received, expected=local_processes, torchrun=torchrun)
    if report and (not explained(code, reason, outcomes) or (torchrun and cfg.train.log_level == "debug")):
        print(report, file=sys.stderr, end="", flush=True)
    if attempt is not None:
        attempt.end(code, reason)
    return finish(code, reason, env)
