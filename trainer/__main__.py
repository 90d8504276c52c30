"""`higgs-audio-trainer` / `python -m trainer`: the subcommands.

    train            fine-tune (flags or env vars; see `train --help`)
    prepare          check the dataset and fill the audio code cache, without training
    merge            fold a LoRA adapter into the base model and save a model `from_pretrained` loads
    make-tiny-model  write a tiny random Higgs Audio v2 checkpoint (demo and tests)
    options          print the option table (flag, env var, default, meaning) as Markdown
    launch           torchrun with the documented exit codes: the container's entrypoint, and the
                     multi-process run on a workstation (`launch --nproc_per_node 2 train ...`; see `launch --help`)
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence

from trainer import exitcodes, outcome

USAGE = __doc__.split("\n", 2)[2] if __doc__ else ""
# Errors every rank finds alike: the same configuration and the same dataset, checked the same way.
SHARED_ERRORS = (exitcodes.CONFIG_ERROR, exitcodes.DATA_ERROR)


def _train(argv: Sequence[str]) -> int:
    from trainer.cli import parse_train_args

    cfg = parse_train_args(argv, os.environ)
    from trainer.run import main

    main(cfg)
    return exitcodes.OK


def _prepare(argv: Sequence[str]) -> int:
    from trainer.cli import parse_train_args
    from trainer.prepare_cmd import prepare_only

    cfg = parse_train_args(argv, os.environ)
    prepare_only(cfg)
    return exitcodes.OK


def _merge(argv: Sequence[str]) -> int:
    from trainer.merge import merge_main

    return merge_main(argv)


def _tiny(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="higgs-audio-trainer make-tiny-model",
                                     description="Write OUT/model and OUT/audio_tokenizer (random weights).")
    parser.add_argument("out", help="output directory")
    parser.add_argument("--hidden_size", type=int, default=32)
    parser.add_argument("--num_layers", type=int, default=2)
    parser.add_argument("--num_codebooks", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    ns = parser.parse_args(list(argv))
    from trainer.tiny import build_tiny_checkpoint

    model_dir, codec_dir = build_tiny_checkpoint(
        ns.out, hidden_size=ns.hidden_size, num_layers=ns.num_layers, num_codebooks=ns.num_codebooks, seed=ns.seed
    )
    print(f"model: {model_dir}\naudio tokenizer: {codec_dir}")
    return exitcodes.OK


def _options(argv: Sequence[str]) -> int:
    from trainer.cli import options_markdown

    sys.stdout.write(options_markdown())
    return exitcodes.OK


def _launch(argv: Sequence[str]) -> int:
    from trainer.launch import main as launch_main

    return launch_main(argv)


COMMANDS = {"train": _train, "prepare": _prepare, "merge": _merge, "make-tiny-model": _tiny, "options": _options,
            "launch": _launch}


def says_why(code: int, environ: Mapping[str, str]) -> bool:
    """Whether this process prints the one-line reason of its exit `code`.

    Under torchrun every rank reads the same options and the same dataset, so a configuration or data
    error is found by all of them: printed by each, one sentence would appear once per rank. Local rank 0
    says it, once per node (on one node: once); the others only exit with the code, which the launcher
    still collects from each (`trainer.outcome`). Any other ending can differ between ranks (a signal, a
    lost peer, a full disk on one node): every rank says its own.
    """
    return code not in SHARED_ERRORS or int(environ.get("LOCAL_RANK", "0") or 0) == 0


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch a subcommand; turn known errors into one-line messages and their exit codes."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(f"usage: higgs-audio-trainer COMMAND [options]\n\n{USAGE}")
        return exitcodes.OK if args else exitcodes.CONFIG_ERROR
    command = COMMANDS.get(args[0])
    if command is None:
        print(f"higgs-audio-trainer: unknown command {args[0]!r}; one of {', '.join(COMMANDS)}", file=sys.stderr)
        return exitcodes.CONFIG_ERROR
    # Every ending is also recorded for the launcher (`trainer.outcome`): torchrun keeps only "failed".
    try:
        code, reason = command(args[1:]), ""
    except (outcome.Stopped, Exception) as err:
        code, reason = outcome.classify(err)
        if code == exitcodes.FAILURE:  # unexpected: the traceback says where
            outcome.record(code, reason)
            raise
    if reason and says_why(code, os.environ):
        print(f"higgs-audio-trainer: {reason}", file=sys.stderr)
    outcome.record(code, reason)
    return code


if __name__ == "__main__":
    sys.exit(main())
