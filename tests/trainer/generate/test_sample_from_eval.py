"""SAMPLE_FROM_EVAL on the seed scripts' community layout (reference audio inside the user turn, start_index 0),
with one, two and no reference clips in one evaluation file: a real run samples each, with its own text and
reference, instead of failing with an IndexError after the model has loaded."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import clean_env, to_argv
from tests.trainer.datafiles import DEMO, write_json
from trainer.commands.train import main as train_main
from trainer.config.cli import parse_train_args

A, B, C = (DEMO / "audio" / "us_male" / f"0{i}.flac" for i in range(3))


def _turns(refs: list[tuple[str, Path]], text: str, target: Path) -> list[dict]:
    content: list[dict] = []
    for ref_text, path in refs:
        content += [{"type": "text", "text": ref_text}, {"type": "audio", "audio_url": str(path)}]
    content.append({"type": "text", "text": "Please speak the following."})
    target_turn = [{"type": "text", "text": text}, {"type": "audio", "audio_url": str(target)}]
    return [{"role": "user", "content": content}, {"role": "assistant", "content": target_turn}]


def test_sample_from_eval_samples_community_layout_with_one_two_and_no_references(base_args, tmp_path) -> None:
    eval_file = write_json(tmp_path / "eval.json", [
        {"messages": _turns([("First reference.", A)], "One reference here.", B), "start_index": 0},
        {"messages": _turns([("First reference.", A), ("Second reference.", C)], "Two references here.", B),
         "start_index": 0},
        {"messages": [{"role": "user", "content": "No reference here."},
                      {"role": "assistant", "content": {"type": "audio", "audio_url": str(B)}}]},
    ])
    args = base_args | {"disable_eval": "false", "eval_data_file": str(eval_file), "eval_steps": "100",
                        "max_steps": "2", "save_steps": "2", "sample_steps": "2", "sample_from_eval": "3",
                        "sample_max_audio_seconds": "0.3"}
    train_main(parse_train_args(to_argv(args), clean_env()))
    index = Path(args["output_dir"]) / "samples" / "step-2" / "samples.jsonl"
    rows = [json.loads(x) for x in index.read_text().splitlines()]
    assert [(r["id"], r["text"], r["reference_audio"], r["reference_text"]) for r in rows] == [
        ("eval-eval-0", "One reference here.", str(A), "First reference."),
        ("eval-eval-1", "Two references here.", str(C), "Second reference."),
        ("eval-eval-2", "No reference here.", None, None),
    ]
    assert all((index.parent / r["file"]).is_file() for r in rows)
