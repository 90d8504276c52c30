"""Every output follows the process umask, as a plain `save_pretrained` would (issue 12).

Outputs written under a temporary name and renamed into place (the final adapter, checkpoint markers, code-cache
entries, a merged model) used to keep `tempfile`'s private modes, 0600 and 0700, so an inference pod sharing the
volume through `fsGroup` could not read the adapter. A real run of the tiny model, in this process, under umask
022 and 002: every file and directory below OUTPUT_DIR must have the mode a plain `open()` / `mkdir()` gives.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from trainer import fsmode
from trainer.commands.merge import merge
from trainer.commands.train import build, save_final
from trainer.config.cli import parse_train_args
from trainer.train.checkpoint import MARKER


@pytest.fixture(params=[0o022, 0o002], ids=["umask-022", "umask-002"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    """The process umask for the test's duration, put back afterwards."""
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


def _manifest(tmp_path: Path) -> Path:
    """Three clips of the bundled speech: few enough that encoding a fresh code cache takes a second."""
    from tests.conftest import DEMO_DATA

    clips = sorted((DEMO_DATA.parent / "audio").rglob("*.flac"))[:3]
    path = tmp_path / "data.jsonl"
    lines = [json.dumps({"audio": str(clip), "text": f"Sentence {i}."}) for i, clip in enumerate(clips)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _wrong_modes(root: Path, umask: int) -> dict[str, str]:
    """Every entry below `root` (and `root` itself) whose permission bits differ from what `open()` or `mkdir()`
    would give under `umask`: relative path -> "found, expected"."""
    wrong = {}
    for p in [root, *sorted(root.rglob("*"))]:
        mode = stat.S_IMODE(p.lstat().st_mode)
        expected = (0o777 if p.is_dir() else 0o666) & ~umask
        if mode != expected:
            wrong[p.relative_to(root).as_posix() or "."] = f"{mode:o}, expected {expected:o}"
    return wrong


def test_checkpoints_final_adapter_code_cache_and_merged_model_follow_the_umask(base_args, tmp_path, umask) -> None:
    args = {k: v for k, v in base_args.items() if k != "cache_dir"}  # the code cache under OUTPUT_DIR
    args |= {"train_data_file": str(_manifest(tmp_path)), "max_steps": "3", "save_steps": "2", "logging_steps": "1"}
    cfg = parse_train_args([], {k.upper(): v for k, v in args.items()})
    out = Path(cfg.train.output_dir)

    trainer, tokenizer, resume = build(cfg)
    trainer.train(resume_from_checkpoint=resume)
    save_final(trainer, cfg, tokenizer)
    merge(cfg.model.model_path, str(out / "lora_adapters"), str(out / "merged"))

    written = {p.relative_to(out).as_posix() for p in out.rglob("*")}
    # What used to come out 0600 or 0700 is there to be checked: the outputs renamed into place.
    assert {"lora_adapters", "lora_adapters/adapter_model.safetensors", f"checkpoint-2/{MARKER}", "merged",
            "merged/model.safetensors"} <= written, sorted(written)
    assert any(name.startswith("code_cache/") and name.endswith(".npy") for name in written), sorted(written)
    assert _wrong_modes(out, umask) == {}


def test_temporary_names_get_the_modes_of_open_and_mkdir(tmp_path, umask) -> None:
    fd, file = fsmode.temp_file(tmp_path, ".marker-", ".json")
    os.close(fd)
    directory = fsmode.temp_dir(tmp_path, ".lora_adapters.tmp-")
    plain_file, plain_dir = tmp_path / "plain.json", tmp_path / "plain"
    plain_file.touch()
    plain_dir.mkdir()

    assert file.name.startswith(".marker-") and file.name.endswith(".json")
    assert stat.S_IMODE(file.stat().st_mode) == stat.S_IMODE(plain_file.stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE(directory.stat().st_mode) == stat.S_IMODE(plain_dir.stat().st_mode) == 0o777 & ~umask


def test_a_file_a_writer_made_private_is_widened_to_the_umask_and_nothing_is_ever_narrowed(tmp_path, umask) -> None:
    private, wide, directory = tmp_path / "adapter_model.safetensors", tmp_path / "shared.json", tmp_path / "d"
    private.touch()
    private.chmod(0o600)  # what safetensors' writer leaves
    wide.touch()
    wide.chmod(0o666)  # wider than the umask allows: set on purpose, or by a default ACL
    directory.mkdir()
    directory.chmod(0o700)

    assert fsmode.current_umask() == umask
    for path in (private, wide, directory):
        fsmode.widen_to_umask(path)

    assert stat.S_IMODE(private.stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE(wide.stat().st_mode) == 0o666
    assert stat.S_IMODE(directory.stat().st_mode) == 0o777 & ~umask
