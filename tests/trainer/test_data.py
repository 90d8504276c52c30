"""trainer.data on real files: the bundled demo dataset, and datasets written here in every format."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.tooling import require_tool
from trainer.data import BadSample, Conversation, DataError, format_bad_samples, load_conversations

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "examples" / "demo_data"
SYSTEM = "Generate audio following instruction."


def load(path, max_audio_seconds: float = 30.0):
    return load_conversations(path, system_prompt=SYSTEM, max_audio_seconds=max_audio_seconds)


def clip(path: Path, seconds: float = 0.5) -> Path:
    """A short real recording: a bundled espeak-ng clip, cut to `seconds` and written in path's format."""
    samples, rate = sf.read(DEMO / "audio" / "gb_female" / "00.flac", dtype="int16")
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, samples[: round(seconds * rate)], rate)
    return path


def user(text):
    return {"role": "user", "content": text}


def assistant(path):
    return {"role": "assistant", "content": {"type": "audio", "audio_url": str(path)}}


def write_json(path: Path, value) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))
    return path


def write_jsonl(path: Path, lines: list) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def texts(conversation: Conversation) -> list[tuple[str, str]]:
    """(role, text or audio path) per message, to compare whole conversations at a glance."""
    out = []
    for m in conversation.messages:
        for c in m["content"]:
            out.append((m["role"], c["text"] if c["type"] == "text" else c["path"]))
    return out


# --- the bundled demo dataset --------------------------------------------------------------------


def test_demo_dataset_loads_with_no_bad_samples_and_two_speakers():
    conversations, bad = load(DEMO / "train.json")
    assert bad == []
    assert 24 <= len(conversations) <= 32
    assert {c.speaker for c in conversations} == {"us_male", "gb_female"}
    assert len({c.id for c in conversations}) == len(conversations)
    for c in conversations:
        assert [m["role"] for m in c.messages] == ["system", "user", "assistant", "user", "assistant"]
        assert c.messages[0]["content"] == [{"type": "text", "text": SYSTEM}]
        assert c.start_index == 4
        reference, target = c.audio_paths()
        assert c.target_audio_paths() == [target] and reference != target
        # The reference is another clip of the same speaker.
        assert Path(reference).parent == Path(target).parent == DEMO / "audio" / c.speaker


def test_demo_clips_are_short_24k_mono_16_bit_flac_under_2_mb():
    clips = sorted((DEMO / "audio").glob("*/*.flac"))
    assert 24 <= len(clips) <= 32
    for path in clips:
        info = sf.info(str(path))
        assert (info.samplerate, info.channels, info.format, info.subtype) == (24000, 1, "FLAC", "PCM_16")
        assert 1.0 <= info.duration <= 3.0, path
    assert sum(p.stat().st_size for p in DEMO.rglob("*") if p.is_file()) < 2_000_000


def test_demo_dataset_is_the_output_of_its_script(tmp_path):
    require_tool("espeak-ng")
    require_tool("sox")
    script = REPO / "scripts" / "make_demo_data.py"
    subprocess.run([sys.executable, str(script), "--out", str(tmp_path)], check=True, capture_output=True)
    made = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    bundled = sorted(p.relative_to(DEMO) for p in DEMO.rglob("*") if p.is_file() and p.name != "README.md")
    assert made == bundled
    assert (tmp_path / "train.json").read_bytes() == (DEMO / "train.json").read_bytes()
    version = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True).stdout
    if " 1.51 " not in version:
        pytest.skip(f"the clips were made with espeak-ng 1.51; this is {version.strip()}")
    for rel in made:
        assert (tmp_path / rel).read_bytes() == (DEMO / rel).read_bytes(), rel


# --- format 1: ChatML JSON list ------------------------------------------------------------------


def test_chatml_paths_resolve_next_to_the_json_file_not_the_working_directory(tmp_path, monkeypatch):
    data = tmp_path / "data"
    a, b = clip(data / "clips" / "a.wav"), clip(tmp_path / "elsewhere" / "b.flac")
    sample = {
        "messages": [
            {"role": "system", "content": "Speak."},
            user("one"),
            {"role": "assistant", "content": [{"type": "audio", "audio_url": "clips/a.wav"}]},
            user("two"),
            {"role": "assistant", "content": [{"type": "audio", "path": str(b)}]},
            user("three"),
            {"role": "assistant", "content": {"type": "audio", "url": "file://" + str(b)}},
            user("four"),
            {"role": "assistant", "content": {"type": "audio", "audio_url": "../elsewhere/b.flac"}},
        ],
        "start_index": 2,
    }
    path = write_json(data / "train.json", [sample])
    monkeypatch.chdir(tmp_path / "elsewhere")
    (conversation,), bad = load(path)
    assert bad == []
    assert conversation.audio_paths() == [str(a), str(b), str(b), str(b)]
    assert conversation.target_audio_paths() == conversation.audio_paths()


