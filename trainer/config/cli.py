"""Command line, environment and YAML file -> `Config`: the only place that reads argv and os.environ.

Precedence, lowest to highest: built-in default < YAML file (`--config FILE` / `CONFIG`) < environment
variable (the upper-case option name, `USE_LORA`) < command-line flag (`--use_lora`). An empty environment
variable counts as unset, so a chart can always render every variable. Every error names the flag, the
variable or the file and key, and says what was expected.
"""

from __future__ import annotations

import argparse
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from trainer.config.options import Config
from trainer.config.values import SPECS, OptionSpec, build_config, label, option_specs, parse_value
from trainer.errors import ConfigError

CONFIG_ENV = "CONFIG"


class _Parser(argparse.ArgumentParser):
    """argparse that raises `ConfigError` instead of exiting, so every config error takes one path."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConfigError(f"command line: {message} (see --help)")


def _metavar(spec: OptionSpec) -> str:
    return {
        "bool": "BOOL",
        "tristate": "auto|BOOL",
        "int": "N",
        "float": "X",
        "list": "A,B,...",
        "path": "PATH",
        "choice": "{" + ",".join(spec.choices or ()) + "}",
    }.get(spec.kind, "TEXT")


COMMON_HELP = (
    "Every flag can also be set by the environment variable shown (precedence: flag > env var > --config YAML > "
    "default). Booleans take true/false/1/0/yes/no; a bare boolean flag means true."
)


def build_parser(
    prog: str = "higgs-audio-trainer train", names: Sequence[str] | None = None, description: str = "",
    hidden: Collection[str] = (),
) -> argparse.ArgumentParser:
    """The parser of `train` (all training options) or of a command that reads only the options `names`.

    One flag per option; its help shows the env var and the default.

    Args:
        prog (`str`, *optional*):
            The command as --help and error messages name it.
        names (`Sequence[str]`, *optional*):
            The options the command reads; default: every training option.
        description (`str`, *optional*):
            The --help text above the options.
        hidden (`Collection[str]`, *optional*):
            Options still accepted but left out of --help (a deprecated spelling, so that a command shows only its
            own options).
    """
    parser = _Parser(
        prog=prog,
        description=(description or "Fine-tune Higgs Audio v2.") + " " + COMMON_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        add_help=True,
        # No prefixes: `train --output x.wav` (synthesize's flag) would otherwise be taken as --output_dir, and a
        # new option could change what an old command line means.
        allow_abbrev=False,
    )
    parser.add_argument(
        "--config", metavar="FILE", default=None, help=f"YAML file of option: value pairs [env: {CONFIG_ENV}]"
    )
    groups: dict[str, argparse._ArgumentGroup] = {}
    specs = option_specs() if names is None else [SPECS[n] for n in names]
    for spec in specs:
        group = groups.setdefault(spec.group, parser.add_argument_group(f"{spec.group} options"))
        default = spec.default_text()
        suffix = f"[env: {spec.env}]" + (f" (default: {default})" if default else "")
        if spec.required:
            suffix += " (required)"
        kwargs: dict[str, Any] = {"default": argparse.SUPPRESS, "metavar": _metavar(spec), "dest": spec.name}
        if spec.kind == "bool":
            kwargs.update(nargs="?", const="true")
        text = argparse.SUPPRESS if spec.name in hidden else f"{spec.help} {suffix}".replace("%", "%%")
        group.add_argument(spec.flag, help=text, **kwargs)
    return parser


def load_yaml(path: str) -> dict[str, Any]:
    """Read a `--config` file: a mapping of option names (flag names without dashes) to values."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--config / {CONFIG_ENV}: file not found: {path}")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of option: value, got {type(data).__name__}")
    values: dict[str, Any] = {}
    for key, raw in data.items():
        name = str(key).replace("-", "_")
        if name not in SPECS:
            close = [n for n in SPECS if n.startswith(name[:4])][:3]
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ConfigError(f"{path}: unknown key {key!r}{hint}; see `higgs-audio-trainer train --help`")
        values[name] = parse_value(SPECS[name], raw, f"{path}: {key}")
    return values


