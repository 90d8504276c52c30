"""`higgs-audio-trainer synthesize` after a short LoRA run on the bundled data, and each bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import soundfile as sf

from tests.conftest import DEMO_DATA, clean_env, to_argv
from tests.trainer.datafiles import DEMO
from trainer import errors
from trainer.__main__ import main
from trainer.commands.train import main as train_main
from trainer.config.cli import parse_train_args

TOKENIZER_RATE = 24000


@pytest.fixture(scope="module")
def demo_run(tiny_ckpt, code_cache, tmp_path_factory) -> Path:
    """OUTPUT_DIR of a LoRA run in the demo's configuration (scripts/demo.sh), in one process, run longer
    (`MAX_STEPS=200 scripts/demo.sh`): after the demo's default 40 steps the tiny model rarely ends a stream."""
    model_dir, codec_dir = tiny_ckpt
    out = tmp_path_factory.mktemp("demo") / "run"
    env = {
        "MODEL_PATH": str(model_dir), "AUDIO_TOKENIZER_PATH": str(codec_dir), "TRAIN_DATA_FILE": str(DEMO_DATA),
        "OUTPUT_DIR": str(out), "CACHE_DIR": str(code_cache), "USE_LORA": "true",
        "LORA_MODULES_TO_SAVE": "audio_head,audio_embedding", "DISABLE_EVAL": "true", "MAX_STEPS": "200",
        "SAVE_STEPS": "100", "LOGGING_STEPS": "5", "LEARNING_RATE": "5e-3", "WARMUP_STEPS": "0", "RESUME": "never",
    }
    train_main(parse_train_args([], env))
    return out


def _base(tiny_ckpt) -> list[str]:
    model_dir, codec_dir = tiny_ckpt
    return ["synthesize", "--model_path", str(model_dir), "--audio_tokenizer_path", str(codec_dir)]


def test_synthesize_with_a_checkpoint_adapter_writes_a_wav_at_the_tokenizer_rate_within_the_limit(
    tiny_ckpt, demo_run, tmp_path, capsys
) -> None:
    wav = tmp_path / "hello.wav"
    code = main([*_base(tiny_ckpt), "--adapter_path", str(demo_run / "checkpoint-100" / "lora_adapters"),
                 "--text", "Hello there.", "--output", str(wav), "--max_synthesis_seconds", "0.4", "--seed", "3"])
    assert code == errors.OK
    info = sf.info(str(wav))
    assert info.samplerate == TOKENIZER_RATE
    assert 0 < info.duration <= 0.4
    said = capsys.readouterr().out
    assert f"{wav}:" in said and "stopped at" in said


def test_batch_with_the_final_adapter_writes_clips_an_index_and_stops_at_the_end_of_audio(
    tiny_ckpt, demo_run, tmp_path
) -> None:
    ref = DEMO / "audio" / "us_male" / "01.flac"
    prompts = tmp_path / "prompts.jsonl"
    texts = ["The kettle whistled on the stove.", "Seven boats sailed past the lighthouse.", "Please close it.",
             "Good morning to you."]
    lines = [{"text": t, "id": f"p{i}"} for i, t in enumerate(texts)]
    lines[1].update(reference_audio=str(ref), reference_text="Please close the window.")
    prompts.write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = tmp_path / "clips"
    limit = 8.0
    code = main([*_base(tiny_ckpt), "--adapter_path", str(demo_run / "lora_adapters"), "--input", str(prompts),
                 "--output_dir", str(out), "--max_synthesis_seconds", str(limit)])
    assert code == errors.OK
    rows = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["p0", "p1", "p2", "p3"]
    assert rows[1]["reference_audio"] == str(ref)
    for r in rows:
        info = sf.info(str(out / r["file"]))
        assert info.samplerate == TOKENIZER_RATE
        assert info.duration <= limit
        assert r["seconds"] == pytest.approx(info.duration, abs=1e-3)
    ended = [r for r in rows if r["stopped"] == "end_of_audio"]
    assert ended and all(r["seconds"] < limit for r in ended)


