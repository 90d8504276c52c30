"""The store of rendered index parts: whole parts or nothing, keys that change with every input, one build kept."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.encode.part_store import TEMP_PREFIX, PartStore, part_key


def columns(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"tokens": rng.integers(0, 1000, 50, dtype=np.int32), "offsets": np.arange(6, dtype=np.int64) * 10,
            "flags": rng.integers(0, 2, 7).astype(np.bool_)}


def test_a_saved_part_loads_back_column_for_column(tmp_path) -> None:
    store = PartStore(tmp_path / "parts")
    saved = columns(0)
    store.save("k1", saved)
    loaded = PartStore(tmp_path / "parts").load("k1")
    assert loaded is not None and sorted(loaded) == sorted(saved)
    for name, array in saved.items():
        assert loaded[name].dtype == array.dtype and np.array_equal(loaded[name], array), name
    assert PartStore(tmp_path / "parts").load("k2") is None


def test_the_key_changes_with_the_identity_any_input_and_where_the_inputs_are_cut() -> None:
    base = part_key("tok-a", [b"one", b"two"])
    assert part_key("tok-a", [b"one", b"two"]) == base
    assert part_key("tok-b", [b"one", b"two"]) != base
    assert part_key("tok-a", [b"one", b"twO"]) != base
    assert part_key("tok-a", [b"two", b"one"]) != base
    assert part_key("tok-a", [b"on", b"etwo"]) != base  # the same bytes cut elsewhere are other conversations
    assert part_key("tok-a", [b"one"]) != base


@pytest.mark.parametrize("damage", [b"", b"PK\x03\x04 not a whole archive", b"\x93NUMPY garbage"])
def test_an_unreadable_part_is_rendered_again_and_removed(tmp_path, caplog, damage) -> None:
    store = PartStore(tmp_path)
    store.save("k", columns(1))
    store.path("k").write_bytes(damage)
    assert PartStore(tmp_path).load("k") is None
    assert not store.path("k").exists()
    assert "is unreadable" in caplog.text


def test_a_save_that_fails_midway_leaves_no_temporary_file_and_no_part(tmp_path, monkeypatch) -> None:
    """A disk that fills while a part is written (planted: the writer raises after half the bytes)."""
    def half_then_full(f, **_columns) -> None:
        f.write(b"PK\x03\x04 half a part")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", half_then_full)
    store = PartStore(tmp_path)
    with pytest.raises(OSError, match="No space left"):
        store.save("k", columns(1))
    assert list(tmp_path.iterdir()) == []
    assert store.load("k") is None


def test_temporary_files_of_killed_builds_are_removed_and_whole_parts_kept(tmp_path) -> None:
    store = PartStore(tmp_path)
    store.save("k", columns(2))
    (tmp_path / f"{TEMP_PREFIX}dead.npz").write_bytes(b"half")
    store.remove_temporary()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.npz"]


def test_after_a_build_only_the_parts_it_loaded_or_saved_remain(tmp_path) -> None:
    first = PartStore(tmp_path)
    for k in ("a", "b", "c"):
        first.save(k, columns(3))
    second = PartStore(tmp_path)
    assert second.load("a") is not None
    second.save("d", columns(4))
    second.keep_only_used()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz", "d.npz"]
