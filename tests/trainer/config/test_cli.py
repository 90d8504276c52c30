"""Options from flags, environment and YAML: precedence, parsing, and errors that name the field."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import clean_env, to_argv
from trainer.config.cli import build_parser, parse_train_args
from trainer.config.values import option_specs
from trainer.errors import ConfigError


def test_every_option_has_an_env_var_named_after_its_flag() -> None:
    for spec in option_specs():
        assert spec.env == spec.name.upper()
        assert spec.flag == f"--{spec.name}"


def test_help_lists_every_option_with_its_env_var() -> None:
    text = " ".join(build_parser().format_help().split())  # undo argparse's line wrapping
    for spec in option_specs():
        assert spec.flag in text
        assert f"[env: {spec.env}]" in text


def test_the_old_scripts_flags_are_accepted() -> None:
    old = ["model_path", "audio_tokenizer_path", "train_data_file", "eval_data_file", "validation_split", "output_dir",
           "num_train_epochs", "per_device_train_batch_size", "learning_rate", "warmup_steps", "logging_steps",
           "save_steps", "eval_steps", "use_lora", "lora_rank", "lora_alpha", "lora_dropout", "seed", "bf16",
           "report_to", "disable_eval", "freeze_llm", "max_steps", "gradient_accumulation_steps",
           "gradient_checkpointing", "save_total_limit", "lora_target_modules", "resume"]
    names = {s.name for s in option_specs()}
    assert set(old) <= names


def test_environment_alone_configures_a_run(base_args: dict[str, str]) -> None:
    env = {k.upper(): v for k, v in base_args.items()}
    cfg = parse_train_args([], env)
    assert cfg.lora.use_lora is True
    assert cfg.train.disable_eval is True
    assert cfg.train.max_steps == 20
    assert cfg.model.model_path == base_args["model_path"]


def test_precedence_flag_over_env_over_yaml_over_default(base_args: dict[str, str], tmp_path: Path) -> None:
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text("lora_rank: 4\nlora_alpha: 8\nlora_dropout: 0.2\n")
    env = {k.upper(): v for k, v in base_args.items()}
    env.update({"LORA_ALPHA": "16", "LORA_DROPOUT": "0.3", "CONFIG": str(yaml_file)})
    cfg = parse_train_args(["--lora_dropout", "0.4"], env)
    assert cfg.lora.lora_rank == 4  # YAML over default (16)
    assert cfg.lora.lora_alpha == 16.0  # env over YAML
    assert cfg.lora.lora_dropout == 0.4  # flag over env
    assert cfg.lora.lora_target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"]  # default


def test_empty_env_var_counts_as_unset(base_args: dict[str, str]) -> None:
    env = {k.upper(): v for k, v in base_args.items()} | {"EVAL_DATA_FILE": "", "LORA_RANK": " "}
    cfg = parse_train_args([], env)
    assert cfg.data.eval_data_file is None
    assert cfg.lora.lora_rank == 16


@pytest.mark.parametrize("word,value", [("true", True), ("1", True), ("yes", True), ("YES", True),
                                        ("false", False), ("0", False), ("no", False)])
def test_booleans_accept_common_words(base_args: dict[str, str], word: str, value: bool) -> None:
    env = {k.upper(): v for k, v in base_args.items()} | {"USE_LORA": word}
    assert parse_train_args([], env).lora.use_lora is value


def test_bare_boolean_flag_means_true(base_args: dict[str, str]) -> None:
    env = {k.upper(): v for k, v in base_args.items() if k != "disable_eval"}
    assert parse_train_args(["--disable_eval"], env).train.disable_eval is True
    assert parse_train_args(["--disable_eval", "no"], env).train.disable_eval is False


def test_lora_target_modules_list_and_regex(base_args: dict[str, str]) -> None:
    env = {k.upper(): v for k, v in base_args.items()}
    cfg = parse_train_args(["--lora_target_modules", "q_proj, v_proj"], env)
    assert cfg.lora.lora_target_modules == ["q_proj", "v_proj"]
    cfg = parse_train_args(["--lora_target_modules", r"re:.*audio_mlp\.(gate|up|down)_proj"], env)
    assert cfg.lora.lora_target_modules == [r"re:.*audio_mlp\.(gate|up|down)_proj"]


BAD = [
    ({"USE_LORA": "maybe"}, [], "USE_LORA"),
    ({"LORA_RANK": "four"}, [], "LORA_RANK"),
    ({"LORA_RANK": "0"}, [], "LORA_RANK"),
    ({"LORA_DROPOUT": "1.5"}, [], "LORA_DROPOUT"),
    ({"LEARNING_RATE": "nan"}, [], "LEARNING_RATE"),
    ({"MAX_STEPS": "1.5"}, [], "MAX_STEPS"),
    ({}, ["--validation_split", "-0.1"], "--validation_split"),
    ({}, ["--bf16", "sometimes"], "--bf16"),
    ({}, ["--lr_scheduler_type", "wavy"], "--lr_scheduler_type"),
    ({}, ["--lora_modules_to_save", "audio_head,text_head"], "--lora_modules_to_save"),
    ({}, ["--no_such_flag", "1"], "--no_such_flag"),
    ({"MODEL_PATH": "/nonexistent/model"}, [], "MODEL_PATH"),
    ({"TRAIN_DATA_FILE": "/nonexistent/data.json"}, [], "TRAIN_DATA_FILE"),
    ({"RESUME": "/nonexistent/checkpoint-5"}, [], "RESUME"),
    ({"LOAD_BEST_MODEL_AT_END": "true", "DISABLE_EVAL": "false", "SAVE_STEPS": "7000", "EVAL_STEPS": "5000"}, [],
     "--save_steps"),
    ({"FREEZE_LLM": "true"}, [], "--freeze_llm"),
    ({"MIN_AUDIO_SECONDS": "-0.1"}, [], "MIN_AUDIO_SECONDS"),
    ({"MIN_AUDIO_SECONDS": "5", "MAX_AUDIO_SECONDS": "5"}, [], "--min_audio_seconds / MIN_AUDIO_SECONDS (5) must be "
     "below --max_audio_seconds / MAX_AUDIO_SECONDS (5)"),
]


@pytest.mark.parametrize("env_over,argv,named", BAD, ids=[b[2] + str(i) for i, b in enumerate(BAD)])
def test_bad_values_raise_an_error_naming_the_field(
    base_args: dict[str, str], env_over: dict[str, str], argv: list[str], named: str
) -> None:
    env = {k.upper(): v for k, v in base_args.items()} | env_over
    with pytest.raises(ConfigError) as err:
        parse_train_args(argv, env)
    assert named in str(err.value)


def test_missing_required_option_names_flag_and_env(base_args: dict[str, str]) -> None:
    env = {k.upper(): v for k, v in base_args.items() if k != "model_path"}
    with pytest.raises(ConfigError, match=r"--model_path / MODEL_PATH: required"):
        parse_train_args([], env)


def test_unknown_yaml_key_names_the_file_and_key(base_args: dict[str, str], tmp_path: Path) -> None:
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("lora_rnak: 8\n")
    env = {k.upper(): v for k, v in base_args.items()}
    with pytest.raises(ConfigError, match=r"c\.yaml: unknown key 'lora_rnak'.*lora_rank"):
        parse_train_args(["--config", str(cfg_file)], env)


def test_bad_yaml_value_names_the_file_and_key(base_args: dict[str, str], tmp_path: Path) -> None:
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("use_lora: perhaps\n")
    env = {k.upper(): v for k, v in base_args.items()}
    with pytest.raises(ConfigError, match=r"c\.yaml: use_lora: expected a boolean"):
        parse_train_args(["--config", str(cfg_file)], env)


def _run_cli(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trainer", "train", *argv], env=clean_env(**env),
                          capture_output=True, text=True, timeout=120)


def test_cli_bad_env_value_exits_2_before_loading_anything(base_args: dict[str, str]) -> None:
    # The flag wins over the env var, so pass the bad value through the environment only.
    proc = _run_cli(to_argv({k: v for k, v in base_args.items() if k != "use_lora"}), {"USE_LORA": "maybe"})
    assert proc.returncode == 2, proc.stderr
    assert "USE_LORA" in proc.stderr and "maybe" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not Path(base_args["output_dir"]).exists()  # nothing ran


def test_cli_model_dir_in_original_format_is_rejected_with_what_was_found(
    base_args: dict[str, str], tmp_path: Path
) -> None:
    boson = tmp_path / "boson"
    boson.mkdir()
    (boson / "config.json").write_text(json.dumps({"model_type": "higgs_audio", "audio_tokenizer_type": "x"}))
    (boson / "model.safetensors").write_bytes(b"")
    proc = _run_cli(to_argv(base_args | {"model_path": str(boson)}), {})
    assert proc.returncode == 2, proc.stderr
    assert "model_type 'higgs_audio'" in proc.stderr and "'higgs_audio_v2'" in proc.stderr
    assert "original" in proc.stderr


def test_cli_directory_without_config_lists_what_it_holds(base_args: dict[str, str], tmp_path: Path) -> None:
    d = tmp_path / "weights_only"
    d.mkdir()
    (d / "pytorch_model.bin").write_bytes(b"")
    proc = _run_cli(to_argv(base_args | {"audio_tokenizer_path": str(d)}), {})
    assert proc.returncode == 2
    assert "AUDIO_TOKENIZER_PATH" in proc.stderr and "pytorch_model.bin" in proc.stderr


def test_cli_help_exits_0_and_documents_env_vars() -> None:
    proc = subprocess.run([sys.executable, "-m", "trainer", "train", "--help"], capture_output=True, text=True,
                          env=clean_env(), timeout=60)
    assert proc.returncode == 0
    assert "[env: DISABLE_EVAL]" in proc.stdout and "[env: USE_LORA]" in proc.stdout