def test_the_length_limit_is_said_to_be_the_reason_when_it_cuts_a_clip(tiny_ckpt, tmp_path) -> None:
    out = tmp_path / "clips"
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"text": f"Words number {i}."}) + "\n" for i in range(4)))
    assert main([*_base(tiny_ckpt), "--input", str(prompts), "--output_dir", str(out),
                 "--max_synthesis_seconds", "0.12", "--temperature", "0"]) == errors.OK
    rows = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert {r["stopped"] for r in rows} == {"max_audio_seconds"}  # 3 frames: greedy decoding of this model runs longer
    assert all(r["seconds"] <= 0.12 for r in rows)


@pytest.fixture
def unloadable_model(tiny_ckpt, tmp_path) -> list[str]:
    """The tiny checkpoint with its weights file destroyed: any error that comes out before the weights load
    comes out alike, and any later one becomes a different error."""
    model_dir, codec_dir = tiny_ckpt
    broken = tmp_path / "model"
    shutil.copytree(model_dir, broken)
    (broken / "model.safetensors").write_bytes(b"not weights")
    return ["synthesize", "--model_path", str(broken), "--audio_tokenizer_path", str(codec_dir)]


@pytest.mark.parametrize(
    ("extra", "names"),
    [
        (["--text", "  ", "--output", "o.wav"], "--text / TEXT: empty text"),
        (["--text", "hi", "--output", "o.wav", "--reference_audio", "missing.wav", "--reference_text", "x"],
         "--reference_audio / REFERENCE_AUDIO: reference audio file not found"),
        (["--text", "hi", "--output", "o.wav", "--adapter_path", "no/such/dir"],
         "--adapter_path / ADAPTER_PATH: adapter folder not found"),
        (["--text", "hi", "--output", "o.wav", "--adapter_path", "."],
         "no adapter_config.json"),
        (["--text", "hi"], "--output / OUTPUT: required"),
        (["--text", "hi", "--output", "o.wav", "--reference_audio", str(DEMO / "audio" / "us_male" / "01.flac")],
         "--reference_text / REFERENCE_TEXT: required with --reference_audio"),
        (["--input", "prompts.jsonl"], "--output_dir / OUTPUT_DIR: required with --input"),
        (["--text", "hi", "--output", "o.wav", "--top_p", "0"], "--top_p: expected a value greater than 0"),
    ],
)
def test_bad_inputs_exit_2_naming_the_option_before_the_model_loads(
    unloadable_model, tmp_path, monkeypatch, capsys, extra, names
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "prompts.jsonl").write_text('{"text": "hi"}\n')
    assert main([*unloadable_model, *extra]) == errors.CONFIG_ERROR
    assert names in capsys.readouterr().err


def test_a_bad_prompt_line_is_named_by_file_and_line(unloadable_model, tmp_path, capsys) -> None:
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"text": "fine"}\n\n{"text": ""}\n')
    assert main([*unloadable_model, "--input", str(prompts), "--output_dir", str(tmp_path / "o")]) == 2
    assert f"{prompts}:3): field 'text': empty text" in capsys.readouterr().err


def test_model_path_comes_from_the_environment_as_for_train(tiny_ckpt, tmp_path, monkeypatch) -> None:
    model_dir, codec_dir = tiny_ckpt
    for k, v in clean_env(MODEL_PATH=str(model_dir), AUDIO_TOKENIZER_PATH=str(codec_dir)).items():
        monkeypatch.setenv(k, v)
    wav = tmp_path / "env.wav"
    assert main(["synthesize", "--text", "From the environment.", "--output", str(wav),
                 "--max_synthesis_seconds", "0.2"]) == errors.OK
    assert sf.info(str(wav)).samplerate == TOKENIZER_RATE


def test_an_adapter_of_another_base_model_exits_2(tiny_ckpt, tmp_path, capsys) -> None:
    from transformers import HiggsAudioV2ForConditionalGeneration

    from trainer.config.options import LoraArgs
    from trainer.model.assemble import apply_lora
    from trainer.model.tiny import build_tiny_checkpoint

    other, _ = build_tiny_checkpoint(tmp_path / "other", hidden_size=48)
    adapter = tmp_path / "other_adapter"
    apply_lora(HiggsAudioV2ForConditionalGeneration.from_pretrained(other), LoraArgs(use_lora=True)) \
        .save_pretrained(str(adapter))
    code = main([*_base(tiny_ckpt), "--adapter_path", str(adapter), "--text", "hi", "--output",
                 str(tmp_path / "o.wav")])
    assert code == errors.CONFIG_ERROR
    assert "--adapter_path / ADAPTER_PATH" in capsys.readouterr().err
    assert not (tmp_path / "o.wav").exists()