def parse_train_args(argv: Sequence[str], environ: Mapping[str, str]) -> Config:
    """Resolve flags, environment and YAML into a validated `Config`, or raise `ConfigError`."""
    cfg = _resolve(build_parser(), argv, environ, [s.name for s in option_specs()])
    check_paths(cfg)
    return cfg


def parse_command_args(
    argv: Sequence[str], environ: Mapping[str, str], prog: str, names: Sequence[str], description: str,
    required: Sequence[str] = (), hidden: Collection[str] = (),
) -> Config:
    """Like `parse_train_args`, for a command that reads only some of the options.

    The other options keep their defaults.

    Args:
        argv (`Sequence[str]`):
            The command's arguments, after the command name.
        environ (`Mapping[str, str]`):
            The environment its options are read from (upper-case option names).
        prog (`str`):
            The command as --help and error messages name it.
        names (`Sequence[str]`):
            The options the command reads: its flags, their env vars, their YAML keys.
        description (`str`):
            The --help text above the options.
        required (`Sequence[str]`, *optional*):
            The required options that count here (`output_dir`, say, is required for training, not for every
            command that reads it).
        hidden (`Collection[str]`, *optional*):
            Names accepted but not shown in --help.
    """
    return _resolve(build_parser(prog, names, description, hidden), argv, environ, names, required)


def _resolve(parser: argparse.ArgumentParser, argv: Sequence[str], environ: Mapping[str, str],
             names: Sequence[str], required: Sequence[str] | None = None) -> Config:
    ns = vars(parser.parse_args(list(argv)))
    config_file = ns.pop("config", None) or environ.get(CONFIG_ENV) or None
    values: dict[str, Any] = {}
    if config_file:
        values.update({k: v for k, v in load_yaml(config_file).items() if k in names})
    for spec in (SPECS[n] for n in names):
        raw = environ.get(spec.env)
        if raw is not None and raw.strip() != "":
            values[spec.name] = parse_value(spec, raw, f"environment variable {spec.env}")
    for name, raw in ns.items():
        values[name] = parse_value(SPECS[name], raw, SPECS[name].flag)
    return build_config(values, required=names if required is None else required)


def check_paths(cfg: Config) -> None:
    """Inputs must exist before anything heavy starts; the message names the option."""
    checks = [
        ("model_path", cfg.model.model_path, "dir"),
        ("audio_tokenizer_path", cfg.model.audio_tokenizer_path, "dir"),
        ("tokenizer_path", cfg.model.tokenizer_path, "dir"),
        ("train_data_file", cfg.data.train_data_file, "any"),
        ("eval_data_file", cfg.data.eval_data_file, "any"),
    ]
    for name, value, kind in checks:
        if value is None:
            continue
        spec = SPECS[name]
        path = Path(value)
        if not path.exists():
            raise ConfigError(f"{spec.label}: path does not exist: {value}")
        if kind == "dir" and not path.is_dir():
            raise ConfigError(f"{spec.label}: expected a directory, got a file: {value}")
    resume = cfg.train.resume
    if resume not in ("auto", "never") and not Path(resume).is_dir():
        raise ConfigError(
            f"{label('resume')}: expected auto, never or an existing checkpoint directory, got {resume!r}"
        )


def options_markdown(groups: Mapping[str, type] | None = None) -> str:
    """The option table of docs/options.md (training's options; or those of `groups`), from the declarations."""
    rows = ["| flag | env var | default | meaning |", "| --- | --- | --- | --- |"]
    for spec in option_specs() if groups is None else option_specs(groups):
        default = spec.default_text() or ("(required)" if spec.required else "(unset)")
        text = spec.help.replace("|", "\\|")
        if spec.choices and spec.kind in ("choice", "list"):
            text += f" One of: {', '.join(spec.choices)}."
        rows.append(f"| `{spec.flag}` | `{spec.env}` | `{default}` | {text} |")
    return "\n".join(rows) + "\n"
