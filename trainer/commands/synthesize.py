"""`higgs-audio-trainer synthesize`: speak a text (or a JSONL file of texts) with a trained model.

    higgs-audio-trainer synthesize --model_path BASE --audio_tokenizer_path TOK \\
        --adapter_path out/lora_adapters --text "Hello there." --output hello.wav
    higgs-audio-trainer synthesize ... --input prompts.jsonl --output_dir clips/

Options come from the option table (flags, the same names as env vars, `--config` YAML); see docs/synthesis.md.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from trainer import errors, fsmode
from trainer.config.options import Config
from trainer.errors import ConfigError

OPTIONS = (
    "model_path", "audio_tokenizer_path", "tokenizer_path", "attn_implementation", "adapter_path",
    "text", "reference_audio", "reference_text", "output", "input", "output_dir",
    "max_audio_seconds", "temperature", "top_k", "top_p", "seed", "system_prompt", "log_level",
)
REQUIRED = ("model_path", "audio_tokenizer_path")


def parse(argv: Sequence[str], environ: dict[str, str] | os._Environ[str]) -> Config:
    from trainer.config.cli import parse_command_args

    cfg = parse_command_args(argv, environ, "higgs-audio-trainer synthesize", OPTIONS,
                             "Synthesize speech with Higgs Audio v2 (optionally with a LoRA adapter).", REQUIRED)
    m = cfg.model
    for name in REQUIRED:
        if not getattr(m, name):
            raise ConfigError(f"--{name} / {name.upper()}: required, not set")
        if not Path(getattr(m, name)).is_dir():
            raise ConfigError(f"--{name} / {name.upper()}: directory not found: {getattr(m, name)}")
    return cfg


def plan(cfg: Config) -> tuple[list, Path, bool]:
    """(prompts, where clips go, batch?) from the options, all checked before any model loads."""
    from trainer.generate.prompts import make_prompt, read_prompts
    from trainer.generate.synthesizer import check_adapter_dir

    s = cfg.synthesis
    if s.adapter_path:
        check_adapter_dir(s.adapter_path)
    if s.input:
        if s.text or s.reference_audio or s.reference_text or s.output:
            raise ConfigError("--input / INPUT: a batch takes its texts and references from the file; drop "
                              "--text, --reference_audio, --reference_text and --output (clips go to --output_dir)")
        if not cfg.train.output_dir:
            raise ConfigError("--output_dir / OUTPUT_DIR: required with --input (where the clips are written)")
        prompts = read_prompts(s.input, "--input / INPUT")
        out = Path(cfg.train.output_dir)
        fsmode.ensure_writable_dir(out, "--output_dir / OUTPUT_DIR")
        return prompts, out, True
    if not s.output:
        raise ConfigError("--output / OUTPUT: required with --text (the WAV file to write); or give --input "
                          "and --output_dir for a batch")
    if not s.output.lower().endswith(".wav"):
        raise ConfigError(f"--output / OUTPUT: expected a .wav file name, got {s.output!r}")
    where = {"text": "--text / TEXT", "reference_audio": "--reference_audio / REFERENCE_AUDIO",
             "reference_text": "--reference_text / REFERENCE_TEXT"}
    prompt = make_prompt(Path(s.output).stem, s.text, s.reference_audio, s.reference_text, where)
    out = Path(s.output).absolute().parent
    fsmode.ensure_writable_dir(out, "--output / OUTPUT")
    return [prompt], out, False


def run(argv: Sequence[str]) -> int:
    from trainer.generate.synthesizer import Synthesizer
    from trainer.generate.wav import write_index, write_wav

    cfg = parse(argv, os.environ)
    logging.basicConfig(level=getattr(logging, cfg.train.log_level.upper()),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    prompts, out, batch = plan(cfg)  # every input checked: nothing has loaded yet
    synth = Synthesizer.load(cfg.model, cfg.synthesis.adapter_path, cfg.data.system_prompt)
    rows = []
    from tqdm import tqdm

    for i, prompt in enumerate(tqdm(prompts, desc="synthesize", unit="clip", disable=not batch, file=sys.stderr)):
        clip = synth.synthesize(prompt, cfg.generation, cfg.data.max_audio_seconds, cfg.train.seed + i)
        path = out / f"{prompt.id}.wav" if batch else Path(cfg.synthesis.output or "")
        write_wav(path, clip.samples, clip.sample_rate)
        rows.append({
            "id": prompt.id, "file": path.name, "text": prompt.text, "reference_audio": prompt.reference_audio,
            "reference_text": prompt.reference_text, "seconds": round(clip.seconds, 3), "stopped": clip.stopped,
        })
        print(f"{path}: {clip.seconds:.2f} s at {clip.sample_rate} Hz, stopped at "
              f"{'the end of the audio' if clip.stopped == 'end_of_audio' else '--max_audio_seconds'}")
    if batch:
        print(f"index: {write_index(out, rows)}")
    return errors.OK
