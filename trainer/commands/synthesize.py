r"""`higgs-audio-trainer synthesize`: speak a text (or a JSONL file of texts) with a trained model.

    higgs-audio-trainer synthesize --model_path BASE --audio_tokenizer_path TOK \
        --adapter_path out/lora_adapters --text "Hello there." --output hello.wav
    higgs-audio-trainer synthesize ... --input prompts.jsonl --output_dir clips/

Options come from the option table (flags, the same names as env vars, `--config` YAML); see docs/synthesis.md.
Every input is checked before the model loads (`trainer.generate.inputs`); progress goes to stderr.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from trainer import errors, fsmode
from trainer.config.options import Config
from trainer.config.values import SPECS, label
from trainer.errors import ConfigError

OPTIONS = (
    "model_path", "audio_tokenizer_path", "tokenizer_path", "attn_implementation", "adapter_path",
    "text", "reference_audio", "reference_text", "max_reference_seconds", "output", "input", "output_dir",
    "overwrite", "max_synthesis_seconds", "max_audio_seconds", "temperature", "top_k", "top_p", "seed",
    "system_prompt", "log_level",
)
REQUIRED = ("model_path", "audio_tokenizer_path")
# Training's clip limit, once synthesize's too: still read (with a deprecation line), no longer in its --help.
DEPRECATED = ("max_audio_seconds",)
DEPRECATED_LIMIT = label("max_audio_seconds")


def _given(name: str, argv: Sequence[str], environ: Mapping[str, str]) -> bool:
    """Whether the option was set on the command line or in the environment (not left at its default)."""
    spec = SPECS[name]
    return (any(a == spec.flag or a.startswith(spec.flag + "=") for a in argv)
            or bool(environ.get(spec.env, "").strip()))


def generation_limit(cfg: Config, argv: Sequence[str], environ: Mapping[str, str]) -> float:
    """--max_synthesis_seconds; the training option --max_audio_seconds still works here, with a deprecation line."""
    if _given("max_audio_seconds", argv, environ) and not _given("max_synthesis_seconds", argv, environ):
        from trainer.generate.progress import say

        say(f"{DEPRECATED_LIMIT} is deprecated for synthesize (it is the training clip limit); use "
            f"{label('max_synthesis_seconds')} ({cfg.data.max_audio_seconds:g} taken from it)")
        return cfg.data.max_audio_seconds
    return cfg.synthesis.max_synthesis_seconds


def parse(argv: Sequence[str], environ: Mapping[str, str]) -> Config:
    """The options of `synthesize` alone; the model and audio tokenizer directories must exist."""
    from trainer.config.cli import parse_command_args

    cfg = parse_command_args(argv, environ, "higgs-audio-trainer synthesize", OPTIONS,
                             "Synthesize speech with Higgs Audio v2 (optionally with a LoRA adapter).", REQUIRED,
                             hidden=DEPRECATED)
    m = cfg.model
    for name in REQUIRED:
        if not getattr(m, name):
            raise ConfigError(f"{label(name)}: required, not set")
        if not Path(getattr(m, name)).is_dir():
            raise ConfigError(f"{label(name)}: directory not found: {getattr(m, name)}")
    return cfg


def plan(cfg: Config) -> tuple[list, list[str], Path, bool]:
    """(prompts, where each comes from, where clips go, batch?), with every file input and output checked."""
    from trainer.generate.inputs import check_outputs, check_reference, prompt_lines
    from trainer.generate.prompts import make_prompt, read_prompts
    from trainer.generate.synthesizer import check_adapter_dir
    from trainer.generate.wav import INDEX

    s = cfg.synthesis
    if s.adapter_path:
        check_adapter_dir(s.adapter_path)
    if s.input:
        if s.text or s.reference_audio or s.reference_text or s.output:
            raise ConfigError(f"{label('input')}: a batch takes its texts and references from the file; drop "
                              "--text, --reference_audio, --reference_text and --output (clips go to --output_dir)")
        if not cfg.train.output_dir:
            raise ConfigError(f"{label('output_dir')}: required with --input (where the clips are written)")
        prompts = read_prompts(s.input, label("input"))
        lines = prompt_lines(s.input)
        wheres = [f"{label('input')} ({s.input}:{lines.get(p.id, '?')})" for p in prompts]
        for p, where in zip(prompts, wheres, strict=True):
            if p.reference_audio:
                check_reference(p.reference_audio, f"{where}: field 'reference_audio'", s.max_reference_seconds)
        out = Path(cfg.train.output_dir)
        fsmode.ensure_writable_dir(out, label("output_dir"))
        check_outputs([out / INDEX, *(out / f"{p.id}.wav" for p in prompts)], label("output_dir"),
                      s.overwrite)
        return prompts, wheres, out, True
    if not s.output:
        raise ConfigError(f"{label('output')}: required with --text (the WAV file to write); or give --input "
                          "and --output_dir for a batch")
    if not s.output.lower().endswith(".wav"):
        raise ConfigError(f"{label('output')}: expected a .wav file name, got {s.output!r}")
    where = {"text": label("text"), "reference_audio": label("reference_audio"),
             "reference_text": label("reference_text")}
    prompt = make_prompt(Path(s.output).stem, s.text, s.reference_audio, s.reference_text, where)
    if prompt.reference_audio:
        check_reference(prompt.reference_audio, where["reference_audio"], s.max_reference_seconds)
    out = Path(s.output).absolute().parent
    fsmode.ensure_writable_dir(out, label("output"))
    check_outputs([Path(s.output)], label("output"), s.overwrite)
    return [prompt], [where["text"]], out, False


def run(argv: Sequence[str]) -> int:
    """`higgs-audio-trainer synthesize`: speak each prompt to a WAV file; returns the exit code."""
    from trainer.generate.progress import ClipProgress, say

    cfg = parse(argv, os.environ)
    logging.basicConfig(level=getattr(logging, cfg.train.log_level.upper()),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    limit = generation_limit(cfg, argv, os.environ)
    prompts, wheres, out, batch = plan(cfg)  # files only: torch and transformers are not imported yet
    say(f"{len(prompts)} prompt(s), their files checked; reading the text tokenizer to check their length")
    from trainer.generate.inputs import check_prompt_lengths
    from trainer.generate.synthesizer import Synthesizer
    from trainer.generate.wav import write_index, write_wav
    from trainer.model.load import load_parts

    # the tokenizer and configs only: a text the model cannot hold is named before the weights are read
    check_prompt_lengths(prompts, wheres, load_parts(cfg.model), cfg.data.system_prompt, limit)
    say(f"loading the model from {cfg.model.model_path}" + (f" with the adapter {cfg.synthesis.adapter_path}"
                                                           if cfg.synthesis.adapter_path else ""))
    started = time.monotonic()
    synth = Synthesizer.load(cfg.model, cfg.synthesis.adapter_path, cfg.data.system_prompt)
    say(f"model loaded in {time.monotonic() - started:.1f} s")
    max_frames = max(1, math.floor(limit * synth.frame_rate)) + synth.layout.num_codebooks
    rows = []
    for i, prompt in enumerate(prompts):
        progress = ClipProgress(f"clip {i + 1}/{len(prompts)} ({prompt.id})", max_frames, synth.frame_rate)
        clip = synth.synthesize(prompt, cfg.generation, limit, cfg.train.seed + i, streamer=progress)
        path = out / f"{prompt.id}.wav" if batch else Path(cfg.synthesis.output or "")
        write_wav(path, clip.samples, clip.sample_rate)
        rows.append({
            "id": prompt.id, "file": path.name, "text": prompt.text, "reference_audio": prompt.reference_audio,
            "reference_text": prompt.reference_text, "seconds": round(clip.seconds, 3), "stopped": clip.stopped,
        })
        if batch:  # indexed as soon as it is written: a failure on a later line leaves this one findable
            write_index(out, rows)
        print(f"{path}: {clip.seconds:.2f} s at {clip.sample_rate} Hz, stopped at "
              f"{'the end of the audio' if clip.stopped == 'end_of_audio' else '--max_synthesis_seconds'}")
    if batch:
        print(f"index: {out / 'samples.jsonl'}")
    return errors.OK