def test_chatml_without_system_message_gets_one_and_start_index_shifts(tmp_path):
    a = clip(tmp_path / "a.wav")
    path = write_json(tmp_path / "d.json", [{"messages": [user("hi"), assistant(a)], "start_index": 1}])
    (conversation,), _ = load(path)
    assert texts(conversation) == [("system", SYSTEM), ("user", "hi"), ("assistant", str(a))]
    assert conversation.start_index == 2
    assert conversation.target_audio_paths() == [str(a)]


def test_chatml_own_system_message_and_start_index_are_kept(tmp_path):
    a, b = clip(tmp_path / "a.wav"), clip(tmp_path / "b.wav")
    messages = [{"role": "system", "content": "Own."}, user("x"), assistant(a), user("y"), assistant(b)]
    path = write_json(tmp_path / "d.json", [{"messages": messages, "start_index": 2}])
    (conversation,), _ = load(path)
    assert texts(conversation)[0] == ("system", "Own.")
    assert conversation.start_index == 2
    assert conversation.target_audio_paths() == [str(a), str(b)]


def test_chatml_missing_start_index_means_the_last_assistant_message(tmp_path):
    a, b = clip(tmp_path / "a.wav"), clip(tmp_path / "b.wav")
    path = write_json(tmp_path / "d.json", [{"messages": [user("x"), assistant(a), user("y"), assistant(b)]}])
    (conversation,), _ = load(path)
    assert conversation.start_index == 4  # index 3 of the file, shifted by the prepended system message
    assert conversation.target_audio_paths() == [str(b)]
    assert conversation.audio_paths() == [str(a), str(b)]


def test_chatml_content_forms_are_normalised(tmp_path):
    a = clip(tmp_path / "a.wav")
    messages = [
        {"role": "system", "content": {"type": "text", "text": "Sys."}},
        {"role": "scene", "content": [{"type": "text", "text": "A quiet room."}]},
        {"role": "user", "content": ["Hello ", {"type": "text", "text": "there."}]},
        {"role": "assistant", "content": [{"type": "audio", "audio_url": "a.wav", "offset": None}]},
    ]
    item = {"messages": messages, "start_index": 3, "misc": {"speaker": "belinda"}}
    (conversation,), _ = load(write_json(tmp_path / "d.json", [item]))
    assert conversation.messages == [
        {"role": "system", "content": [{"type": "text", "text": "Sys."}]},
        {"role": "scene", "content": [{"type": "text", "text": "A quiet room."}]},
        {"role": "user", "content": [{"type": "text", "text": "Hello "}, {"type": "text", "text": "there."}]},
        {"role": "assistant", "content": [{"type": "audio", "path": str(a)}]},
    ]
    assert conversation.speaker == "belinda"  # from misc, where the original loader also looks
    assert (conversation.id, conversation.source) == ("d-0", f"{tmp_path / 'd.json'}[0]")


