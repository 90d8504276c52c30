"""The synthesis prompt is the training layout's prefix, and generated codes revert to the trained ones."""

from __future__ import annotations

import numpy as np

from tests.trainer.datafiles import DEMO, SYSTEM, load, write_jsonl
from trainer.config.options import ModelArgs
from trainer.encode.code_cache import encode_waveform
from trainer.encode.collator import EncodedSample, Layout, delay_pattern, expand, tokenize_conversation
from trainer.generate.layout import context_clips, generated_codes, prompt_arrays, prompt_messages
from trainer.generate.prompts import Prompt


def test_prompt_equals_the_training_layout_prefix_of_the_same_conversation(tiny_ckpt, tmp_path) -> None:
    from trainer.data.audio import load_audio
    from trainer.model.load import load_audio_tokenizer, load_parts

    model_dir, codec_dir = tiny_ckpt
    args = ModelArgs(model_path=str(model_dir), audio_tokenizer_path=str(codec_dir))
    parts = load_parts(args)
    layout = Layout.from_model(parts.model_config, parts.tokenizer)
    codec = load_audio_tokenizer(args)
    ref, target = DEMO / "audio" / "us_male" / "01.flac", DEMO / "audio" / "us_male" / "00.flac"
    manifest = write_jsonl(tmp_path / "m.jsonl", [{
        "text": "The kettle whistled on the stove.", "audio": str(target),
        "ref_text": "Please close the window.", "ref_audio": str(ref),
    }])
    (conv,), bad = load(manifest)
    assert not bad
    rate = parts.codec_config.sample_rate
    codes = [encode_waveform(codec, load_audio(p, rate)) for p in conv.audio_paths()]
    training = expand(
        EncodedSample(conv.id, conv.source, tokenize_conversation(parts.tokenizer, conv.messages, layout), codes,
                      conv.target_flags()),
        layout, text_labels=False,
    )
    messages = prompt_messages(Prompt("p", "The kettle whistled on the stove.", str(ref), "Please close the window."),
                               SYSTEM)
    assert [c.path for c in context_clips(messages)] == [str(ref)]
    prompt = prompt_arrays(parts.tokenizer, layout, messages, codes[:1])
    n, f = len(prompt["input_ids"]), len(prompt["audio_input_ids"])
    assert f == codes[0].shape[1] + 2 + layout.num_codebooks - 1  # the whole reference, delayed
    np.testing.assert_array_equal(prompt["input_ids"], training["input_ids"][:n])
    np.testing.assert_array_equal(prompt["audio_input_ids"], training["audio_input_ids"][:f])
    # what follows in training is the target's audio, starting with its stream-BOS frame
    assert training["input_ids"][n] == layout.audio_token_id
    assert (training["audio_input_ids"][f] == layout.stream_bos).all()
    assert parts.tokenizer.convert_ids_to_tokens(int(prompt["input_ids"][-1])) == "<|audio_out_bos|>"


def _layout(k: int = 3) -> Layout:
    return Layout(pad_id=0, audio_token_id=1, audio_delay_token_id=2, eot_id=3, stream_bos=14, stream_eos=15,
                  num_codebooks=k)


def test_generated_codes_revert_the_delay_pattern_and_see_the_end_of_the_stream() -> None:
    lay = _layout()
    codes = np.random.default_rng(0).integers(0, 14, size=(3, 9))
    delayed = delay_pattern(codes, lay.stream_bos, lay.stream_eos)
    back, ended = generated_codes(delayed, lay)
    np.testing.assert_array_equal(back, codes)
    assert ended
    cut, ended = generated_codes(delayed[:6], lay)  # stopped by the length limit: no all-EOS frame
    assert not ended
    np.testing.assert_array_equal(cut, codes[:, :3])
