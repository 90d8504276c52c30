"""The inference prompt is the training layout's prefix, with the training side built independently: transformers'
`HiggsAudioV2Processor` and the checkpoint's chat template applied to the conversation written out by hand in the
native layout. The inference side is the project's: the data reader (both ChatML layouts, JSONL, prompts files),
`prompt_of_conversation` (samples from evaluation data) and `Synthesizer.prompt` (synthesize and samples).

The two faults an earlier audit planted without any test noticing, the reference dropped and the system message
hard-coded, are planted again below: the check must catch each."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from tests.trainer.datafiles import DEMO, SYSTEM, load, write_json, write_jsonl
from trainer.data.audio import load_audio
from trainer.data.fields import text_message
from trainer.encode.collator import Layout
from trainer.generate import synthesizer as synthesizer_module
from trainer.generate.prompts import read_prompts
from trainer.generate.sampler import prompt_of_conversation
from trainer.generate.synthesizer import Synthesizer

REF = DEMO / "audio" / "us_male" / "01.flac"
REF_TEXT = "Please close the window."
REF2 = DEMO / "audio" / "gb_female" / "00.flac"
REF2_TEXT = "Good morning to you."
TARGET = DEMO / "audio" / "us_male" / "00.flac"
TEXT = "The kettle whistled on the stove."
OWN_SYSTEM = "You are a calm narrator reading a bedtime story."  # differs from SYSTEM, the --system_prompt


@pytest.fixture(scope="module")
def tools(tiny_ckpt: tuple[Path, Path]):
    from transformers import (
        AutoConfig,
        AutoTokenizer,
        DacFeatureExtractor,
        HiggsAudioV2Processor,
        HiggsAudioV2TokenizerModel,
    )

    model_dir, codec_dir = tiny_ckpt
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    config = AutoConfig.from_pretrained(model_dir)
    codec = HiggsAudioV2TokenizerModel.from_pretrained(codec_dir).eval()
    processor = HiggsAudioV2Processor(
        feature_extractor=DacFeatureExtractor(feature_size=1, hop_length=1, padding_side="right",
                                              padding_value=0.0, sampling_rate=24000, return_attention_mask=True),
        tokenizer=tokenizer, audio_tokenizer=codec, chat_template=tokenizer.chat_template,
        audio_stream_bos_id=config.audio_stream_bos_id, audio_stream_eos_id=config.audio_stream_eos_id,
    )
    synth = Synthesizer(None, codec, tokenizer, Layout.from_model(config, tokenizer), SYSTEM)
    return processor, synth


def _audio(path: Path) -> dict:
    return {"role": "assistant", "content": [{"type": "audio", "audio": load_audio(path, 24000)}]}


def _user(text: str) -> dict:
    return {"role": "user", "content": [{"type": "text", "text": text}]}


def _system(text: str) -> dict:
    return {"role": "system", "content": [{"type": "text", "text": text}]}


def check_prompt(tools, prompt, by_hand: list[dict]) -> None:
    """The prompt of `prompt` equals the processor's layout of `by_hand` (ending with the target's audio turn)
    up to the target's `<|audio_out_bos|>`, text and reference audio alike; raises AssertionError if not."""
    processor, synth = tools
    expected = processor.apply_chat_template(by_hand, tokenize=True, return_dict=True, sampling_rate=24000,
                                             return_tensors="pt")
    ids, frames = expected["input_ids"][0].numpy(), expected["audio_input_ids"][0].numpy()
    ours = synth.prompt(prompt)
    n, f = len(ours["input_ids"]), len(ours["audio_input_ids"])
    assert n < len(ids), f"prompt of {n} tokens, training layout of {len(ids)}"
    first = next((i for i in range(n) if ours["input_ids"][i] != ids[i]), None)
    assert first is None, f"first differing token: {first}"
    assert ids[n] == synth.layout.audio_token_id  # what follows in training is the target's audio
    assert synth.tokenizer.convert_ids_to_tokens(int(ids[n - 1])) == "<|audio_out_bos|>"
    assert f < len(frames) and (frames[f] == synth.layout.stream_bos).all(), "the reference frames differ in count"
    np.testing.assert_array_equal(ours["audio_input_ids"], frames[:f])


def _community(tmp_path: Path, system: str | None = None, refs: int = 1) -> Path:
    """The seed scripts' layout: the reference clip inside the user turn between its transcript and an
    instruction, the assistant turn holding the target's transcript before its audio (start_index 0)."""
    user_content = []
    for path, text in [(REF, REF_TEXT), (REF2, REF2_TEXT)][:refs]:
        user_content += [{"type": "text", "text": text}, {"type": "audio", "audio_url": str(path)}]
    user_content.append({"type": "text", "text": "Please generate speech in the same voice."})
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": user_content},
        {"role": "assistant", "content": [{"type": "text", "text": TEXT}, {"type": "audio", "audio_url": str(TARGET)}]},
    ]
    return write_json(tmp_path / "community.json", [{"messages": messages, "start_index": 0}])


def _eval_prompt(path: Path):
    (conv,), bad = load(path)
    assert not bad
    prompt = prompt_of_conversation(conv)
    assert prompt is not None
    return prompt


