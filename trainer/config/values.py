"""Option values: the table of specs, raw text -> typed value, and the cross-field rules.

`trainer.config.options` declares the options; this module reads them back as specs (flag, env var, default,
help) for the parser, the docs and the chart, and checks a whole configuration.
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from trainer.config.declare import kind_of
from trainer.config.options import COMMAND_GROUPS, GROUPS, Config, ValueKind
from trainer.errors import ConfigError


@dataclass(frozen=True)
class OptionSpec:
    """One option as users see it: flag, env var, YAML key, default and help."""

    name: str
    group: str
    kind: ValueKind
    default: Any
    help: str
    required: bool
    choices: tuple[str, ...] | None
    minimum: float | None
    maximum: float | None
    exclusive_min: bool

    @property
    def flag(self) -> str:
        """The option's command-line flag."""
        return f"--{self.name}"

    @property
    def env(self) -> str:
        """The option's environment variable: its name in upper case."""
        return self.name.upper()

    @property
    def label(self) -> str:
        """How messages name the option: its flag and its env var (`--max_steps / MAX_STEPS`)."""
        return f"{self.flag} / {self.env}"

    def default_text(self) -> str:
        """The default as a user would write it in an env var or on the command line."""
        if self.default is None:
            return ""
        if isinstance(self.default, bool):
            return "true" if self.default else "false"
        if isinstance(self.default, list):
            return ",".join(self.default)
        return str(self.default)


def option_specs(groups: Mapping[str, type] = GROUPS) -> list[OptionSpec]:
    """All options of `groups` (default: those of training, which the chart exposes) in declaration order."""
    specs = []
    for group, cls in groups.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]
            kind, choices = kind_of(hints[f.name])
            spec = OptionSpec(name=f.name, group=group, default=default, kind=kind, choices=choices, **f.metadata)
            _check_default(spec)
            specs.append(spec)
    return specs


def _check_default(spec: OptionSpec) -> None:
    """Fail at import on a default that its own option would refuse, not when a user first leaves it unset.

    Such a default (not among the Literal's choices, a float for an int) is a declaration error.
    """
    if spec.default is None:
        return
    try:
        parsed = parse_value(spec, spec.default, f"the default of {spec.flag}")
    except ConfigError as err:
        raise TypeError(f"{spec.group}.{spec.name}: {err}") from None
    if parsed != spec.default or type(parsed) is not type(spec.default):
        raise TypeError(f"{spec.group}.{spec.name}: default {spec.default!r} is not a {spec.kind} value")


TRUE_WORDS = ("true", "1", "yes", "on")
FALSE_WORDS = ("false", "0", "no", "off")


def label(name: str) -> str:
    """`--name / NAME`, the way messages name an option.

    A name that is no option fails here, so a renamed option cannot leave a message naming its old flag behind.
    """
    try:
        return SPECS[name].label
    except KeyError:
        raise KeyError(f"no option named {name!r}") from None


def parse_value(spec: OptionSpec, raw: Any, source: str) -> Any:
    """Turn one raw value (string from argv/env, or YAML scalar) into the option's type.

    `source` names where the value came from (`--use_lora`, `USE_LORA`, `config.yaml: use_lora`) so
    the error can point at it.
    """

    def fail(expected: str) -> ConfigError:
        return ConfigError(f"{source}: expected {expected}, got {raw!r}")

    if raw is None:
        if spec.default is None or spec.kind in ("path", "str"):
            return None
        raise fail(_expected(spec))
    kind = spec.kind
    if kind == "bool":
        if isinstance(raw, bool):
            return raw
        word = str(raw).strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
        raise fail("a boolean (true/false, 1/0, yes/no)")
    if kind == "tristate":
        if isinstance(raw, bool):
            return "true" if raw else "false"
        word = str(raw).strip().lower()
        if word == "auto":
            return "auto"
        if word in TRUE_WORDS:
            return "true"
        if word in FALSE_WORDS:
            return "false"
        raise fail("auto or a boolean (true/false, 1/0, yes/no)")
    if kind == "int":
        if isinstance(raw, bool):
            raise fail("an integer")
        try:
            value: Any = int(str(raw).strip())
        except ValueError:
            raise fail("an integer") from None
        return _check_range(spec, value, source, raw)
    if kind == "float":
        if isinstance(raw, bool):
            raise fail("a number")
        try:
            value = float(str(raw).strip())
        except ValueError:
            raise fail("a number") from None
        if not math.isfinite(value):
            raise fail("a finite number")
        return _check_range(spec, value, source, raw)
    if kind == "list":
        items = raw if isinstance(raw, list) else str(raw).split(",")
        items = [str(i).strip() for i in items if str(i).strip()]
        if spec.choices:
            bad = [i for i in items if i not in spec.choices]
            if bad:
                raise fail(f"a comma-separated list of {', '.join(spec.choices)}")
        return items
    if kind == "choice":
        word = str(raw).strip()
        if spec.choices and word not in spec.choices:
            raise fail(f"one of {', '.join(spec.choices)}")
        return word
    if isinstance(raw, (dict, list)):
        raise fail("a single value")
    text = str(raw).strip()
    return text or None


def _expected(spec: OptionSpec) -> str:
    return {"int": "an integer", "float": "a number", "bool": "a boolean"}.get(spec.kind, "a value")


