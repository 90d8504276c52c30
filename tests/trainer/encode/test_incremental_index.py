"""A rebuilt index renders only the parts of the data that are new or changed, and equals a build from scratch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.trainer.datafiles import demo_pairs
from tests.trainer.encode.test_sample_index import assert_same_batches, batches, parts, prepared  # noqa: F401
from trainer.encode.part_store import TEMP_PREFIX

CHUNK = 2  # conversations a part holds in these tests: six samples are three parts


def _lines(pairs: list[tuple[str, Path]]) -> list[str]:
    return [json.dumps({"audio": str(p), "text": t}) for t, p in pairs]


def _stored(cache: Path) -> dict[str, int]:  # a cache of the test's own: one data file, one store
    """Each stored part's name and inode: a part rewritten is a new file."""
    (store,) = cache.glob("*/index/*.parts")
    return {p.name: p.stat().st_ino for p in store.iterdir()}


@pytest.fixture
def rendered(monkeypatch) -> list[int]:
    """How many conversations each chunk rendered in this process had (the build renders in-process here)."""
    from trainer.encode import index_build
    from trainer.encode.index_chunks import ChunkRenderer

    monkeypatch.setattr(index_build, "CHUNK", CHUNK)
    counts: list[int] = []
    original = ChunkRenderer.chunk

    def counting(self, convs):
        counts.append(len(convs))
        return original(self, convs)

    monkeypatch.setattr(ChunkRenderer, "chunk", counting)
    return counts


def test_a_rebuild_renders_only_appended_and_edited_parts_and_equals_the_in_memory_samples(
        parts, tmp_path, rendered) -> None:  # noqa: F811
    data, code_cache = tmp_path / "train.jsonl", tmp_path / "cache"
    lines = _lines(demo_pairs()[:6])
    data.write_text("\n".join(lines) + "\n")
    opts = {"disable_eval": "true", "prepare_workers": "1"}
    prepared(parts, data, code_cache, tmp_path / "a", **opts)
    assert rendered == [2, 2, 2]
    first = _stored(code_cache)
    assert len(first) == 3

    rendered.clear()  # two samples appended: one new part, the three before loaded
    data.write_text("\n".join(lines + _lines(demo_pairs()[6:8])) + "\n")
    appended, layout = prepared(parts, data, code_cache, tmp_path / "b", **opts)
    assert rendered == [2]
    after_append = _stored(code_cache)
    assert len(after_append) == 4 and all(after_append[name] == inode for name, inode in first.items())
    memory, _ = prepared(parts, data, code_cache, tmp_path / "m", data_index="false", **opts)
    assert len(appended.train) == 8
    assert_same_batches(batches(memory.train, layout), batches(appended.train, layout))

    rendered.clear()  # the third sample's text edited: its part alone is rendered again, the old one removed
    edited = [*lines, *_lines(demo_pairs()[6:8])]
    edited[2] = json.dumps({"audio": str(demo_pairs()[2][1]), "text": "Another sentence for this clip."})
    data.write_text("\n".join(edited) + "\n")
    again, _ = prepared(parts, data, code_cache, tmp_path / "c", **opts)
    assert rendered == [2]
    after_edit = _stored(code_cache)
    assert len(after_edit) == 4 and len(set(after_edit) - set(after_append)) == 1
    memory, _ = prepared(parts, data, code_cache, tmp_path / "n", data_index="false", **opts)
    assert_same_batches(batches(memory.train, layout), batches(again.train, layout))


def test_an_option_that_changes_the_samples_renders_every_part_again(parts, tmp_path, rendered) -> None:  # noqa: F811
    data, code_cache = tmp_path / "train.jsonl", tmp_path / "cache"
    data.write_text("\n".join(_lines(demo_pairs()[:4])) + "\n")
    prepared(parts, data, code_cache, tmp_path / "a", disable_eval="true", prepare_workers="1")
    rendered.clear()
    prepared(parts, data, code_cache, tmp_path / "b", disable_eval="true", prepare_workers="1",
             system_prompt="Speak slowly.")
    assert rendered == [2, 2]
    assert len(_stored(code_cache)) == 2  # the parts of the old prompt are gone


def test_parts_rendered_by_forked_workers_are_kept_and_reused(parts, tmp_path, monkeypatch) -> None:  # noqa: F811
    """The workers save the parts; the builder must still count them as its own, or it would remove them."""
    from trainer.encode import index_build

    monkeypatch.setattr(index_build, "CHUNK", CHUNK)
    data, code_cache = tmp_path / "train.jsonl", tmp_path / "cache"
    lines = _lines(demo_pairs()[:6])
    data.write_text("\n".join(lines) + "\n")
    opts = {"disable_eval": "true", "prepare_workers": "2"}
    prepared(parts, data, code_cache, tmp_path / "a", **opts)
    first = _stored(code_cache)
    assert len(first) == 3
    (next(code_cache.glob("*/index/*.parts")) / f"{TEMP_PREFIX}killed.npz").write_bytes(b"half a part")
    data.write_text("\n".join(lines + _lines(demo_pairs()[6:8])) + "\n")
    again, layout = prepared(parts, data, code_cache, tmp_path / "b", **opts)
    after = _stored(code_cache)
    assert len(after) == 4 and all(after[name] == inode for name, inode in first.items())  # reused, not rewritten
    memory, _ = prepared(parts, data, code_cache, tmp_path / "m", data_index="false", **opts)
    assert_same_batches(batches(memory.train, layout), batches(again.train, layout))