GOOD = "GOOD"  # placeholder for the good clip in the cases below
CHATML_BAD = {
    "unknown-role": (
        {"messages": [{"role": "tool", "content": "x"}, assistant(GOOD)]},
        "unknown role 'tool'",
    ),
    "missing-role": ({"messages": [{"content": "x"}, assistant(GOOD)]}, "messages[0]: missing field 'role'"),
    "missing-content": ({"messages": [{"role": "user"}, assistant(GOOD)]}, "missing field 'content'"),
    "assistant-text": (
        {"messages": [user("x"), {"role": "assistant", "content": "spoken words"}, assistant(GOOD)]},
        "messages[1]: assistant message holds text",
    ),
    "audio-in-user": (
        {"messages": [{"role": "user", "content": [{"type": "audio", "audio_url": GOOD}]}, assistant(GOOD)]},
        "messages[0]: audio in a user message",
    ),
    "audio-in-system": (
        {
            "messages": [
                {"role": "system", "content": {"type": "audio", "path": GOOD}},
                user("x"),
                assistant(GOOD),
            ]
        },
        "messages[0]: audio in a system message",
    ),
    "no-target-audio": (
        {"messages": [user("x"), assistant(GOOD), user("y")], "start_index": 2},
        "no assistant audio at or after start_index 2",
    ),
    "no-assistant": ({"messages": [user("x")]}, "no assistant message"),
    "start-index-out-of-range": (
        {"messages": [user("x"), assistant(GOOD)], "start_index": 5},
        "start_index 5 is out of range for 2 messages",
    ),
    "start-index-negative": ({"messages": [user("x"), assistant(GOOD)], "start_index": -1}, "out of range"),
    "start-index-wrong-type": (
        {"messages": [user("x"), assistant(GOOD)], "start_index": "1"},
        "field 'start_index' must be an integer, got a string",
    ),
    "content-wrong-type": (
        {"messages": [{"role": "user", "content": 7}, assistant(GOOD)]},
        "content must be a string, an object or a list, got a number",
    ),
    "content-item-wrong-type": (
        {"messages": [{"role": "user", "content": [["x"]]}, assistant(GOOD)]},
        "messages[0].content[0]: must be a string or an object, got a list",
    ),
    "text-not-string": (
        {"messages": [{"role": "user", "content": {"type": "text", "text": 3}}, assistant(GOOD)]},
        "text item needs a string 'text'",
    ),
    "unknown-content-type": (
        {"messages": [{"role": "user", "content": {"type": "image"}}, assistant(GOOD)]},
        "unknown content type 'image'",
    ),
    "empty-transcript": ({"messages": [user("   "), assistant(GOOD)]}, "messages[0]: empty transcript"),
    "empty-content": (
        {"messages": [{"role": "user", "content": []}, assistant(GOOD)]},
        "user message has no content",
    ),
    "missing-messages": ({"speaker": "x"}, "missing field 'messages'"),
    "messages-not-a-list": ({"messages": "hello"}, "field 'messages' must be a non-empty list, got a string"),
    "sample-not-an-object": (["messages"], "sample must be an object, got a list"),
    "speaker-wrong-type": (
        {"messages": [user("x"), assistant(GOOD)], "speaker": ["a"]},
        "field 'speaker' must be a string",
    ),
    "audio-without-path": (
        {"messages": [user("x"), {"role": "assistant", "content": {"type": "audio"}}]},
        "audio item has no 'audio_url', 'path' or 'url'",
    ),
    "audio-url": (
        {"messages": [user("x"), assistant("https://host.invalid/a.wav")]},
        "is a URL; only local files",
    ),
    "raw-audio": (
        {
            "messages": [
                user("x"),
                {"role": "assistant", "content": {"type": "audio", "audio_url": "", "raw_audio": "UklGRg=="}},
            ]
        },
        "inline raw_audio is not supported",
    ),
    "audio-path-wrong-type": (
        {"messages": [user("x"), {"role": "assistant", "content": {"type": "audio", "path": 3}}]},
        "'path' must be a file path, got a number",
    ),
    "audio-segment": (
        {
            "messages": [
                user("x"),
                {"role": "assistant", "content": {"type": "audio", "audio_url": GOOD, "offset": 1.5}},
            ]
        },
        "audio segments (offset/duration) are not supported",
    ),
    "missing-audio-file": (
        {"messages": [user("x"), assistant("clips/none.flac")]},
        "audio file not found: {dir}/clips/none.flac",
    ),
}


def _fill(value, good: str):
    if isinstance(value, dict):
        return {k: _fill(v, good) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, good) for v in value]
    return good if value == GOOD else value


@pytest.mark.parametrize(("item", "reason"), CHATML_BAD.values(), ids=CHATML_BAD.keys())
def test_chatml_bad_sample_is_reported_with_its_index_and_the_rest_still_load(tmp_path, item, reason):
    good = str(clip(tmp_path / "good.wav"))
    fine = {"messages": [user("fine"), assistant(good)]}
    path = write_json(tmp_path / "d.json", [fine, _fill(item, good), fine])
    conversations, bad = load(path)
    assert [c.id for c in conversations] == ["d-0", "d-2"]
    assert len(bad) == 1
    assert bad[0].source == f"{path}[1]"
    assert reason.format(dir=tmp_path) in bad[0].reason


def test_every_problem_of_every_sample_is_reported(tmp_path):
    good = clip(tmp_path / "good.wav")
    items = [
        {"messages": [{"role": "robot", "content": 1}, assistant("missing.wav")], "start_index": 9},
        {"messages": [user("ok"), assistant(good)]},
        {"messages": [user(""), assistant("gone.wav")]},
    ]
    conversations, bad = load(write_json(tmp_path / "d.json", items))
    assert len(conversations) == 1
    assert [b.source.rsplit("[", 1)[1] for b in bad] == ["0]", "2]"]
    first, last = bad[0].reason, bad[1].reason
    for part in ("unknown role 'robot'", "content must be", "start_index 9 is out of range", "missing.wav"):
        assert part in first
    assert "empty transcript" in last and f"audio file not found: {tmp_path / 'gone.wav'}" in last


