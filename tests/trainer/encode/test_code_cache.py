"""The code cache: keyed by content and tokenizer, filled once, and the `prepare` command."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.conftest import DEMO_DATA, clean_env, to_argv
from trainer.data.samples import Clip
from trainer.encode.code_cache import CodeCache, clip_key, file_digest, fill_cache, tokenizer_identity


def test_cache_round_trip_leaves_no_temporary_files(tmp_path) -> None:
    cache = CodeCache(tmp_path, "abc")
    codes = np.arange(12).reshape(2, 6)
    cache.put("ff" * 32, codes)
    assert np.array_equal(cache.get("ff" * 32), codes)
    assert cache.get("00" * 32) is None
    assert not [p for p in tmp_path.rglob(".tmp-*")]


def test_identity_changes_with_the_tokenizer_weights(tiny_ckpt, tmp_path) -> None:
    copy = tmp_path / "codec"
    shutil.copytree(tiny_ckpt[1], copy)
    before = tokenizer_identity(copy)
    assert before == tokenizer_identity(tiny_ckpt[1])
    with open(copy / "model.safetensors", "r+b") as f:
        f.seek(-4, 2)
        f.write(b"\x00\x01\x02\x03")
    assert tokenizer_identity(copy) != before


def test_fill_cache_encodes_only_what_is_missing_and_keys_by_content(tiny_ckpt, tmp_path) -> None:
    from transformers import HiggsAudioV2TokenizerModel

    clips = sorted((DEMO_DATA.parent / "audio").rglob("*.flac"))[:3]
    copy = tmp_path / "renamed.flac"
    shutil.copy(clips[0], copy)  # same bytes under another name: same entry
    paths = [str(p) for p in [*clips, copy]]
    digests = {p: file_digest(p) for p in paths}
    keys = {Clip(p): clip_key(Clip(p), digests[p]) for p in paths}
    cache = CodeCache(tmp_path / "cache", tokenizer_identity(tiny_ckpt[1]))
    loads = []

    def load():
        loads.append(1)
        return HiggsAudioV2TokenizerModel.from_pretrained(tiny_ckpt[1]).eval()

    assert fill_cache(list(keys), cache, load, sample_rate=24000, keys=keys, progress=False) == (3, [])
    assert fill_cache(list(keys), cache, load, sample_rate=24000, keys=keys, progress=False) == (0, [])
    assert len(loads) == 1  # a warm cache loads no model
    codes = cache.get(digests[str(clips[0])])
    assert codes.shape[0] == 2 and 20 < codes.shape[1] < 80  # 2 codebooks, 25 frames/s of a 1-3 s clip


def test_prepare_command_reports_counts_and_fills_the_cache(base_args, tmp_path) -> None:
    args = base_args | {"cache_dir": str(tmp_path / "cache"), "disable_eval": "false", "validation_split": "0.1"}
    proc = subprocess.run([sys.executable, "-m", "trainer", "prepare", *to_argv(args)], env=clean_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "'train_samples': 25" in proc.stdout and "'eval_samples': 3" in proc.stdout
    entries = [p for p in Path(tmp_path / "cache").rglob("*.npy") if "index" not in p.relative_to(tmp_path).parts]
    assert len(entries) == 28
    # and the dataset index beside the entries, of all 28 samples (the validation split is drawn when training)
    indexes = list(Path(tmp_path / "cache").glob("*/index/*/meta.json"))
    assert len(indexes) == 1 and json.loads(indexes[0].read_text())["samples"] == 28
