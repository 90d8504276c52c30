"""Each command shows and accepts its own options: `train --help` and `synthesize --help` share only the options
both commands read for the same purpose, each listed here with the reason."""

from __future__ import annotations

import re

import pytest

from trainer.__main__ import main

# Read by both commands, meaning the same thing in each.
SHARED = {
    "model_path": "the base model both train and speak with",
    "audio_tokenizer_path": "the codec both encode and decode with",
    "tokenizer_path": "the text tokenizer and chat template of both",
    "attn_implementation": "the attention kernel of the one model loader",
    "system_prompt": "the system message of the prompt, which must match training's for the adapter to fit",
    "output_dir": "where each command writes (checkpoints; a batch's clips)",
    "seed": "the seed of dropout and data order, and of sampling",
    "log_level": "the log level of the process",
    "temperature": "sampling, used by synthesize and by the samples taken while training",
    "top_k": "sampling, as temperature",
    "top_p": "sampling, as temperature",
}


def _flags(command: str, capsys: pytest.CaptureFixture[str]) -> set[str]:
    """The option names `command --help` lists (its usage line aside)."""
    with pytest.raises(SystemExit) as stop:
        main([command, "--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    options = text[text.index("options:"):]
    return {m.group(1) for m in re.finditer(r"^  --([a-z0-9_]+)", options, re.M)} - {"help", "config"}


def test_train_and_synthesize_list_disjoint_command_options(capsys: pytest.CaptureFixture[str]) -> None:
    train, synthesize = _flags("train", capsys), _flags("synthesize", capsys)
    assert set(SHARED) <= train & synthesize, "a shared option is missing from one --help; update SHARED"
    assert (train - set(SHARED)) & (synthesize - set(SHARED)) == set()
    assert {"max_steps", "train_data_file", "max_audio_seconds", "use_lora"} <= train - synthesize
    assert {"text", "input", "adapter_path", "max_synthesis_seconds"} <= synthesize - train


def test_train_refuses_an_option_of_synthesize(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--input", "prompts.jsonl"]) == 2
    assert "unrecognized arguments: --input" in capsys.readouterr().err


def test_a_flag_of_synthesize_is_not_taken_as_a_prefix_of_a_train_flag(capsys: pytest.CaptureFixture[str]) -> None:
    """`--output` is synthesize's; argparse would read it as train's --output_dir."""
    assert main(["train", "--output", "out.wav"]) == 2
    assert "unrecognized arguments: --output out.wav" in capsys.readouterr().err
