"""trainer.data.pairs through `load_conversations`: JSONL manifests, metadata.json directories and directories
of audio + transcript pairs written here, good and bad."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.trainer.datafiles import SYSTEM, clip, load, texts, write_json, write_jsonl

# --- format 3: JSONL manifest --------------------------------------------------------------------


def test_jsonl_manifest_with_reference_scene_and_speaker(tmp_path, monkeypatch):
    clip(tmp_path / "wavs" / "a.wav")
    clip(tmp_path / "wavs" / "ref.flac")
    lines = [
        {"audio": "wavs/a.wav", "text": " Hello there. "},
        "",
        "   ",
        {
            "audio": "wavs/a.wav",
            "text": "Again.",
            "ref_audio": "wavs/ref.flac",
            "ref_text": "Ref words.",
            "scene": "A small studio.",
            "speaker": 7,
        },
    ]
    path = write_jsonl(tmp_path / "manifest.jsonl", lines)
    monkeypatch.chdir(tmp_path / "wavs")  # paths resolve next to the manifest, not here
    (plain, cloned), bad = load(path)
    assert bad == []
    a, ref = str(tmp_path / "wavs" / "a.wav"), str(tmp_path / "wavs" / "ref.flac")
    assert texts(plain) == [("system", SYSTEM), ("user", "Hello there."), ("assistant", a)]
    assert (plain.id, plain.source, plain.start_index, plain.speaker) == ("manifest-1", f"{path}:1", 2, None)
    assert texts(cloned) == [
        ("system", SYSTEM),
        ("scene", "A small studio."),
        ("user", "Ref words."),
        ("assistant", ref),
        ("user", "Again."),
        ("assistant", a),
    ]
    assert (cloned.id, cloned.source, cloned.start_index, cloned.speaker) == (
        "manifest-4",
        f"{path}:4",
        5,
        "7",
    )
    assert cloned.target_audio_paths() == [a] and cloned.audio_paths() == [ref, a]


JSONL_BAD = {
    "invalid-json": ('{"audio": "a.wav", "text": ', "line is not valid JSON: Expecting value"),
    "not-an-object": ("[1, 2]", "line must be a JSON object, got a list"),
    "missing-audio": ({"text": "hi"}, "missing field 'audio'"),
    "missing-text": ({"audio": "a.wav"}, "missing field 'text'"),
    "empty-text": ({"audio": "a.wav", "text": " \n"}, "empty transcript"),
    "text-wrong-type": ({"audio": "a.wav", "text": 5}, "field 'text' must be a string, got a number"),
    "empty-audio-path": ({"audio": "", "text": "hi"}, "field 'audio' is empty"),
    "ref-audio-without-text": (
        {"audio": "a.wav", "text": "hi", "ref_audio": "a.wav"},
        "ref_audio given without ref_text",
    ),
    "ref-text-without-audio": (
        {"audio": "a.wav", "text": "hi", "ref_text": "x"},
        "ref_text given without ref_audio",
    ),
    "empty-ref-text": (
        {"audio": "a.wav", "text": "hi", "ref_audio": "a.wav", "ref_text": ""},
        "empty reference transcript",
    ),
    "missing-audio-file": ({"audio": "b.wav", "text": "hi"}, "audio file not found: {dir}/b.wav"),
    "missing-ref-file": (
        {"audio": "a.wav", "text": "hi", "ref_audio": "r.wav", "ref_text": "x"},
        "audio file not found: {dir}/r.wav",
    ),
}


@pytest.mark.parametrize(("line", "reason"), JSONL_BAD.values(), ids=JSONL_BAD.keys())
def test_jsonl_bad_line_is_reported_with_its_line_number(tmp_path, line, reason):
    clip(tmp_path / "a.wav")
    fine = {"audio": "a.wav", "text": "fine"}
    path = write_jsonl(tmp_path / "m.jsonl", [fine, "", line, fine])
    conversations, bad = load(path)
    assert [c.id for c in conversations] == ["m-1", "m-4"]
    assert [b.source for b in bad] == [f"{path}:3"]
    assert reason.format(dir=tmp_path) in bad[0].reason


# --- format 2: directories -----------------------------------------------------------------------


def test_metadata_directory(tmp_path):
    for name in ("a.wav", "b.flac", "refs/r.wav"):
        clip(tmp_path / name)
    (tmp_path / "a.txt").write_text("First line.\n")
    (tmp_path / "b.txt").write_text("Second.")
    (tmp_path / "refs" / "r.txt").write_text("Reference words.")
    samples = [
        {
            "id": "s1",
            "audio_file": "a.wav",
            "transcript_file": "a.txt",
            "speaker_id": "anna",
            "duration": 0.5,
        },
        {
            "id": "s2",
            "audio_file": "b.flac",
            "transcript_file": "b.txt",
            "scene": "Outdoors.",
            "ref_audio_file": "refs/r.wav",
            "ref_transcript": "Inline reference.",
        },
        {
            "id": 3,
            "audio_file": "b.flac",
            "transcript_file": "b.txt",
            "ref_audio_file": "refs/r.wav",
            "ref_transcript_file": "refs/r.txt",
        },
    ]
    write_json(tmp_path / "metadata.json", {"dataset_info": {}, "samples": samples})
    (s1, s2, s3), bad = load(tmp_path)
    assert bad == []
    a, b, r = (str(tmp_path / n) for n in ("a.wav", "b.flac", "refs/r.wav"))
    assert texts(s1) == [("system", SYSTEM), ("user", "First line."), ("assistant", a)]
    assert (s1.id, s1.speaker, s1.start_index) == ("s1", "anna", 2)
    assert s1.source == f"{tmp_path / 'metadata.json'} samples[0]"
    assert texts(s2) == [
        ("system", SYSTEM),
        ("scene", "Outdoors."),
        ("user", "Inline reference."),
        ("assistant", r),
        ("user", "Second."),
        ("assistant", b),
    ]
    assert s2.start_index == 5 and s2.target_audio_paths() == [b]
    assert s3.id == "3" and texts(s3)[1] == ("user", "Reference words.")


METADATA_BAD = {
    "missing-audio-field": ({"id": "x", "transcript_file": "a.txt"}, "missing field 'audio_file'"),
    "missing-id": ({"audio_file": "a.wav", "transcript_file": "a.txt"}, "missing field 'id'"),
    "duplicate-id": (
        {"id": "ok", "audio_file": "a.wav", "transcript_file": "a.txt"},
        "duplicate id 'ok' (also {meta} samples[0])",
    ),
    "missing-transcript-file": (
        {"id": "x", "audio_file": "a.wav", "transcript_file": "none.txt"},
        "transcript file not found: {dir}/none.txt",
    ),
    "empty-transcript": (
        {"id": "x", "audio_file": "a.wav", "transcript_file": "blank.txt"},
        "empty transcript: {dir}/blank.txt",
    ),
    "missing-audio-file": (
        {"id": "x", "audio_file": "none.wav", "transcript_file": "a.txt"},
        "audio file not found: {dir}/none.wav",
    ),
    "ref-audio-without-text": (
        {"id": "x", "audio_file": "a.wav", "transcript_file": "a.txt", "ref_audio_file": "a.wav"},
        "ref_audio_file given without ref_transcript",
    ),
    "two-ref-texts": (
        {
            "id": "x",
            "audio_file": "a.wav",
            "transcript_file": "a.txt",
            "ref_audio_file": "a.wav",
            "ref_transcript": "r",
            "ref_transcript_file": "a.txt",
        },
        "give ref_transcript or ref_transcript_file, not both",
    ),
    "missing-ref-transcript-file": (
        {
            "id": "x",
            "audio_file": "a.wav",
            "transcript_file": "a.txt",
            "ref_audio_file": "a.wav",
            "ref_transcript_file": "r.txt",
        },
        "reference transcript file not found: {dir}/r.txt",
    ),
    "not-an-object": ("a.wav", "sample must be an object, got a string"),
}


@pytest.mark.parametrize(("sample", "reason"), METADATA_BAD.values(), ids=METADATA_BAD.keys())
def test_metadata_bad_sample_is_reported_with_its_index(tmp_path, sample, reason):
    clip(tmp_path / "a.wav")
    (tmp_path / "a.txt").write_text("words")
    (tmp_path / "blank.txt").write_text(" \n")
    fine = {"id": "ok", "audio_file": "a.wav", "transcript_file": "a.txt"}
    meta = write_json(tmp_path / "metadata.json", {"samples": [fine, sample]})
    conversations, bad = load(tmp_path)
    assert [c.id for c in conversations] == ["ok"]
    assert [b.source for b in bad] == [f"{meta} samples[1]"]
    assert reason.format(dir=tmp_path, meta=meta) in bad[0].reason


def test_directory_of_audio_and_transcript_pairs(tmp_path):
    clip(tmp_path / "a.wav")
    clip(tmp_path / "b.flac")
    clip(tmp_path / "lonely.wav")
    clip(tmp_path / "silent.wav")
    clip(tmp_path / "twice.wav")
    clip(tmp_path / "twice.flac")
    for stem, text in [
        ("a", "Alpha."),
        ("b", "Bravo.\n"),
        ("orphan", "No audio."),
        ("silent", ""),
        ("twice", "x"),
    ]:
        (tmp_path / f"{stem}.txt").write_text(text)
    (tmp_path / "README.md").write_text("not data")
    (tmp_path / "sub").mkdir()  # subdirectories are not read
    clip(tmp_path / "sub" / "c.wav")

    conversations, bad = load(tmp_path)
    assert [(c.id, c.source) for c in conversations] == [
        ("a", str(tmp_path / "a.wav")),
        ("b", str(tmp_path / "b.flac")),
    ]
    assert texts(conversations[1]) == [
        ("system", SYSTEM),
        ("user", "Bravo."),
        ("assistant", str(tmp_path / "b.flac")),
    ]
    assert [(Path(b.source).name, b.reason) for b in bad] == [
        ("lonely.wav", "audio file has no transcript (expected lonely.txt next to it)"),
        ("orphan.txt", "transcript has no audio file (expected orphan.wav or orphan.flac next to it)"),
        ("silent.wav", f"empty transcript: {tmp_path / 'silent.txt'}"),
        ("twice.flac", "several audio files for one transcript: twice.flac, twice.wav"),
    ]