def _check_range(spec: OptionSpec, value: float, source: str, raw: Any) -> float:
    lo, hi = spec.minimum, spec.maximum
    if lo is not None and (value < lo or (spec.exclusive_min and value == lo)):
        word = "greater than" if spec.exclusive_min else "at least"
        raise ConfigError(f"{source}: expected a value {word} {lo:g}, got {raw!r}")
    if hi is not None and value > hi:
        raise ConfigError(f"{source}: expected a value of at most {hi:g}, got {raw!r}")
    return value


ALL_GROUPS: dict[str, type] = {**GROUPS, **COMMAND_GROUPS}
SPECS: dict[str, OptionSpec] = {s.name: s for s in option_specs(ALL_GROUPS)}


def build_config(values: dict[str, Any], required: Collection[str] | None = None) -> Config:
    """Assemble a `Config` from already-parsed values keyed by option name, then validate it.

    Args:
        values (`dict[str, Any]`):
            Already-parsed values keyed by option name.
        required (`Collection[str]`, *optional*):
            The names whose `required` flag counts, for a command that reads only some options; default: all.
    """
    groups: dict[str, dict[str, Any]] = {g: {} for g in ALL_GROUPS}
    for name, value in values.items():
        groups[SPECS[name].group][name] = value
    cfg = Config(**{g: ALL_GROUPS[g](**kw) for g, kw in groups.items()})
    validate(cfg, required)
    return cfg


def first_sentence(text: str) -> str:
    """`text` up to its first full stop followed by a space or the end, the stop included.

    A period inside a name (`config.json`) does not end a sentence, and a message quoting the help must not stop
    mid-parenthesis.
    """
    match = re.search(r"[.!?](?=\s|$)", text)
    return text[: match.end()] if match else text


def check_warmup(warmup_steps: int, run_steps: int, run_source: str) -> None:
    """A warm-up not shorter than the run keeps the learning rate on its ramp to the end.

    The run barely learns and nothing else says so. Checked here when --max_steps sets the length, and by the trainer
    once the epochs and the data have (`run_source` names what set it).
    """
    if warmup_steps >= run_steps > 0:
        raise ConfigError(
            f"{label('warmup_steps')} ({warmup_steps}) is not shorter than the run ({run_steps} optimizer "
            f"steps, from {run_source}): the learning rate would never leave its warm-up ramp; lower "
            "WARMUP_STEPS, or set it to -1 to warm up for WARMUP_RATIO of the run"
        )


def validate(cfg: Config, required: Collection[str] | None = None) -> None:
    """Cross-field rules. Each error names the options involved and how to fix them."""
    for spec in SPECS.values():
        if required is not None and spec.name not in required:
            continue
        if spec.required and getattr(getattr(cfg, spec.group), spec.name) in (None, ""):
            raise ConfigError(f"{spec.label}: required, not set. {first_sentence(spec.help)}")
    t, lora, model = cfg.train, cfg.lora, cfg.model
    if t.load_best_model_at_end and t.evaluates and t.save_steps % t.eval_steps != 0:
        raise ConfigError(
            f"--save_steps ({t.save_steps}) must be a multiple of --eval_steps ({t.eval_steps}) when "
            "--load_best_model_at_end is on: the best model can only be reloaded from a checkpoint saved at "
            "an evaluation step. Set SAVE_STEPS to a multiple of EVAL_STEPS, or turn LOAD_BEST_MODEL_AT_END off."
        )
    if lora.use_lora and (model.freeze_llm or model.freeze_text_embeddings):
        raise ConfigError(
            "--freeze_llm / --freeze_text_embeddings apply to full fine-tuning; with --use_lora every base "
            "weight is already frozen. Drop one of them."
        )
    if cfg.data.min_audio_seconds >= cfg.data.max_audio_seconds:
        raise ConfigError(
            f"{label('min_audio_seconds')} ({cfg.data.min_audio_seconds:g}) must be below "
            f"{label('max_audio_seconds')} ({cfg.data.max_audio_seconds:g}): no clip could pass both"
        )
    if t.max_steps > 0:
        check_warmup(t.warmup_steps, t.max_steps, label("max_steps"))
    if not lora.lora_target_modules:
        raise ConfigError(f"{label('lora_target_modules')}: expected at least one module name")
    targets = lora.lora_target_modules
    if any(t_.startswith("re:") for t_ in targets) and len(targets) != 1:
        raise ConfigError(
            f"{label('lora_target_modules')}: a 're:' regular expression must be the only entry"
        )
    check_fsdp(cfg)
    if t.resume not in ("auto", "never") and not t.resume.strip():
        raise ConfigError(f"{label('resume')}: expected auto, never or a checkpoint path")


def check_fsdp(cfg: Config) -> None:
    """What `--fsdp` cannot honour, as one error naming the options involved."""
    t, s = cfg.train, cfg.samples
    if t.fsdp_cpu_offload and not t.fsdp:
        raise ConfigError(f"{label('fsdp_cpu_offload')}: applies to FSDP only; set {label('fsdp')} to true or drop it")
    if t.fsdp and (s.sample_steps or s.sample_at_checkpoints):
        # Rank 0 synthesizes alone while the others wait; a sharded model's forward needs every rank.
        raise ConfigError(
            f"{label('fsdp')}: samples while training ({label('sample_steps')}, {label('sample_at_checkpoints')}) "
            "are synthesized by rank 0 alone, which a sharded model cannot do; turn them off, or synthesize "
            "from the checkpoints afterwards (higgs-audio-trainer synthesize)"
        )


def run_name(cfg: Config) -> str:
    """The run's name in logs and metrics: `--run_name`, else the output directory's name."""
    if cfg.train.run_name:
        return cfg.train.run_name
    from pathlib import Path

    return Path(cfg.train.output_dir or ".").resolve().name
