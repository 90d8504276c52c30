"""Command line, environment and YAML file -> `Config`: the only place that reads argv and os.environ.

Precedence, lowest to highest: built-in default < YAML file (`--config FILE` / `CONFIG`) < environment
variable (the upper-case option name, `USE_LORA`) < command-line flag (`--use_lora`). An empty environment
variable counts as unset, so a chart can always render every variable. Every error names the flag, the
variable or the file and key, and says what was expected.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from trainer.config.options import Config
from trainer.config.values import SPECS, OptionSpec, build_config, option_specs, parse_value
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


def build_parser(prog: str = "higgs-audio-trainer train") -> argparse.ArgumentParser:
    """The `train` parser: one flag per option; its help shows the env var and the default."""
    parser = _Parser(
        prog=prog,
        description="Fine-tune Higgs Audio v2. Every flag can also be set by the environment variable shown "
        "(precedence: flag > env var > --config YAML > default). Booleans take true/false/1/0/yes/no; a "
        "bare boolean flag means true.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        add_help=True,
    )
    parser.add_argument(
        "--config", metavar="FILE", default=None, help=f"YAML file of option: value pairs [env: {CONFIG_ENV}]"
    )
    groups: dict[str, argparse._ArgumentGroup] = {}
    for spec in option_specs():
        group = groups.setdefault(spec.group, parser.add_argument_group(f"{spec.group} options"))
        default = spec.default_text()
        suffix = f"[env: {spec.env}]" + (f" (default: {default})" if default else "")
        if spec.required:
            suffix += " (required)"
        kwargs: dict[str, Any] = {"default": argparse.SUPPRESS, "metavar": _metavar(spec), "dest": spec.name}
        if spec.kind == "bool":
            kwargs.update(nargs="?", const="true")
        group.add_argument(spec.flag, help=f"{spec.help} {suffix}".replace("%", "%%"), **kwargs)
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
    ns = vars(build_parser().parse_args(list(argv)))
    config_file = ns.pop("config", None) or environ.get(CONFIG_ENV) or None
    values: dict[str, Any] = {}
    if config_file:
        values.update(load_yaml(config_file))
    for spec in SPECS.values():
        raw = environ.get(spec.env)
        if raw is not None and raw.strip() != "":
            values[spec.name] = parse_value(spec, raw, f"environment variable {spec.env}")
    for name, raw in ns.items():
        values[name] = parse_value(SPECS[name], raw, SPECS[name].flag)
    cfg = build_config(values)
    check_paths(cfg)
    return cfg


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
            raise ConfigError(f"{spec.flag} / {spec.env}: path does not exist: {value}")
        if kind == "dir" and not path.is_dir():
            raise ConfigError(f"{spec.flag} / {spec.env}: expected a directory, got a file: {value}")
    resume = cfg.train.resume
    if resume not in ("auto", "never") and not Path(resume).is_dir():
        raise ConfigError(
            f"--resume / RESUME: expected auto, never or an existing checkpoint directory, got {resume!r}"
        )


def options_markdown() -> str:
    """The option table of docs/options.md, generated from the option declarations."""
    rows = ["| flag | env var | default | meaning |", "| --- | --- | --- | --- |"]
    for spec in option_specs():
        default = spec.default_text() or ("(required)" if spec.required else "(unset)")
        text = spec.help.replace("|", "\\|")
        if spec.choices and spec.kind in ("choice", "list"):
            text += f" One of: {', '.join(spec.choices)}."
        rows.append(f"| `{spec.flag}` | `{spec.env}` | `{default}` | {text} |")
    return "\n".join(rows) + "\n"
