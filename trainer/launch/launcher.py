"""`higgs-audio-trainer launch`: `torchrun` with the documented exit codes, in a container or on a workstation.

`USAGE` (its `--help`) says where the nodes come from and what it does with signals and the ranks' exit codes."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from trainer import errors, rank_reports
from trainer.errors import ConfigError

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
ends with one line saying why.

Trainer options come from the flags after the command and their own variables (`USE_LORA`,
`DISABLE_EVAL`, ...) and are checked here first: a bad value exits with code 2 before torchrun starts.
The launcher passes SIGTERM/SIGINT on to the ranks so they can save a checkpoint (`trainer.launch.supervise`,
`trainer.train.signals`), decides the exit code from what every rank reports (`trainer.rank_reports`, `decide`),
and writes a one-line reason to `TERMINATION_LOG` (default /dev/termination-log, written only where it
exists, as Kubernetes mounts it) when the run fails.
"""

TRAINER_COMMANDS = ("train", "prepare", "merge", "options", "make-tiny-model")
NPROC_FLAG = "--nproc_per_node"
NPROC_FLAGS = (NPROC_FLAG, "--nproc-per-node")  # torchrun's two spellings
DEFAULT_MASTER_PORT = 29500  # torchrun's own default

# Every variable the launcher itself reads, with its meaning (for `launch --help` and the docs).
ENV_VARS = {
    "NPROC_PER_NODE": "training processes on this node: N, auto (one per GPU, 1 without; default), gpu or cpu; "
                      f"{NPROC_FLAG} overrides it",
    "PET_NPROC_PER_NODE": f"the same, as the training operator sets it; its default auto gives way to {NPROC_FLAG} "
                          "and NPROC_PER_NODE, any other value must agree with them",
    "PET_NNODES": "number of nodes (N), or MIN:MAX with elastic rendezvous",
    "PET_NODE_RANK": "this node's rank, 0 to N-1",
    "PET_MASTER_ADDR": "address of node 0, which hosts the rendezvous",
    "PET_MASTER_PORT": f"its port (default {DEFAULT_MASTER_PORT})",
    "WORLD_SIZE": "number of nodes when PET_NNODES is unset (older operators)",
    "RANK": "this node's rank when PET_NODE_RANK is unset",
    "MASTER_ADDR": "address of node 0 when PET_MASTER_ADDR is unset",
    "MASTER_PORT": "its port when PET_MASTER_PORT is unset",
    "PET_RDZV_ENDPOINT": "host:port of the c10d rendezvous: elastic training",
    "PET_RDZV_BACKEND": "rendezvous backend with PET_RDZV_ENDPOINT (default c10d)",
    "PET_RDZV_ID": "rendezvous id with PET_RDZV_ENDPOINT",
    "PET_RDZV_CONF": "extra rendezvous settings (key=value,...) with PET_RDZV_ENDPOINT",
    "PET_MAX_RESTARTS": "worker group restarts torchrun allows (default 0: the operator restarts pods)",
    rank_reports.TERMINATION_LOG_ENV:
        f"file for the one-line failure reason (default {rank_reports.DEFAULT_TERMINATION_LOG})",
}


@dataclass(frozen=True)
class Topology:
    """What torchrun needs to know about this node and its peers."""

    nnodes: str  # "N", or "MIN:MAX" with elastic rendezvous
    nproc_per_node: int
    node_rank: int | None = None  # static multi-node only
    master_addr: str | None = None
    master_port: int | None = None
    rdzv_backend: str | None = None  # elastic only
    rdzv_endpoint: str | None = None
    rdzv_id: str | None = None
    rdzv_conf: str | None = None
    max_restarts: int = 0

    @property
    def standalone(self) -> bool:
        return self.nnodes == "1" and self.rdzv_endpoint is None


