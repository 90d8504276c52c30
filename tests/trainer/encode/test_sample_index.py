"""The dataset index gives the same batches as the in-memory samples on every input format, is reused while
current and rebuilt when stale; its sampler draws transformers' own length-grouped order."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from tests.conftest import DEMO_DATA
from tests.trainer.data.corpora import speak
from tests.trainer.data.test_corpora import _commonvoice, _hf_dataset, _libritts
from tests.trainer.datafiles import demo_pairs, write_jsonl
from trainer.config.cli import parse_train_args
from trainer.encode.collator import Collator, Layout, SampleDataset
from trainer.encode.length_groups import LengthGroupedOrder


@pytest.fixture(scope="module")
def parts(tiny_ckpt):
    from trainer.model.load import load_parts

    model_dir, codec_dir = tiny_ckpt
    cfg = parse_train_args(["--model_path", str(model_dir), "--audio_tokenizer_path", str(codec_dir),
                            "--train_data_file", str(DEMO_DATA), "--output_dir", "unused"], {})
    return load_parts(cfg.model), cfg.model


def prepared(parts, data: Path | str, cache: Path, out: Path, **over: str):
    """`prepare_data` as `train` calls it, with the options given (the index on unless `data_index` is false)."""
    from trainer.encode.prepare import open_cache, prepare_data
    from trainer.model.load import load_audio_tokenizer

    loaded, model_args = parts
    values = {"model_path": model_args.model_path, "audio_tokenizer_path": model_args.audio_tokenizer_path,
              "train_data_file": str(data), "output_dir": str(out), "cache_dir": str(cache)} | over
    cfg = parse_train_args([], {k.upper(): v for k, v in values.items()})
    layout = Layout.from_model(loaded.model_config, loaded.tokenizer)
    data_ = prepare_data(cfg.data, evaluate=cfg.train.evaluates, cache=open_cache(cfg), tokenizer=loaded.tokenizer,
                         layout=layout, load_codec=lambda: load_audio_tokenizer(cfg.model),
                         sample_rate=loaded.codec_config.sample_rate, report_dir=out)
    return data_, layout


def batches(samples, layout: Layout, batch: int = 2, seed: int = 3) -> list[dict[str, torch.Tensor]]:
    """Every batch of one epoch in the length-grouped order the trainer draws, collated."""
    dataset = SampleDataset(samples, layout, text_labels=True)
    torch.manual_seed(seed)
    order = list(LengthGroupedOrder(batch, dataset.lengths()))
    collate = Collator(layout, text_labels=True)
    return [collate([dataset[i] for i in order[j:j + batch]]) for j in range(0, len(order), batch)]


def assert_same_batches(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b) > 0
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for k in x:
            assert torch.equal(x[k], y[k]), k


def _jsonl(root: Path) -> Path:
    lines = [{"audio": str(p), "text": t} for t, p in demo_pairs()[:6]]
    lines[1] |= {"ref_audio": str(demo_pairs()[2][1]), "ref_text": demo_pairs()[2][0]}
    return write_jsonl(root / "train.jsonl", lines)


def _pairs_dir(root: Path) -> Path:
    root.mkdir(parents=True)
    for i, (text, path) in enumerate(demo_pairs()[:5]):
        samples, rate = sf.read(path, dtype="int16")
        sf.write(root / f"utt{i}.wav", samples, rate)
        (root / f"utt{i}.txt").write_text(text)
    return root


def _ljspeech(root: Path) -> Path:
    (root / "wavs").mkdir(parents=True)
    lines = []
    for i, (text, path) in enumerate(demo_pairs()[:5]):
        samples, rate = sf.read(path, dtype="int16")
        sf.write(root / "wavs" / f"LJ001-{i:04d}.wav", samples, rate)
        lines.append(f"LJ001-{i:04d}|{text}|{text}")
    (root / "metadata.csv").write_text("\n".join(lines) + "\n")
    return root


def _dataset(kind: str, tmp: Path) -> Path:
    if kind == "chatml":
        return DEMO_DATA
    if kind == "jsonl":
        return _jsonl(tmp)
    if kind == "directory":
        return _pairs_dir(tmp / "pairs")
    if kind == "ljspeech":
        return _ljspeech(tmp / "LJSpeech-1.1")
    speech = speak(tmp / "speech")
    if kind == "libritts":
        _libritts(tmp / "LibriTTS_R", speech)
        return tmp / "LibriTTS_R"
    if kind == "commonvoice":
        _commonvoice(tmp / "cv" / "en", speech)
        return tmp / "cv" / "en"
    ds, _ = _hf_dataset(speech, tmp / "wav")
    ds.save_to_disk(str(tmp / "ds"))
    return tmp / "ds"


# The corpora that name speakers speak their clips with espeak-ng and encode them first: seconds each, so slow.
FORMATS = ["chatml", "jsonl", "directory", "ljspeech",
           *(pytest.param(kind, marks=pytest.mark.slow) for kind in ("libritts", "commonvoice", "hf_dataset"))]


@pytest.mark.parametrize("kind", FORMATS)
def test_index_gives_the_same_batches_as_the_samples_in_memory(kind, parts, code_cache, tmp_path) -> None:
    (tmp_path / "speech").mkdir()
    data = _dataset(kind, tmp_path)
    memory, layout = prepared(parts, data, code_cache, tmp_path / "a", data_index="false", disable_eval="true")
    indexed, _ = prepared(parts, data, code_cache, tmp_path / "b", disable_eval="true")
    assert isinstance(memory.train, list) and not isinstance(indexed.train, list)
    assert list(indexed.train.lengths()) == [s.num_tokens(layout.num_codebooks) for s in memory.train]
    assert [indexed.train[i].id for i in range(len(indexed.train))] == [s.id for s in memory.train]
    assert_same_batches(batches(memory.train, layout), batches(indexed.train, layout))


def test_validation_split_from_the_index_holds_out_the_same_samples(parts, code_cache, tmp_path) -> None:
    memory, layout = prepared(parts, DEMO_DATA, code_cache, tmp_path / "a", data_index="false",
                              validation_split="0.3", seed_split="7")
    indexed, _ = prepared(parts, DEMO_DATA, code_cache, tmp_path / "b", validation_split="0.3", seed_split="7")
    assert memory.eval and indexed.eval
    assert [s.id for s in indexed.eval] == [s.id for s in memory.eval]  # type: ignore[union-attr]
    # a slice, as `--sample_from_eval` takes the first evaluation samples, is the list's slice
    assert [s.id for s in indexed.eval[:2]] == [s.id for s in memory.eval[:2]]  # type: ignore[index]
    assert [s.input_ids for s in indexed.train[-3:]] == [s.input_ids for s in memory.train[-3:]]
    assert_same_batches(batches(memory.train, layout), batches(indexed.train, layout))
    assert_same_batches(batches(memory.eval, layout, seed=5), batches(indexed.eval, layout, seed=5))


def _index_dirs(cache: Path) -> list[Path]:
    """The indexes under `cache` (not their parts' store, `<data file>.parts`)."""
    return sorted(p for p in cache.glob("*/index/*")
                  if p.is_dir() and not p.name.startswith(".") and p.suffix != ".parts")


def test_a_current_index_is_reused_without_reading_the_data(parts, tmp_path, monkeypatch) -> None:
    from trainer.encode import prepare

    data = _jsonl(tmp_path)
    first, _ = prepared(parts, data, tmp_path / "cache", tmp_path / "a", disable_eval="true")
    built = _index_dirs(tmp_path / "cache")
    assert len(built) == 1

    def no_read(*_a, **_k):
        raise AssertionError("a current index was rebuilt")

    monkeypatch.setattr(prepare, "read_dataset", no_read)
    again, _ = prepared(parts, data, tmp_path / "cache", tmp_path / "b", disable_eval="true")
    assert _index_dirs(tmp_path / "cache") == built and len(again.train) == len(first.train) == 6


def test_an_index_is_rebuilt_when_the_data_file_changes(parts, tmp_path) -> None:
    data = _jsonl(tmp_path)
    first, _ = prepared(parts, data, tmp_path / "cache", tmp_path / "a", disable_eval="true")
    old = _index_dirs(tmp_path / "cache")
    lines = data.read_text().splitlines()
    data.write_text("\n".join(lines[:4]) + "\n")
    os.utime(data, ns=(1, 1))  # even with an old modification time, the size changed
    second, _ = prepared(parts, data, tmp_path / "cache", tmp_path / "b", disable_eval="true")
    assert len(first.train) == 6 and len(second.train) == 4
    new = _index_dirs(tmp_path / "cache")
    assert len(new) == 1 and new != old  # the stale one is gone
    # the same size, a new modification time: rebuilt again
    data.write_text("\n".join(lines[:4][::-1]) + "\n")
    os.utime(data, ns=(2, 2))
    third, _ = prepared(parts, data, tmp_path / "cache", tmp_path / "c", disable_eval="true")
    assert [third.train[i].input_ids for i in range(4)] == [second.train[i].input_ids for i in range(4)][::-1]
    assert _index_dirs(tmp_path / "cache") != new


def test_an_index_is_rebuilt_when_an_option_that_shapes_samples_changes(parts, tmp_path) -> None:
    data = _jsonl(tmp_path)
    first, layout = prepared(parts, data, tmp_path / "cache", tmp_path / "a", disable_eval="true")
    second, _ = prepared(parts, data, tmp_path / "cache", tmp_path / "b", disable_eval="true",
                         system_prompt="Speak slowly.")
    memory, _ = prepared(parts, data, tmp_path / "cache", tmp_path / "c", disable_eval="true",
                         system_prompt="Speak slowly.", data_index="false")
    assert first.train[0].input_ids != second.train[0].input_ids
    assert_same_batches(batches(memory.train, layout), batches(second.train, layout))


def test_many_bad_samples_are_counted_per_kind_with_the_full_list_in_the_output_dir(parts, tmp_path, caplog):
    good = [{"audio": str(p), "text": t} for t, p in demo_pairs()[:3]]
    missing = [{"audio": str(tmp_path / f"gone{i}.wav"), "text": "x"} for i in range(70)]
    data = write_jsonl(tmp_path / "train.jsonl", good + missing + [{"text": "no audio"}] * 3)
    out = tmp_path / "out"
    out.mkdir()
    with caplog.at_level("WARNING"):
        result, _ = prepared(parts, data, tmp_path / "cache", out, disable_eval="true", skip_bad_samples="true")
    assert len(result.train) == 3 and len(result.bad) == 73
    listed = (out / "bad_samples.txt").read_text().splitlines()
    assert len(listed) == 73 and listed[-1].startswith(f"{data}:76")
    assert "73 bad samples, 2 kinds of problem" in caplog.text
    assert "70 x audio file not found, the first 5:" in caplog.text
    assert caplog.text.count("gone") == 5  # bounded: five examples of the kind, not seventy


@pytest.mark.parametrize("n,batch", [(7, 2), (400, 4), (1001, 3), (64, 16)])
def test_the_sampler_draws_transformers_length_grouped_order(n, batch) -> None:
    from transformers.trainer_pt_utils import LengthGroupedSampler

    rng = np.random.default_rng(n)
    lengths = rng.integers(10, 40, size=n)  # many ties: their order must match too
    for seed in (0, 1):
        torch.manual_seed(seed)
        want = list(LengthGroupedSampler(batch, lengths=lengths.tolist()))
        torch.manual_seed(seed)
        got = list(LengthGroupedOrder(batch, np.asarray(lengths, dtype=np.int32)))
        assert got == want


def test_rendering_in_forked_workers_builds_the_same_index(parts, code_cache, tmp_path, monkeypatch) -> None:
    from trainer.encode import index_build

    monkeypatch.setattr(index_build, "CHUNK", 2)  # six samples: three tasks over two workers
    data = _jsonl(tmp_path)
    memory, layout = prepared(parts, data, code_cache, tmp_path / "a", data_index="false", disable_eval="true")
    forked, _ = prepared(parts, data, tmp_path / "cache", tmp_path / "b", disable_eval="true", prepare_workers="2")
    assert_same_batches(batches(memory.train, layout), batches(forked.train, layout))


def test_a_data_loader_worker_maps_the_index_instead_of_receiving_a_copy(parts, code_cache, tmp_path) -> None:
    import pickle

    indexed, layout = prepared(parts, DEMO_DATA, code_cache, tmp_path / "a", disable_eval="true")
    view = indexed.train
    blob = pickle.dumps(view)
    assert len(blob) < 2000  # the directory, not the columns
    again = pickle.loads(blob)
    assert_same_batches(batches(view, layout), batches(again, layout))


def test_workers_render_in_other_processes_and_keep_the_order(monkeypatch) -> None:
    from trainer.encode import index_build

    monkeypatch.setattr(index_build, "CHUNK", 3)

    def work(xs: list) -> list:
        return [(x, os.getpid()) for x in xs]

    out = [y for chunk in index_build.in_chunks(list(range(10)), work, workers=2) for y in chunk]
    assert [x for x, _ in out] == list(range(10))
    assert os.getpid() not in {pid for _, pid in out}
    small = [y for chunk in index_build.in_chunks([1, 2], work, workers=2) for y in chunk]
    assert small == [(1, os.getpid()), (2, os.getpid())]  # small: in-process
