"""`higgs-audio-trainer` / `python -m trainer`: the subcommands.

    train            fine-tune (flags or env vars; see `train --help`)
    prepare          check the dataset and fill the audio code cache, without training
    merge            fold a LoRA adapter into the base model and save a model `from_pretrained` loads
    make-tiny-model  write a tiny random Higgs Audio v2 checkpoint (demo and tests)
    preflight        check the output volume, /dev/shm, GPUs, inputs and gateway (launch runs it: PREFLIGHT=true)
    options          print the option table (flag, env var, default, meaning) as Markdown
    synthesize       speak a text (or a JSONL file of texts) with a model and an optional adapter
    evaluate         word/character error rates and speaker similarity of a folder of generated clips
    build-dataset    long recordings -> clips, transcripts and references in a training set (docs/bring-your-data.md)
    launch           torchrun with the documented exit codes: the container's entrypoint, and the
                     multi-process run on a workstation (`launch --nproc_per_node 2 train ...`; see `launch --help`)
    status           what a job on the cluster is doing and why it stopped (`status NAME [-n NS] [--watch|--wait]`)
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Mapping, Sequence


def drop_working_directory(path: list[str], cwd: str, safe_path: bool) -> None:
    """Remove the working directory that `python -m` puts first on `path` (sys.path), in place.

    The community data layout keeps clips under `./datasets/...`: started in that folder, `python -m trainer`
    (and every rank `torchrun -m trainer` starts) would import the folder `datasets/` instead of the installed
    package, and likewise a `transformers/` or `peft/` folder. This package is found where it is installed
    (or through the editable install's finder), never through the working directory. A no-op under
    `python -P` / `PYTHONSAFEPATH`, which leave it out already.
    """
    if not safe_path and path and path[0] in ("", cwd, os.curdir):
        del path[0]


if __name__ == "__main__":  # before any command imports datasets, transformers or peft
    drop_working_directory(sys.path, os.getcwd(), bool(sys.flags.safe_path))

from trainer import errors, rank_reports  # noqa: E402

USAGE = __doc__.split("\n", 2)[2] if __doc__ else ""
# Errors every rank finds alike: the same configuration and the same dataset, checked the same way.
SHARED_ERRORS = (errors.CONFIG_ERROR, errors.DATA_ERROR)


def _command(module: str, function: str = "run") -> Callable[[Sequence[str]], int]:
    """A command whose module is imported only when it runs, so that `--help` and errors answer at once."""

    def run(argv: Sequence[str]) -> int:
        return getattr(importlib.import_module(module), function)(argv)

    return run


COMMANDS = {
    "train": _command("trainer.commands.train"),
    "prepare": _command("trainer.commands.prepare"),
    "merge": _command("trainer.commands.merge"),
    "make-tiny-model": _command("trainer.commands.tiny"),
    "options": _command("trainer.commands.options"),
    "preflight": _command("trainer.commands.preflight"),
    "launch": _command("trainer.launch.launcher", "main"),
    "status": _command("trainer.commands.status"),
    "synthesize": _command("trainer.commands.synthesize"),
    "evaluate": _command("trainer.commands.evaluate"),
    "build-dataset": _command("trainer.commands.build_dataset"),
}


def says_why(code: int, environ: Mapping[str, str]) -> bool:
    """Whether this process prints the one-line reason of its exit `code`.

    Under torchrun every rank reads the same options and the same dataset, so a configuration or data
    error is found by all of them: printed by each, one sentence would appear once per rank. Local rank 0
    says it, once per node (on one node: once); the others only exit with the code, which the launcher
    still collects from each (`trainer.rank_reports`). Any other ending can differ between ranks (a signal, a
    lost peer, a full disk on one node): every rank says its own.
    """
    return code not in SHARED_ERRORS or int(environ.get("LOCAL_RANK", "0") or 0) == 0


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch a subcommand; turn known errors into one-line messages and their exit codes."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(f"usage: higgs-audio-trainer COMMAND [options]\n\n{USAGE}")
        return errors.OK if args else errors.CONFIG_ERROR
    command = COMMANDS.get(args[0])
    if command is None:
        print(f"higgs-audio-trainer: unknown command {args[0]!r}; one of {', '.join(COMMANDS)}", file=sys.stderr)
        return errors.CONFIG_ERROR
    # Every ending is also recorded for the launcher (`trainer.rank_reports`): torchrun keeps only "failed".
    try:
        code, reason = command(args[1:]), ""
    except (errors.Stopped, Exception) as err:
        code, reason = errors.classify(err)
        if code == errors.FAILURE:  # unexpected: the traceback says where
            rank_reports.record(code, reason)
            raise
    if reason and says_why(code, os.environ):
        print(f"higgs-audio-trainer: {reason}", file=sys.stderr)
    rank_reports.record(code, reason)
    return code


if __name__ == "__main__":
    sys.exit(main())