# --- audio checks, in every format ---------------------------------------------------------------


def test_unreadable_empty_and_long_audio_are_bad_samples(tmp_path):
    ok = clip(tmp_path / "ok.wav", 0.5)
    long = clip(tmp_path / "long.flac", 1.2)
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"\x00\x01" * 500)
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, dtype=np.int16), 24000)
    items = [
        {"messages": [user("a"), assistant(garbage)]},
        {"messages": [user("b"), assistant(empty)]},
        {"messages": [user("c"), assistant(long)]},
        {"messages": [user("ref"), assistant(long), user("d"), assistant(ok)], "start_index": 3},
        {"messages": [user("e"), assistant(ok)]},
    ]
    conversations, bad = load(write_json(tmp_path / "d.json", items), max_audio_seconds=1.0)
    assert [c.id for c in conversations] == ["d-4"]
    reasons = [b.reason for b in bad]
    assert reasons[0].startswith(f"audio file {garbage}: unreadable audio")
    assert reasons[1] == f"audio file {empty}: empty audio"
    assert reasons[2] == f"clip is 1.2 s, over --max_audio_seconds 1: {long}"
    assert reasons[3] == reasons[2]  # a reference clip over the limit is as bad as a target


def test_a_clip_just_over_the_limit_does_not_print_as_the_limit(tmp_path):
    path = tmp_path / "a.wav"
    sf.write(path, np.full(24024, 100, dtype=np.int16), 24000)  # 1.001 s
    _, (bad,) = load(write_json(tmp_path / "d.json", [{"messages": [user("x"), assistant(path)]}]), 1.0)
    assert "clip is 1.001 s, over --max_audio_seconds 1" in bad.reason


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


# --- whole-input errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.json", None, "does not exist; expected a ChatML .json list"),
        ("data.csv", "a,b\n", "unknown data format"),
        ("d.json", '{"messages": []}', "expected a JSON list of ChatML samples"),
        ("d.json", "[{", "not valid JSON"),
        ("d.json", "[]", "holds no samples"),
        ("metadata.json", '{"samples": []}', "pass its directory instead"),
        ("m.jsonl", "\n\n", "holds no samples"),
    ],
)
def test_whole_input_errors_name_the_path(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataError, match=message) as info:
        load(path)
    assert str(path) in str(info.value)


def test_directory_errors(tmp_path):
    with pytest.raises(DataError, match="holds no samples"):
        load(tmp_path)
    write_json(tmp_path / "metadata.json", {"items": []})
    with pytest.raises(DataError, match="expected an object with a 'samples' list"):
        load(tmp_path)


# --- the report ----------------------------------------------------------------------------------


def test_format_bad_samples_lists_each_with_a_count():
    bad = [BadSample(f"d.jsonl:{i}", "missing field 'audio'") for i in range(1, 5)]
    report = format_bad_samples(bad)
    assert report.splitlines() == ["4 bad samples:"] + [
        f"  d.jsonl:{i}: missing field 'audio'" for i in range(1, 5)
    ]
    assert format_bad_samples(bad[:1]).startswith("1 bad sample:\n")
    assert format_bad_samples(bad, limit=2).splitlines()[-1] == "  ... and 2 more"
    assert format_bad_samples([]) == "no bad samples"


def test_conversation_audio_path_helpers():
    messages = [
        {"role": "system", "content": [{"type": "text", "text": "s"}]},
        {"role": "assistant", "content": [{"type": "audio", "path": "/r.wav"}]},
        {"role": "user", "content": [{"type": "text", "text": "u"}]},
        {
            "role": "assistant",
            "content": [{"type": "audio", "path": "/t1.wav"}, {"type": "audio", "path": "/t2.wav"}],
        },
    ]
    conversation = Conversation("id", "src", messages, start_index=3)
    assert conversation.audio_paths() == ["/r.wav", "/t1.wav", "/t2.wav"]
    assert conversation.target_audio_paths() == ["/t1.wav", "/t2.wav"]


def test_copied_dataset_still_loads_from_its_new_place(tmp_path):
    # Paths in train.json are relative, so the dataset can move as a whole.
    shutil.copytree(DEMO, tmp_path / "demo")
    conversations, bad = load(tmp_path / "demo" / "train.json")
    assert bad == [] and all(p.startswith(str(tmp_path)) for c in conversations for p in c.audio_paths())
