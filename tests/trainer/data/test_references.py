"""Reference pairing: deterministic per seed, never the target itself, the count and length asked for."""

from __future__ import annotations

from trainer.data.pairs import pair_messages
from trainer.data.references import pair_references
from trainer.data.samples import Conversation


def _corpus(n: int, speaker: str = "s") -> list[Conversation]:
    out = []
    for i in range(n):
        messages = pair_messages("sys", f"text {i}", f"/a/{speaker}{i}.wav")
        out.append(Conversation(f"{speaker}{i}", f"src{i}", messages, len(messages) - 1, speaker))
    return out


def _refs(conv: Conversation) -> list[str]:
    return conv.audio_paths()[:-1]


def test_pairs_are_deterministic_per_seed_never_the_target_and_of_the_count_asked():
    convs = _corpus(12)
    seconds = {c.audio_paths()[0]: 3.0 for c in convs}
    a, report = pair_references(convs, seconds, count=2, max_seconds=20, seed=1)
    b, _ = pair_references(convs, seconds, count=2, max_seconds=20, seed=1)
    c, _ = pair_references(convs, seconds, count=2, max_seconds=20, seed=2)
    assert [_refs(x) for x in a] == [_refs(x) for x in b]
    assert [_refs(x) for x in a] != [_refs(x) for x in c]
    for conv in a:
        refs = _refs(conv)
        assert len(refs) == 2 == len(set(refs)) and conv.audio_paths()[-1] not in refs
        assert conv.target_flags() == [False, False, True]
        # Each reference is preceded by its own transcript.
        for ref in refs:
            i = int(ref.rsplit("s", 1)[1].split(".")[0])
            turn = next(j for j, m in enumerate(conv.messages) if m["content"][0].get("path") == ref)
            assert conv.messages[turn - 1]["content"][0]["text"] == f"text {i}"
    assert report.paired == 12 and report.without_reference == 0


def test_long_clips_are_never_references_and_a_lone_speaker_trains_without():
    convs = _corpus(3) + _corpus(1, "solo")
    seconds = {c.audio_paths()[0]: 3.0 for c in convs} | {"/a/s0.wav": 25.0}
    out, report = pair_references(convs, seconds, count=1, max_seconds=20, seed=0)
    assert all("/a/s0.wav" not in _refs(c) for c in out)
    assert _refs(out[0]) in (["/a/s1.wav"], ["/a/s2.wav"])  # a long clip is still a target
    assert _refs(out[3]) == [] and report.without_reference == 1 and report.single_clip_speakers == 1
