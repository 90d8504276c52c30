"""The seed scripts' ChatML layout is read as it is: mapped onto the native voice-cloning turns, its
`duration` metadata told apart from real segments, its batches identical to the native layout's."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import clean_env, to_argv
from tests.trainer.datafiles import (
    ARABIC,
    SEED_INSTRUCTION,
    SEED_SYSTEM,
    clip,
    load,
    seed_dataset,
    texts,
    write_json,
)
from trainer.data.audio import load_audio
from trainer.data.samples import Clip


@pytest.fixture(scope="module")
def seed_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return seed_dataset(tmp_path_factory.mktemp("seed"), count=4).parent


def _wav(seed_dir: Path, i: int) -> str:
    return str(seed_dir / "datasets" / "part_1" / f"target_{i:04d}.wav")


def test_the_seed_layout_loads_as_the_native_voice_cloning_turns(seed_dir) -> None:
    conversations, bad = load(seed_dir / "train.json")

    assert bad == []
    assert [c.id for c in conversations] == ["train-0", "train-1", "train-2", "train-3"]
    first = conversations[0]
    assert texts(first) == [
        ("system", SEED_SYSTEM),
        ("user", ARABIC[1]),  # the reference clip's transcript, then the clip as context
        ("assistant", _wav(seed_dir, 2)),
        ("user", ARABIC[0]),  # the assistant's transcript, not the instruction, prompts the target
        ("assistant", _wav(seed_dir, 1)),
    ]
    assert first.target_flags() == [False, True]
    assert first.speaker == "sample_0001"
    # `duration` is each clip's full length: metadata, so the whole file is the clip.
    assert first.clips() == [Clip(_wav(seed_dir, 2)), Clip(_wav(seed_dir, 1))]
    assert not any(SEED_INSTRUCTION.strip() in text for _, text in texts(first))


def test_native_layout_maps_onto_itself_unchanged(tmp_path) -> None:
    ref, target = clip(tmp_path / "ref.wav"), clip(tmp_path / "target.wav")
    native = {"messages": [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "reference words"},
        {"role": "assistant", "content": {"type": "audio", "audio_url": str(ref)}},
        {"role": "user", "content": [{"type": "text", "text": "target words "}]},
        {"role": "assistant", "content": [{"type": "audio", "audio_url": str(target)}]},
    ], "start_index": 4}
    (conv,), bad = load(write_json(tmp_path / "d.json", [native]))
    assert bad == []
    assert conv.messages == [
        {"role": "system", "content": [{"type": "text", "text": "sys"}]},
        {"role": "user", "content": [{"type": "text", "text": "reference words"}]},
        {"role": "assistant", "content": [{"type": "audio", "path": str(ref)}]},
        {"role": "user", "content": [{"type": "text", "text": "target words "}]},
        {"role": "assistant", "content": [{"type": "audio", "path": str(target)}]},
    ]
    assert (conv.start_index, conv.reference_turns, conv.target_flags()) == (4, frozenset(), [False, True])


def _audio(path: Path, **segment) -> dict:
    return {"type": "audio", "audio_url": str(path)} | segment


def test_every_variant_of_the_original_format_maps_to_one_layout(tmp_path) -> None:
    a, b, c, d = (clip(tmp_path / f"{n}.wav") for n in "abcd")
    system_list = {"role": "system", "content": [{"type": "text", "text": "sys"}]}
    samples = [
        # audio as a single object rather than in a list, and a scene description
        {"messages": [system_list, {"role": "scene", "content": "a quiet room"},
                      {"role": "user", "content": [{"type": "text", "text": "ref a"}, _audio(a)]},
                      {"role": "assistant", "content": [{"type": "text", "text": "say b"}, _audio(b)]}]},
        # two reference clips in one user message
        {"messages": [system_list,
                      {"role": "user", "content": ["ref a", _audio(a), "ref b", _audio(b), "please: say c"]},
                      {"role": "assistant", "content": [{"type": "text", "text": "say c"}, _audio(c)]}]},
        # several turns, start_index pointing at a later one: the earlier target is context
        {"messages": [system_list,
                      {"role": "user", "content": ["ref a", _audio(a), "say b"]},
                      {"role": "assistant", "content": _audio(b)},
                      {"role": "user", "content": "say c"},
                      {"role": "assistant", "content": [{"type": "text", "text": "say c"}, _audio(c)]},
                      {"role": "user", "content": ["ref d", _audio(d)]},
                      {"role": "assistant", "content": [{"type": "text", "text": "say a"}, _audio(a)]}],
         "start_index": 3},
    ]
    (scene, two_refs, later), bad = load(write_json(tmp_path / "d.json", samples))
    assert bad == []
    assert texts(scene) == [("system", "sys"), ("scene", "a quiet room"), ("user", "ref a"),
                            ("assistant", str(a)), ("user", "say b"), ("assistant", str(b))]
    assert scene.target_flags() == [False, True]
    assert texts(two_refs) == [("system", "sys"), ("user", "ref a"), ("assistant", str(a)), ("user", "ref b"),
                               ("assistant", str(b)), ("user", "say c"), ("assistant", str(c))]
    assert two_refs.target_flags() == [False, False, True]
    assert texts(later) == [("system", "sys"), ("user", "ref a"), ("assistant", str(a)), ("user", "say b"),
                            ("assistant", str(b)), ("user", "say c"), ("assistant", str(c)), ("user", "ref d"),
                            ("assistant", str(d)), ("user", "say a"), ("assistant", str(a))]
    assert later.target_flags() == [False, False, True, False, True]
    assert later.target_audio_paths() == [str(c), str(a)]


def test_a_real_segment_is_cut_from_the_file_and_a_full_length_duration_is_not(tmp_path) -> None:
    long = clip(tmp_path / "long.wav", seconds=1.5)
    rate = sf.info(long).samplerate
    items = [
        {"messages": [{"role": "user", "content": "x"},
                      {"role": "assistant", "content": _audio(long, offset=0.4, duration=0.6)}]},
        {"messages": [{"role": "user", "content": "x"},
                      {"role": "assistant", "content": _audio(long, duration=0.7)}]},  # from the start
        {"messages": [{"role": "user", "content": "x"},  # within the tolerance of the file's 1.5 s
                      {"role": "assistant", "content": _audio(long, duration=1.49, offset=0)}]},
    ]
    (cut, head, whole), bad = load(write_json(tmp_path / "d.json", items))
    assert bad == []
    assert cut.clips() == [Clip(str(long), 0.4, 0.6)]
    assert head.clips() == [Clip(str(long), 0.0, 0.7)]
    assert whole.clips() == [Clip(str(long))]

    full = load_audio(long, rate)
    segment = load_audio(long, rate, 0.4, 0.6)
    np.testing.assert_array_equal(segment, full[round(0.4 * rate):round(1.0 * rate)])
    assert len(load_audio(long, 16000, 0.4, 0.6)) == pytest.approx(0.6 * 16000, abs=2)


def test_seed_and_native_layouts_of_one_conversation_give_identical_batches(seed_dir, tiny_ckpt, tmp_path) -> None:
    from transformers import AutoConfig, AutoTokenizer, HiggsAudioV2TokenizerModel

    from trainer.encode.code_cache import CodeCache, clip_key, file_digest, fill_cache, tokenizer_identity
    from trainer.encode.collator import Collator, Layout, SampleDataset
    from trainer.encode.prepare import encode_conversation

    model_dir, codec_dir = tiny_ckpt
    seed = json.loads((seed_dir / "train.json").read_text(encoding="utf-8"))[:2]
    native = []
    for sample in seed:
        system, user, assistant = sample["messages"]
        ref_text, ref_audio, _instruction = user["content"]
        target_text, target_audio = assistant["content"]
        native.append({"messages": [
            system,
            {"role": "user", "content": ref_text["text"]},
            {"role": "assistant", "content": {"type": "audio", "audio_url": ref_audio["audio_url"]}},
            {"role": "user", "content": target_text["text"]},
            {"role": "assistant", "content": {"type": "audio", "audio_url": target_audio["audio_url"]}},
        ], "start_index": 4})
    native_path = write_json(seed_dir / "native.json", native)  # beside it: the same relative paths
    seed_path = seed_dir / "train.json"
    seed_convs = load(seed_path)[0][:2]
    native_convs = load(native_path)[0]

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    layout = Layout.from_model(AutoConfig.from_pretrained(model_dir), tokenizer)
    clips = sorted({c for conv in seed_convs + native_convs for c in conv.clips()}, key=str)
    keys = {c: clip_key(c, file_digest(c.path)) for c in clips}
    cache = CodeCache(tmp_path / "cache", tokenizer_identity(codec_dir))
    codec = HiggsAudioV2TokenizerModel.from_pretrained(codec_dir).eval()
    assert fill_cache(clips, cache, lambda: codec, sample_rate=24000, keys=keys, progress=False)[1] == []

    batches = []
    for convs in (seed_convs, native_convs):
        encoded = [encode_conversation(conv, tokenizer, layout, cache, keys) for conv in convs]
        dataset = SampleDataset(encoded, layout, text_labels=True)  # type: ignore[arg-type]
        batches.append(Collator(layout, text_labels=True)([dataset[i] for i in range(len(dataset))]))
    seed_batch, native_batch = batches
    assert seed_batch.keys() == native_batch.keys() >= {"input_ids", "audio_input_ids", "audio_labels", "labels"}
    for name in seed_batch:
        assert seed_batch[name].equal(native_batch[name]), name
    assert (seed_batch["audio_labels"] != -100).any()


def _tiny_clip_dataset(tmp_path: Path, seconds: float) -> Path:
    """The seed dataset plus one sample whose target lasts `seconds`."""
    data = seed_dataset(tmp_path / "data", count=4)
    samples = json.loads(data.read_text(encoding="utf-8"))
    short = tmp_path / "data" / "datasets" / "part_1" / "short.wav"
    sf.write(short, sf.read(_wav(data.parent, 1))[0][: max(1, round(seconds * 22050))], 22050)
    bad = copy.deepcopy(samples[0])
    bad["messages"][2]["content"][1]["audio_url"] = "./datasets/part_1/short.wav"
    bad["messages"][2]["content"][1]["duration"] = round(seconds, 3)
    data.write_text(json.dumps([*samples, bad], ensure_ascii=False), encoding="utf-8")
    return data


def test_a_clip_too_short_for_the_codec_is_a_bad_sample_named_in_the_report(base_args, tmp_path) -> None:
    data = _tiny_clip_dataset(tmp_path, seconds=0.004)
    args = base_args | {"train_data_file": str(data), "max_steps": "2", "save_steps": "100"}
    proc = subprocess.run([sys.executable, "-m", "trainer", "train", *to_argv(args)], env=clean_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert f"{data}[4]: clip is 0.004 s, under --min_audio_seconds 0.1" in proc.stderr
    assert "short.wav" in proc.stderr and "Traceback" not in proc.stderr


def test_an_error_the_codec_raises_on_one_clip_makes_it_a_bad_sample_and_skipping_goes_on(base_args, tmp_path):
    # With the minimum turned off, a 1 ms clip passes the header check and reaches the codec, which raises.
    data = _tiny_clip_dataset(tmp_path, seconds=0.001)
    args = base_args | {"train_data_file": str(data), "max_steps": "2", "save_steps": "100",
                        "min_audio_seconds": "0", "cache_dir": str(tmp_path / "cache")}
    stopped = subprocess.run([sys.executable, "-m", "trainer", "train", *to_argv(args)], env=clean_env(),
                             capture_output=True, text=True, timeout=300)
    assert stopped.returncode == 3, stopped.stderr[-3000:]
    assert f"{data}[4]: audio could not be decoded or encoded: {tmp_path}/data/datasets/part_1/short.wav" in (
        stopped.stderr)
    assert "Kernel size can't be greater than actual input size" in stopped.stderr  # the codec's reason, logged

    skipped = subprocess.run([sys.executable, "-m", "trainer", "train", *to_argv(args | {"skip_bad_samples": "true"})],
                             env=clean_env(), capture_output=True, text=True, timeout=300)
    assert skipped.returncode == 0, skipped.stderr[-3000:]
    assert "4 training samples, no evaluation samples, 1 bad samples skipped" in skipped.stderr
    assert (Path(args["output_dir"]) / "lora_adapters" / "adapter_model.safetensors").is_file()
