"""trainer.data.chatml through `load_conversations`: ChatML lists written here, good and bad in every way."""

from __future__ import annotations

import pytest

from tests.trainer.datafiles import SYSTEM, assistant, clip, load, texts, user, write_json

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
    "user-audio-without-transcript": (
        {"messages": [{"role": "user", "content": [{"type": "audio", "audio_url": GOOD}]}, assistant(GOOD)]},
        "messages[0].content[0]: reference audio with no transcript before it in the user message",
    ),
    "assistant-text-after-audio": (
        {"messages": [user("x"), {"role": "assistant", "content": [{"type": "audio", "audio_url": GOOD}, "more"]}]},
        "messages[1]: text after the last audio of an assistant message",
    ),
    "assistant-audio-without-transcript": (
        {"messages": [{"role": "system", "content": "s"}, assistant(GOOD)]},
        "messages[1].content: assistant audio with no transcript: give its text as a text item before it",
    ),
    "offset-not-a-number": (
        {"messages": [user("x"), {"role": "assistant", "content": {"type": "audio", "audio_url": GOOD,
                                                                   "offset": "0.5"}}]},
        "messages[1].content: 'offset' must be a number of seconds >= 0 or null, got '0.5'",
    ),
    "duration-negative": (
        {"messages": [user("x"), {"role": "assistant", "content": {"type": "audio", "audio_url": GOOD,
                                                                   "duration": -1}}]},
        "'duration' must be a number of seconds >= 0 or null, got -1",
    ),
    "duration-zero": (
        {"messages": [user("x"), {"role": "assistant", "content": {"type": "audio", "audio_url": GOOD,
                                                                   "duration": 0}}]},
        "messages[1].content: 'duration' must be above 0 seconds, got 0",
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
    "segment-offset-past-the-end": (
        {
            "messages": [
                user("x"),
                {"role": "assistant", "content": {"type": "audio", "audio_url": GOOD, "offset": 1.5}},
            ]
        },
        "offset 1.5 s is at or past the end of {dir}/good.wav (0.500 s)",
    ),
    "segment-ends-past-the-end": (
        {
            "messages": [
                user("x"),
                {"role": "assistant", "content": {"type": "audio", "audio_url": GOOD, "offset": 0.2,
                                                  "duration": 0.4}},
            ]
        },
        "offset 0.2 s + duration 0.4 s ends past the end of {dir}/good.wav (0.500 s)",
    ),
    "duration-longer-than-the-file": (
        {
            "messages": [
                user("x"),
                {"role": "assistant", "content": {"type": "audio", "audio_url": GOOD, "duration": 0.7}},
            ]
        },
        "offset 0 s + duration 0.7 s ends past the end of {dir}/good.wav (0.500 s)",
    ),
    "clip-too-short": (
        {
            "messages": [
                user("x"),
                {"role": "assistant", "content": {"type": "audio", "audio_url": GOOD, "offset": 0.1,
                                                  "duration": 0.005}},
            ]
        },
        "clip is 0.005 s, under --min_audio_seconds 0.1 (too short for the audio tokenizer to encode): "
        "{dir}/good.wav [0.1 s to 0.105 s]",
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
