"""trainer.data.load on real files: the bundled demo dataset, the audio checks, whole-input errors and the
report (each format's reader has its own tests: test_chatml.py, test_manifests.py)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.tooling import require_tool
from tests.trainer.datafiles import DEMO, REPO, SYSTEM, assistant, clip, load, user, write_json
from trainer.data.load import format_bad_samples
from trainer.data.samples import BadSample, Conversation
from trainer.errors import DataError

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
