"""The corpus layouts (LJSpeech, LibriTTS, Common Voice, Hugging Face datasets) read to the same conversations as the
same clips in a hand-written JSONL manifest, references included; and each layout's bad input is named and counted."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.trainer.data.corpora import UTTERANCES, expected_lines, speak
from tests.trainer.datafiles import SYSTEM, write_jsonl
from trainer.data.load import ReadOptions, load_conversations
from trainer.data.samples import Conversation


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    return speak(tmp_path_factory.mktemp("speech"))


def load(path, **read):
    return load_conversations(path, system_prompt=SYSTEM, max_audio_seconds=30.0, read=ReadOptions(**read))


def shape(conversations: list[Conversation], audio=lambda p: p) -> list[tuple]:
    """What training sees of each conversation: its messages (audio mapped by `audio`), targets and speaker."""
    out = []
    for c in conversations:
        messages = [(m["role"], [(x["text"] if x["type"] == "text" else audio(x["path"])) for x in m["content"]])
                    for m in c.messages]
        out.append((messages, c.start_index, c.speaker, c.target_flags()))
    return out


def expected(tmp_path: Path, paths: list[Path], texts: list[str], *, speakers: bool) -> list[Conversation]:
    manifest = write_jsonl(tmp_path / "expected.jsonl", expected_lines(paths, texts, speakers=speakers))
    conversations, bad = load(manifest)
    assert bad == []
    return conversations


def test_ljspeech_reads_like_the_same_clips_in_jsonl(speech, tmp_path):
    root = tmp_path / "LJSpeech-1.1"
    (root / "wavs").mkdir(parents=True)
    lines, paths, texts = [], [], []
    for i, u in enumerate(speech):
        sf.write(root / "wavs" / f"LJ001-{i:04d}.wav", u.samples, u.rate)
        # The third field (normalized) is what is spoken: the second keeps a digit to tell them apart.
        lines.append(f"LJ001-{i:04d}|{u.text} 1|{u.text}")
        paths.append(root / "wavs" / f"LJ001-{i:04d}.wav")
        texts.append(u.text)
    (root / "metadata.csv").write_text("\n".join(lines) + "\n")
    got, bad = load(root)
    assert bad == []
    assert shape(got) == shape(expected(tmp_path, paths, texts, speakers=False))
    assert [c.id for c in got] == ["LJ001-0000", "LJ001-0001", "LJ001-0002"]


def _libritts(root: Path, speech) -> tuple[list[Path], list[str]]:
    paths, texts = [], []
    for i, u in enumerate(speech):
        folder = root / u.speaker / "121"
        folder.mkdir(parents=True, exist_ok=True)
        utt = f"{u.speaker}_121_{i:06d}_000000"
        sf.write(folder / f"{utt}.wav", u.samples, u.rate)
        (folder / f"{utt}.normalized.txt").write_text(u.text)
        (folder / f"{utt}.original.txt").write_text(u.text.upper())
        paths.append(folder / f"{utt}.wav")
        texts.append(u.text)
    return paths, texts


def test_libritts_reads_like_jsonl_with_a_reference_of_the_same_speaker(speech, tmp_path, caplog):
    root = tmp_path / "train-clean-100"
    paths, texts = _libritts(root, speech)
    with caplog.at_level(logging.INFO, logger="trainer.data.load"):
        got, bad = load(root)
    assert bad == []
    assert shape(got) == shape(expected(tmp_path, paths, texts, speakers=True))
    # Speaker 2277 has one clip: it trains without a reference, and the log counts it.
    assert "2 samples paired with a reference clip" in caplog.text
    assert "1 train without one (1 speakers with a single usable clip)" in caplog.text


def test_libritts_uses_the_original_text_where_the_normalized_one_is_missing(speech, tmp_path):
    root = tmp_path / "LibriTTS_R"
    paths, _ = _libritts(root, speech)
    Path(str(paths[2]).replace(".wav", ".normalized.txt")).unlink()
    got, bad = load(root)
    assert bad == []
    assert got[2].messages[-2]["content"][0]["text"] == UTTERANCES[2][2].upper()


def _commonvoice(root: Path, speech, header: str = "client_id\tpath\tsentence\tup_votes") -> tuple[list[Path], list]:
    (root / "clips").mkdir(parents=True)
    rows, paths, texts = [header], [], []
    for i, u in enumerate(speech):
        name = f"common_voice_en_{i}.mp3"
        sf.write(root / "clips" / name, u.samples, u.rate, format="MP3")
        rows.append(f"{u.speaker}\t{name}\t{u.text}\t2")
        paths.append(root / "clips" / name)
        texts.append(u.text)
    (root / "validated.tsv").write_text("\n".join(rows) + "\n")
    return paths, texts


def test_commonvoice_mp3_reads_like_jsonl_with_references(speech, tmp_path):
    assert tuple(int(x) for x in sf.__libsndfile_version__.split(".")[:2]) >= (1, 1)  # MP3 through libsndfile
    root = tmp_path / "cv-corpus" / "en"
    paths, texts = _commonvoice(root, speech)
    got, bad = load(root)
    assert bad == []
    assert shape(got) == shape(expected(tmp_path, paths, texts, speakers=True))


def _hf_dataset(speech, wav_dir: Path):
    datasets = pytest.importorskip("datasets")
    wav_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, u in enumerate(speech):
        sf.write(wav_dir / f"{i}.wav", u.samples, u.rate)
        paths.append(wav_dir / f"{i}.wav")
    data = {"audio": [str(p) for p in paths], "text": [u.text for u in speech],
            "speaker_id": [u.speaker for u in speech]}
    ds = datasets.Dataset.from_dict(data).cast_column("audio", datasets.Audio())
    return ds, paths


def _same_audio(original: dict[str, Path]):
    """Map an audio path read from a dataset to the original clip whose samples it holds (the bytes were copied out)."""
    decoded = {p: sf.read(p, dtype="int16")[0] for p in original.values()}

    def which(path: str) -> str:
        samples = sf.read(path, dtype="int16")[0]
        return next(str(p) for p, s in decoded.items() if np.array_equal(s, samples))

    return which


@pytest.mark.parametrize("layout", ["save_to_disk", "parquet"])
def test_hf_dataset_reads_like_jsonl_with_references(speech, tmp_path, layout):
    ds, paths = _hf_dataset(speech, tmp_path / "wav")
    if layout == "save_to_disk":
        target = tmp_path / "ds"
        ds.save_to_disk(str(target))
    else:  # embedded bytes, as push_to_hub writes them (to_parquet alone keeps the paths)
        from datasets.table import embed_table_storage

        target = tmp_path / "train.parquet"
        ds.with_format("arrow").map(embed_table_storage, batched=True).to_parquet(str(target))
    for p in paths:  # the dataset must carry its own audio, not point at these files
        p.rename(p.with_suffix(".moved"))
    moved = {str(p): p.with_suffix(".moved") for p in paths}
    got, bad = load(target)
    assert bad == []
    want = expected(tmp_path, list(moved.values()), [u.text for u in speech], speakers=True)
    assert shape(got, _same_audio(moved)) == shape(want)
    assert all(Path(c.audio_paths()[-1]).parent == Path(f"{target}.clips") for c in got)


def test_hf_dataset_text_and_audio_columns_are_options(speech, tmp_path):
    ds, _ = _hf_dataset(speech, tmp_path / "wav")
    ds = ds.rename_columns({"audio": "speech", "text": "transcription"})
    ds.to_parquet(str(tmp_path / "x.parquet"))
    got, bad = load(tmp_path / "x.parquet", text_column="transcription", audio_column="speech")
    assert bad == [] and len(got) == 3
    assert got[0].messages[-2]["content"][0]["text"] == UTTERANCES[0][2]


# --- bad input, named with its file and line or row, and counted ----------------------------------


def test_ljspeech_line_with_the_wrong_field_count_is_a_bad_sample(speech, tmp_path):
    root = tmp_path / "lj"
    (root / "wavs").mkdir(parents=True)
    sf.write(root / "wavs" / "a.wav", speech[0].samples, speech[0].rate)
    sf.write(root / "wavs" / "b.wav", speech[1].samples, speech[1].rate)
    (root / "metadata.csv").write_text("a|one|one\nb|two|two|extra\n")
    got, bad = load(root)
    assert len(got) == 1 and len(bad) == 1
    assert str(bad[0]) == (f"{root / 'metadata.csv'}:2: expected 3 fields 'id|text|normalized text' separated by "
                           "'|', got 4")


def test_commonvoice_missing_column_and_short_line_are_bad_samples(speech, tmp_path):
    root = tmp_path / "cv"
    _commonvoice(root, speech, header="client_id\tpath\ttext\tup_votes")
    got, bad = load(root)
    assert got == [] and len(bad) == 3
    assert str(bad[0]) == (f"{root / 'validated.tsv'}:2: the header (line 1) has no column 'sentence'; "
                           "expected path, sentence, client_id")
    root2 = tmp_path / "cv2"
    _commonvoice(root2, speech)
    table = root2 / "validated.tsv"
    table.write_text(table.read_text().replace("\t2\n", "\n", 1))
    got, bad = load(root2)
    assert len(got) == 2 and [str(b) for b in bad] == [
        f"{table}:2: expected 4 tab-separated fields as in the header (line 1), got 3"]


def test_hf_dataset_without_the_audio_column_names_it_per_row(speech, tmp_path):
    ds, _ = _hf_dataset(speech, tmp_path / "wav")
    ds.remove_columns("audio").to_parquet(str(tmp_path / "t.parquet"))
    got, bad = load(tmp_path / "t.parquet")
    assert got == [] and len(bad) == 3
    assert str(bad[1]) == (f"{tmp_path / 't.parquet'} row 1: no column 'audio' (--audio_column); the columns are "
                           "text, speaker_id")


def test_unreadable_and_empty_audio_are_bad_samples_named_by_file(speech, tmp_path):
    root = tmp_path / "libri"
    paths, _ = _libritts(root, speech)
    paths[0].write_bytes(b"not audio at all")
    got, bad = load(root)
    assert len(bad) == 1 and str(bad[0]).startswith(f"{paths[0]}: audio file {paths[0]}: unreadable audio")
    # The bad clip is no reference either: its speaker's other clip now trains without one.
    assert [len(c.audio_paths()) for c in got] == [1, 1]

    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = pa.table({"audio": [{"bytes": b"", "path": "x.wav"}], "text": ["hello"]})
    pq.write_table(table, tmp_path / "e.parquet")
    got, bad = load(tmp_path / "e.parquet")
    assert [str(b) for b in bad] == [f"{tmp_path / 'e.parquet'} row 0: empty audio: the audio column holds 0 bytes"]


def test_data_format_names_the_reader(speech, tmp_path):
    root = tmp_path / "lj"
    (root / "wavs").mkdir(parents=True)
    sf.write(root / "wavs" / "a.wav", speech[0].samples, speech[0].rate)
    (root / "metadata.csv").write_text("a|one|one\n")
    from trainer.errors import DataError

    with pytest.raises(DataError, match=r"no validated\.tsv or train\.tsv"):
        load(root, data_format="commonvoice")
    assert len(load(root, data_format="ljspeech")[0]) == 1
    assert json.dumps(shape(load(root)[0])) == json.dumps(shape(load(root, data_format="ljspeech")[0]))
