"""Two real `torchrun` ranks share one dataset index: local rank 0 builds it once, both read it, a later run
reuses it, and a resumed run trains the same batches, in the same order, as one that was never interrupted."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import clean_env
from tests.processes import torchrun_probe

pytestmark = pytest.mark.slow
PROBE = Path(__file__).with_name("index_probe.py")


def _run(base_args: dict[str, str], probe_dir: Path, **over: str) -> list[dict]:
    values = base_args | {"per_device_train_batch_size": "2", "group_by_length": "true", "save_steps": "2",
                          "logging_steps": "1"} | over
    env = clean_env(**{k.upper(): v for k, v in values.items()}, OMP_NUM_THREADS="1")
    return torchrun_probe(PROBE, env, probe_dir)


def _indexes(cache: Path) -> list[Path]:
    return sorted(p for p in cache.glob("*/index/*") if p.is_dir() and p.suffix != ".parts")


def test_two_ranks_share_one_index_and_a_resumed_run_trains_the_same_batches(base_args, tmp_path) -> None:
    cache = tmp_path / "cache"
    args = base_args | {"cache_dir": str(cache)}
    whole = _run(args | {"output_dir": str(tmp_path / "whole"), "max_steps": "4"}, tmp_path / "p-whole")
    built = _indexes(cache)
    assert len(built) == 1  # one index for both ranks, no temporary directory left
    assert whole[0]["index"] == whole[1]["index"] == str(built[0])
    meta = (built[0] / "meta.json").stat()
    assert len(whole[0]["batches"]) == len(whole[1]["batches"]) == 4
    assert whole[0]["batches"] != whole[1]["batches"]  # each rank its own share of every step

    out = tmp_path / "resumed"
    first = _run(args | {"output_dir": str(out), "max_steps": "2"}, tmp_path / "p-first")
    rest = _run(args | {"output_dir": str(out), "max_steps": "4"}, tmp_path / "p-rest")
    for r in (0, 1):
        assert first[r]["batches"] == whole[r]["batches"][:2]
        assert rest[r]["batches"] == whole[r]["batches"][2:]  # resumed at step 2: steps 3 and 4, same order
    after = (built[0] / "meta.json").stat()
    assert _indexes(cache) == built and (after.st_ino, after.st_mtime_ns) == (meta.st_ino, meta.st_mtime_ns)