def visible_gpus() -> int:
    """CUDA devices this process can see (0 without CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _get(env: Mapping[str, str], *names: str) -> tuple[str, str] | None:
    """(name, value) of the first of `names` set to a non-empty value."""
    for name in names:
        value = env.get(name, "").strip()
        if value:
            return name, value
    return None


def _source(name: str) -> str:
    """How an error names where a value came from: the flag itself, or "environment variable NAME"."""
    return name if name.startswith("-") else f"environment variable {name}"


def _int(found: tuple[str, str], minimum: int, maximum: int | None = None) -> int:
    name, raw = found
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or value < minimum or (maximum is not None and value > maximum):
        bound = f" and at most {maximum}" if maximum is not None else ""
        raise ConfigError(f"{_source(name)}: expected an integer of at least {minimum}{bound}, got {raw!r}")
    return value


def nproc_per_node(env: Mapping[str, str], gpus: Callable[[], int] = visible_gpus, flag: str | None = None) -> int:
    """Processes per node from `--nproc_per_node` (`flag`), NPROC_PER_NODE or PET_NPROC_PER_NODE (see `USAGE`)."""
    # the flag outranks the variable, as a trainer flag outranks its variable
    ours = (NPROC_FLAG, flag.strip()) if flag is not None else _get(env, "NPROC_PER_NODE")
    operators = _get(env, "PET_NPROC_PER_NODE")
    # the operator writes PET_NPROC_PER_NODE=auto into every pod unless spec.nprocPerNode says otherwise:
    # that default gives way to the container's own choice; two explicit choices must agree
    if ours and operators and operators[1].lower() != "auto" and ours[1].lower() != operators[1].lower():
        mine = f"{NPROC_FLAG} {ours[1]!r} and environment variable" if flag is not None else (
            f"environment variables NPROC_PER_NODE={ours[1]!r} and")
        raise ConfigError(f"{mine} PET_NPROC_PER_NODE={operators[1]!r} (the PyTorchJob's spec.nprocPerNode) "
                          "disagree; set one")
    found = ours or operators or ("NPROC_PER_NODE", "auto")
    name, raw = found
    word = raw.lower()
    if word == "auto":
        return max(gpus(), 1)
    if word == "gpu":
        count = gpus()
        if count == 0:
            raise ConfigError(f"{_source(name)}: gpu asks for one process per GPU, but no GPU is visible; "
                              "use auto, cpu or a number")
        return count
    if word == "cpu":
        return len(os.sched_getaffinity(0))
    if not raw.isdigit():
        raise ConfigError(f"{_source(name)}: expected a positive integer, auto, gpu or cpu, got {raw!r}")
    return _int(found, 1)


def topology_from_env(
    env: Mapping[str, str], gpus: Callable[[], int] = visible_gpus, nproc_flag: str | None = None
) -> Topology:
    """This node's place in the job, from the training operator's variables (processes per node from
    `--nproc_per_node`, `nproc_flag`, when given); raises `ConfigError`."""
    nproc = nproc_per_node(env, gpus, nproc_flag)
    endpoint = _get(env, "PET_RDZV_ENDPOINT")
    restarts = _get(env, "PET_MAX_RESTARTS")
    max_restarts = _int(restarts, 0) if restarts else 0
    if endpoint:
        nnodes = _get(env, "PET_NNODES")
        if not nnodes:
            raise ConfigError("environment variable PET_NNODES: required with PET_RDZV_ENDPOINT (N or MIN:MAX)")
        parts = nnodes[1].split(":")
        if len(parts) > 2:
            raise ConfigError(f"environment variable PET_NNODES: expected N or MIN:MAX, got {nnodes[1]!r}")
        low, high = (_int(("PET_NNODES", p), 1) for p in (parts[0], parts[-1]))
        if low > high:
            raise ConfigError(f"environment variable PET_NNODES: MIN above MAX in {nnodes[1]!r}")
        backend, rdzv_id, conf = (_get(env, n) for n in ("PET_RDZV_BACKEND", "PET_RDZV_ID", "PET_RDZV_CONF"))
        return Topology(
            nnodes=f"{low}:{high}" if low != high else str(low),
            nproc_per_node=nproc,
            rdzv_backend=backend[1] if backend else "c10d",
            rdzv_endpoint=endpoint[1],
            rdzv_id=rdzv_id[1] if rdzv_id else None,
            rdzv_conf=conf[1] if conf else None,
            max_restarts=max_restarts,
        )
    master = _get(env, "PET_MASTER_ADDR", "MASTER_ADDR")
    nnodes_var = _get(env, "PET_NNODES") or (_get(env, "WORLD_SIZE") if master else None)
    nnodes = _int(nnodes_var, 1) if nnodes_var else 1
    if nnodes == 1:
        return Topology(nnodes="1", nproc_per_node=nproc, max_restarts=max_restarts)
    if not master:
        raise ConfigError(f"environment variable PET_MASTER_ADDR (or MASTER_ADDR): required with "
                          f"{nnodes_var[0] if nnodes_var else 'PET_NNODES'}={nnodes}")
    rank = _get(env, "PET_NODE_RANK", "RANK")
    if not rank:
        raise ConfigError(f"environment variable PET_NODE_RANK (or RANK): required with {nnodes} nodes")
    port = _get(env, "PET_MASTER_PORT", "MASTER_PORT")
    return Topology(
        nnodes=str(nnodes),
        nproc_per_node=nproc,
        node_rank=_int(rank, 0, nnodes - 1),
        master_addr=master[1],
        master_port=_int(port, 1, 65535) if port else DEFAULT_MASTER_PORT,
        max_restarts=max_restarts,
    )


def torchrun_command(topo: Topology, args: Sequence[str]) -> list[str]:
    """`python -m torch.distributed.run ... -m trainer ARGS` for this node."""
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nnodes={topo.nnodes}",
           f"--nproc_per_node={topo.nproc_per_node}", f"--max_restarts={topo.max_restarts}"]
    if topo.standalone:
        cmd.append("--standalone")
    elif topo.rdzv_endpoint is not None:
        cmd += [f"--rdzv_backend={topo.rdzv_backend}", f"--rdzv_endpoint={topo.rdzv_endpoint}"]
        cmd += [f"--rdzv_id={topo.rdzv_id}"] if topo.rdzv_id else []
        cmd += [f"--rdzv_conf={topo.rdzv_conf}"] if topo.rdzv_conf else []
    else:
        cmd += [f"--node_rank={topo.node_rank}", f"--master_addr={topo.master_addr}",
                f"--master_port={topo.master_port}"]
    return [*cmd, "-m", "trainer", *args]


@contextlib.contextmanager
def _outcome_dir() -> Iterator[str | None]:
    """A fresh directory for the ranks' outcomes; None without a writable temporary directory (a read-only
    root filesystem and no /tmp volume), where codes come from the processes alone."""
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
    """The child's environment: PET_* removed (torchrun would read them as defaults behind the explicit
    arguments, which are the only truth), the per-launch outcome directory added."""
    env = {k: v for k, v in environ.items() if not k.startswith("PET_")}
    if outcome_dir:
        env[rank_reports.OUTCOME_DIR_ENV] = outcome_dir
    env.setdefault("PYTHONUNBUFFERED", "1")
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
    unexpected error, then a rank stopped by a signal from elsewhere. A torchrun failure no rank
    explains (a lost peer, a failed rendezvous) is retried too; a single process's own code
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
    for wanted in (lambda c: c == errors.FAILURE, lambda c: c >= errors.SIGNAL_BASE):
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
    """A `--nproc_per_node` among the trainer's flags is meant for the launcher: say where it goes instead of
    letting the trainer's parser call it unknown."""
    for arg in args:
        if arg.split("=", 1)[0] in NPROC_FLAGS:
            raise ConfigError(f"{arg.split('=', 1)[0]} is an option of launch, not of the trainer: put it before "
                              f"the command, as in `higgs-audio-trainer launch {NPROC_FLAG} 2 train ...`")


def usage() -> str:
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
            parse_train_args(args, env)  # a bad value stops here, before torchrun starts
            topo = topology_from_env(env, nproc_flag=nproc_flag)
            cmd, local_processes = torchrun_command(topo, [command, *args]), topo.nproc_per_node
        else:
            cmd, local_processes = [sys.executable, "-m", "trainer", command, *args], 1
    except ConfigError as err:
        return finish(errors.CONFIG_ERROR, f"configuration error: {err}", env)
    except errors.Stopped as err:
        return finish(err.code, err.reason, env)
    print(f"higgs-audio-trainer launch: {' '.join(cmd)}", file=sys.stderr, flush=True)
    from trainer.launch.supervise import Supervisor

    torchrun = command == "train"
    with _outcome_dir() as outcome_dir:
        supervisor = Supervisor(cmd, child_env(env, outcome_dir), to_children=torchrun)
        returncode = supervisor.run()
        outcomes = rank_reports.collect(outcome_dir) if outcome_dir else []
    code, reason = decide(returncode, outcomes, supervisor.received, expected=local_processes, torchrun=torchrun)
    return finish(code, reason, env)