def test_synthesize_help_lists_its_options_with_their_env_vars(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["synthesize", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for flag, env in (("--text", "TEXT"), ("--adapter_path", "ADAPTER_PATH"), ("--max_synthesis_seconds",
                      "MAX_SYNTHESIS_SECONDS"), ("--temperature", "TEMPERATURE")):
        assert flag in text and f"[env: {env}]" in text
    assert "--train_data_file" not in text
    _ = to_argv  # the same option table as train: flags, env vars, YAML


def _one_line(err: str) -> str:
    """The one error line; before it, at most the progress line said while the tokenizer loads for the
    length check, and never the line said before the model loads."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert not any("synthesize: loading the model" in line for line in lines), lines
    errors_said = [line for line in lines if not line.startswith("synthesize: ")]
    assert len(errors_said) == 1 and errors_said == lines[-1:], lines
    return lines[-1]


def _wav(path: Path, seconds: float, rate: int = 8000) -> Path:
    import numpy as np

    sf.write(str(path), np.zeros(int(seconds * rate), dtype="int16"), rate)
    return path


@pytest.mark.parametrize("case", ["not_audio", "empty", "too_long", "existing_output", "text_too_long",
                                  "batch_reference_on_line_2", "batch_existing_index"])
def test_each_bad_synthesize_input_is_one_line_and_exit_2_before_the_model_loads(
    unloadable_model, tiny_ckpt, tmp_path, monkeypatch, capsys, case
) -> None:
    """`unloadable_model` has its weights destroyed: an error after the load would be a different one, and the
    command says "loading the model" before it loads: neither appears."""
    monkeypatch.chdir(tmp_path)
    ref = str(DEMO / "audio" / "us_male" / "01.flac")
    (tmp_path / "notes.wav").write_text("these are not samples\n")
    _wav(tmp_path / "empty.wav", 0)
    _wav(tmp_path / "long.wav", 31)  # over the default --max_reference_seconds 30
    (tmp_path / "taken.wav").write_bytes(b"an earlier clip")
    limit = json.loads((tiny_ckpt[0] / "config.json").read_text())["max_position_embeddings"]
    single = ["--text", "hi", "--output", "o.wav", "--reference_text", "Please close the window."]
    batch = tmp_path / "p.jsonl"
    batch.write_text(json.dumps({"text": "fine", "reference_audio": ref, "reference_text": "a"}) + "\n"
                     + json.dumps({"text": "bad", "reference_audio": "notes.wav", "reference_text": "a"}) + "\n")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "samples.jsonl").write_text("{}\n")
    argv, expected = {
        "not_audio": ([*single, "--reference_audio", "notes.wav"],
                      f"--reference_audio / REFERENCE_AUDIO: reference audio {tmp_path / 'notes.wav'}: "
                      "unreadable audio"),
        "empty": ([*single, "--reference_audio", "empty.wav"], "empty.wav: empty audio"),
        "too_long": ([*single, "--reference_audio", "long.wav"], "is 31.0 s, over --max_reference_seconds 30"),
        "existing_output": (["--text", "hi", "--output", "taken.wav"],
                            "--output / OUTPUT: taken.wav already exists; pass --overwrite"),
        "text_too_long": (["--text", "word " * limit, "--output", "o.wav"],
                          f"over the model's context of {limit} positions"),
        "batch_reference_on_line_2": (["--input", str(batch), "--output_dir", "new"],
                                      f"--input / INPUT ({batch}:2): field 'reference_audio': reference audio"),
        "batch_existing_index": (["--input", str(batch), "--output_dir", "old"],
                                 "--output_dir / OUTPUT_DIR: old/samples.jsonl already exists"),
    }[case]
    if case == "batch_existing_index":
        batch.write_text(json.dumps({"text": "fine"}) + "\n")
    capsys.readouterr()
    assert main([*unloadable_model, *argv]) == errors.CONFIG_ERROR
    line = _one_line(capsys.readouterr().err)
    assert expected in line, line
    assert not (tmp_path / "o.wav").exists() and (tmp_path / "taken.wav").read_bytes() == b"an earlier clip"


def test_the_checks_pass_what_they_should_then_the_model_loads(unloadable_model, tmp_path, monkeypatch,
                                                               capsys) -> None:
    """The counterpart of the test above: a 31 s reference under a raised limit and an existing output with
    --overwrite pass every check, so the destroyed weights are reached, after the "loading" line."""
    monkeypatch.chdir(tmp_path)
    _wav(tmp_path / "long.wav", 31)
    (tmp_path / "taken.wav").write_bytes(b"an earlier clip")
    from safetensors import SafetensorError

    with pytest.raises(SafetensorError):  # the destroyed weights file
        main([*unloadable_model, "--text", "hi", "--output", "taken.wav", "--overwrite", "--reference_audio",
              "long.wav", "--reference_text", "x", "--max_reference_seconds", "40"])
    assert "synthesize: loading the model" in capsys.readouterr().err


def test_a_failure_on_line_2_leaves_line_1_written_and_indexed(tiny_ckpt, tmp_path, monkeypatch) -> None:
    """A generation error (injected into the second call: what cannot be checked before the load) ends the
    batch; the first clip is already in samples.jsonl."""
    from trainer.generate.synthesizer import Synthesizer

    real, calls = Synthesizer.synthesize, []

    def second_fails(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("injected generation failure")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Synthesizer, "synthesize", second_fails)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"text": "One.", "id": "one"}) + "\n" + json.dumps({"text": "Two.", "id": "two"})
                       + "\n")
    out = tmp_path / "clips"
    with pytest.raises(RuntimeError, match="injected generation failure"):
        main([*_base(tiny_ckpt), "--input", str(prompts), "--output_dir", str(out), "--max_synthesis_seconds", "0.2"])
    rows = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["one"] and (out / "one.wav").is_file() and not (out / "two.wav").exists()


def test_a_single_clip_reports_progress_on_stderr_from_the_load_to_the_last_frame(tiny_ckpt, tmp_path,
                                                                                    capsys) -> None:
    wav = tmp_path / "hello.wav"
    assert main([*_base(tiny_ckpt), "--text", "Hello there.", "--output", str(wav),
                 "--max_synthesis_seconds", "0.4", "--temperature", "0"]) == errors.OK
    err = capsys.readouterr().err
    for said in ("synthesize: 1 prompt(s), their files checked", "synthesize: loading the model from",
                 "synthesize: model loaded in",
                 "synthesize: clip 1/1 (hello): generating, at most", "frames", ", done"):
        assert said in err, err


def test_frame_progress_counts_every_generated_step_and_leaves_the_clip_unchanged(tiny_ckpt) -> None:
    import io

    import numpy as np

    from trainer.config.options import GenerationArgs, ModelArgs
    from trainer.generate.progress import ClipProgress
    from trainer.generate.prompts import Prompt
    from trainer.generate.synthesizer import Synthesizer

    model_dir, codec_dir = tiny_ckpt
    synth = Synthesizer.load(ModelArgs(model_path=str(model_dir), audio_tokenizer_path=str(codec_dir)), None,
                             "Generate audio following instruction.")
    gen, prompt = GenerationArgs(), Prompt("p", "Words to speak.")
    plain = synth.synthesize(prompt, gen, 0.4, 7)
    text = io.StringIO()
    progress = ClipProgress("clip", 99, synth.frame_rate, interval=0.0, out=text)
    watched = synth.synthesize(prompt, gen, 0.4, 7, streamer=progress)
    assert np.array_equal(plain.samples, watched.samples)  # sampling saw the same random stream
    lines = text.getvalue().splitlines()
    steps = [line for line in lines if line.endswith(" s") and "frames (" in line]
    assert progress.frames >= 1 and len(steps) == progress.frames  # interval 0: one line per generated frame
    assert steps[-1].startswith(f"synthesize: clip: {progress.frames}/99 frames") and lines[-1].endswith("done")


def test_the_old_length_option_still_limits_synthesize_with_a_deprecation_line(tiny_ckpt, tmp_path,
                                                                                capsys) -> None:
    wav = tmp_path / "old.wav"
    assert main([*_base(tiny_ckpt), "--text", "Hello.", "--output", str(wav), "--max_audio_seconds", "0.12",
                 "--temperature", "0"]) == errors.OK
    assert sf.info(str(wav)).duration <= 0.12
    assert "--max_audio_seconds / MAX_AUDIO_SECONDS is deprecated for synthesize" in capsys.readouterr().err