def test_community_layout_sample_prompts_as_the_processor_lays_out_its_native_conversation(tools, tmp_path) -> None:
    prompt = _eval_prompt(_community(tmp_path))
    assert (prompt.text, prompt.reference_audio, prompt.reference_text) == (TEXT, str(REF), REF_TEXT)
    check_prompt(tools, prompt, [_system(SYSTEM), _user(REF_TEXT), _audio(REF), _user(TEXT), _audio(TARGET)])


def test_community_layout_with_two_references_keeps_both(tools, tmp_path) -> None:
    prompt = _eval_prompt(_community(tmp_path, refs=2))
    check_prompt(tools, prompt, [_system(SYSTEM), _user(REF_TEXT), _audio(REF), _user(REF2_TEXT), _audio(REF2),
                                 _user(TEXT), _audio(TARGET)])


def test_a_sample_with_its_own_system_message_prompts_with_it(tools, tmp_path) -> None:
    prompt = _eval_prompt(_community(tmp_path, system=OWN_SYSTEM))
    assert prompt.system == OWN_SYSTEM
    check_prompt(tools, prompt, [_system(OWN_SYSTEM), _user(REF_TEXT), _audio(REF), _user(TEXT), _audio(TARGET)])


def test_native_chatml_without_reference_prompts_with_its_system_message(tools, tmp_path) -> None:
    path = write_json(tmp_path / "native.json", [{"messages": [
        {"role": "system", "content": OWN_SYSTEM}, {"role": "user", "content": TEXT},
        {"role": "assistant", "content": {"type": "audio", "audio_url": str(TARGET)}}], "start_index": 2}])
    prompt = _eval_prompt(path)
    assert prompt.reference_audio is None
    check_prompt(tools, prompt, [_system(OWN_SYSTEM), _user(TEXT), _audio(TARGET)])


def test_jsonl_and_directory_samples_prompt_as_trained(tools, tmp_path) -> None:
    manifest = write_jsonl(tmp_path / "m.jsonl", [{"text": TEXT, "audio": str(TARGET), "ref_text": REF_TEXT,
                                                  "ref_audio": str(REF)}])
    check_prompt(tools, _eval_prompt(manifest),
                 [_system(SYSTEM), _user(REF_TEXT), _audio(REF), _user(TEXT), _audio(TARGET)])
    folder = tmp_path / "dir"
    folder.mkdir()
    (folder / "a.flac").write_bytes(TARGET.read_bytes())
    (folder / "a.txt").write_text(TEXT)
    check_prompt(tools, _eval_prompt(folder), [_system(SYSTEM), _user(TEXT), _audio(TARGET)])


def test_a_prompts_file_line_with_its_own_system_prompts_with_it(tools, tmp_path) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", [
        {"id": "own", "text": TEXT, "reference_audio": str(REF), "reference_text": REF_TEXT, "system": OWN_SYSTEM},
        {"id": "default", "text": TEXT}])
    own, default = read_prompts(str(path), "--input / INPUT")
    check_prompt(tools, own, [_system(OWN_SYSTEM), _user(REF_TEXT), _audio(REF), _user(TEXT), _audio(TARGET)])
    check_prompt(tools, default, [_system(SYSTEM), _user(TEXT), _audio(TARGET)])  # free text: --system_prompt


# ---- the planted faults: each must make the check fail ------------------------------------------------------

def _plant(monkeypatch, fault) -> None:
    real = synthesizer_module.prompt_messages
    monkeypatch.setattr(synthesizer_module, "prompt_messages", lambda prompt, default: fault(real, prompt, default))


def _no_reference(real, prompt, default):
    return real(dataclasses.replace(prompt, reference_audio=None, reference_text=None, context=None), default)


def _hard_coded_system(real, prompt, default):
    return [text_message("system", default), *real(prompt, default)[1:]]


@pytest.mark.parametrize("fault", [_no_reference, _hard_coded_system], ids=["no_reference", "hard_coded_system"])
def test_each_planted_fault_is_caught_on_community_data_with_its_own_system(tools, tmp_path, monkeypatch,
                                                                             fault) -> None:
    prompt = _eval_prompt(_community(tmp_path, system=OWN_SYSTEM))
    by_hand = [_system(OWN_SYSTEM), _user(REF_TEXT), _audio(REF), _user(TEXT), _audio(TARGET)]
    check_prompt(tools, prompt, by_hand)
    _plant(monkeypatch, fault)
    with pytest.raises(AssertionError):
        check_prompt(tools, prompt, by_hand)


@pytest.mark.parametrize("fault", [_no_reference, _hard_coded_system], ids=["no_reference", "hard_coded_system"])
def test_each_planted_fault_is_caught_on_a_prompts_file_line(tools, tmp_path, monkeypatch, fault) -> None:
    (prompt,) = read_prompts(str(write_jsonl(tmp_path / "p.jsonl", [
        {"text": TEXT, "reference_audio": str(REF), "reference_text": REF_TEXT, "system": OWN_SYSTEM}])), "--input")
    _plant(monkeypatch, fault)
    with pytest.raises(AssertionError):
        check_prompt(tools, prompt, [_system(OWN_SYSTEM), _user(REF_TEXT), _audio(REF), _user(TEXT), _audio(TARGET)])


