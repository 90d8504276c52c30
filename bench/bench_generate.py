"""Generation on CPU: `higgs-audio-trainer synthesize`'s code path, timed per clip and per second of audio.

Two random-weight checkpoints built as `make-tiny-model` builds them (`trainer.model.tiny.build_tiny_checkpoint`):
- tiny: the `make-tiny-model` defaults (hidden 32, 2 layers, 2 codebooks of 14 codes), the tests' model;
- mid: `--hidden_size` x `--num_layers`, `--num_codebooks` codebooks of 1024 codes (default 384 x 4 x 8),
  the same audio tokenizer (tiny: its decode only needs the codes' shape).

For each, the prompts go through what `synthesize` runs (`trainer.commands.synthesize`: `parse`, `plan`,
`Synthesizer.load`, then per prompt `Synthesizer.synthesize` and `write_wav`):
- batch 1: `--text ... --output x.wav`, one clip;
- batch 8: `--input prompts.jsonl --output_dir DIR`, `--prompts` clips. `synthesize` generates one prompt
  at a time, so batch 8 is 8 sequential generations, timed as a whole (the model load is not timed).
One untimed clip first pays for the first call's set-up. Texts are the bundled demo transcripts; sampling
uses the command's defaults and `--max_audio_seconds`, passed as synthesize's `--max_synthesis_seconds`
(random weights rarely end the audio themselves, so most clips stop at that limit: the stop reason of every
clip is in the result).

Figures: `rtf` (seconds of compute per second of audio; below 1 is faster than real time), `frames_per_second`
(audio frames kept per second, every codebook of a frame together; `generate_steps` counts the decoding
steps `model.generate` ran, which include the stream's BOS and delay frames, and any steps after a clip's
end when generation did not stop there), and the baseline, measured in the
same call: `model.generate` itself (the time spent inside the model's own generation loop, timed by wrapping
it on the loaded model). `ratio_to_generate` is the whole clip's time / that: what our prompt layout, code
unpacking, audio-tokenizer decode and WAV writing add. `mid_vs_tiny` compares the two models' frame rates.

The feature is broken (exit 1) when a clip has no audio, no WAV file, or a stop reason other than the two
`synthesize` reports. Target: `ratio_to_generate` at most `--max_ratio` (default 1.5) for both runs of the
mid model (of every run when only tiny runs: its clips take milliseconds, so the audio tokenizer's decode
weighs more than the model, and shared cores swing the ratio); a miss exits 1 after the result is printed.
`load_average_1m` (before, after) shows how busy the machine was.

    .venv/bin/python bench/bench_generate.py [--hidden_size 384] [--num_layers 4] [--max_audio_seconds 4]
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import soundfile as sf
from common import print_result, result_only_on_stdout  # also puts the repository on sys.path

from tests.trainer.datafiles import demo_pairs

STOPS = ("end_of_audio", "max_audio_seconds")


def checkpoint(work: Path, name: str, **size: int) -> tuple[Path, Path]:
    from trainer.model.tiny import build_tiny_checkpoint

    out = work / name
    if not (out / "model" / "config.json").is_file():
        build_tiny_checkpoint(out, **size)
    return out / "model", out / "audio_tokenizer"


def run_synthesize(argv: list[str]) -> dict[str, Any]:
    """`synthesize`'s own steps on `argv`; the prompt loop timed, and `model.generate` timed inside it."""
    from trainer.commands.synthesize import parse, plan
    from trainer.generate.synthesizer import Synthesizer
    from trainer.generate.wav import write_wav

    cfg = parse(argv, {})
    prompts, _, out, batch = plan(cfg)
    limit = cfg.synthesis.max_synthesis_seconds
    synth = Synthesizer.load(cfg.model, cfg.synthesis.adapter_path, cfg.data.system_prompt)
    inner = synth.model.generate
    in_generate: list[float] = []
    steps: list[int] = []

    def timed_generate(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        out = inner(*args, **kwargs)
        in_generate.append(time.perf_counter() - start)
        steps.append(int(out.shape[1]))  # decoding steps run (no reference audio: no prompt frames in front)
        return out

    synth.model.generate = timed_generate
    synth.synthesize(prompts[0], cfg.generation, limit, cfg.train.seed)  # warm-up
    in_generate.clear()
    steps.clear()
    clips = []
    start = time.perf_counter()
    for i, prompt in enumerate(prompts):  # as `synthesize.run` does, without its progress bar and prints
        clip = synth.synthesize(prompt, cfg.generation, limit, cfg.train.seed + i)
        path = out / f"{prompt.id}.wav" if batch else Path(cfg.synthesis.output or "")
        write_wav(path, clip.samples, clip.sample_rate)
        clips.append((path, clip))
    seconds = time.perf_counter() - start
    audio = sum(c.seconds for _, c in clips)
    frames = sum(round(c.seconds * synth.frame_rate) for _, c in clips)
    broken = [f"{p.name}: {c.seconds:.3f} s, stopped {c.stopped!r}, file {'ok' if p.is_file() else 'missing'}"
              for p, c in clips if c.seconds <= 0 or c.stopped not in STOPS or not p.is_file()
              or sf.info(str(p)).frames != len(c.samples)]
    gen = sum(in_generate)
    return {
        "parameters": sum(t.numel() for t in synth.model.parameters()),
        "clips": len(clips), "seconds": round(seconds, 3), "audio_seconds": round(audio, 3), "frames": frames,
        "rtf": round(seconds / audio, 4) if audio else None,
        "frames_per_second": round(frames / seconds, 1),
        "generate_seconds": round(gen, 3),
        "generate_steps": sum(steps), "generate_steps_per_second": round(sum(steps) / gen, 1) if gen else None,
        "ratio_to_generate": round(seconds / gen, 3) if gen else None,
        "stopped": {s: sum(c.stopped == s for _, c in clips) for s in STOPS},
        "broken": broken,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden_size", type=int, default=384, help="the mid-size model's hidden size")
    parser.add_argument("--num_layers", type=int, default=4, help="the mid-size model's layers")
    parser.add_argument("--num_codebooks", type=int, default=8, help="the mid-size model's codebooks (1024 codes)")
    parser.add_argument("--models", default="tiny,mid", help="which of tiny, mid to run")
    parser.add_argument("--prompts", type=int, default=8, help="prompts of the batch run (one JSONL file)")
    parser.add_argument("--max_audio_seconds", type=float, default=4.0, help="the longest clip generated")
    parser.add_argument("--max_ratio", type=float, default=1.5, help="target: clip time / model.generate time")
    parser.add_argument("--workdir", default=None, help="keep checkpoints and clips here (default: a temp dir)")
    ns = parser.parse_args()
    result_only_on_stdout()
    if not ns.workdir:
        ns.workdir = tempfile.mkdtemp(prefix="higgs-bench-gen-")
        atexit.register(shutil.rmtree, ns.workdir, ignore_errors=True)
    work = Path(ns.workdir)
    work.mkdir(parents=True, exist_ok=True)
    texts = [text for text, _ in demo_pairs()]
    jsonl = work / "prompts.jsonl"
    jsonl.write_text("".join(json.dumps({"id": f"p{i + 1}", "text": texts[i % len(texts)]}) + "\n"
                             for i in range(ns.prompts)))
    sizes = {"tiny": {}, "mid": {"hidden_size": ns.hidden_size, "num_layers": ns.num_layers,
                                 "num_codebooks": ns.num_codebooks, "codebook_size": 1024}}
    result: dict[str, Any] = {"benchmark": "generate", "cpu_count": os.cpu_count(),
                              "torch_threads": None, "max_audio_seconds": ns.max_audio_seconds, "models": {}}
    import torch

    result["torch_threads"] = torch.get_num_threads()
    load_before = round(os.getloadavg()[0], 2)  # other work on the machine: its load before and after
    for name in ns.models.split(","):
        model, codec = checkpoint(work, name, **sizes[name])
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(model)
        common = ["--model_path", str(model), "--audio_tokenizer_path", str(codec),
                  "--max_synthesis_seconds", str(ns.max_audio_seconds), "--log_level", "warning"]
        out_dir = work / f"clips-{name}"
        shutil.rmtree(out_dir, ignore_errors=True)
        out_dir.mkdir(parents=True)
        entry: dict[str, Any] = {
            "hidden_size": config.hidden_size, "num_layers": config.num_hidden_layers,
            "num_codebooks": config.num_codebooks,
            "batch_1": run_synthesize([*common, "--text", texts[0], "--output", str(out_dir / "one.wav")]),
            f"batch_{ns.prompts}": run_synthesize([*common, "--input", str(jsonl), "--output_dir", str(out_dir)]),
            "batch_is_sequential": True,
        }
        result["models"][name] = entry
        print(f"{name}: {json.dumps(entry)}", file=sys.stderr)
    models = result["models"]
    if {"tiny", "mid"} <= set(models):
        result["mid_vs_tiny_frames_per_second"] = round(
            models["mid"]["batch_1"]["frames_per_second"] / models["tiny"]["batch_1"]["frames_per_second"], 4)
    runs = {f"{m}/{b}": r for m, e in models.items() for b, r in e.items() if b.startswith("batch_")
            and isinstance(r, dict)}
    broken = [f"{k}: {b}" for k, r in runs.items() for b in r["broken"]]
    judged = "mid/" if "mid" in models else ""  # the tiny model's clips are too short to time the rest against
    missed = [k for k, r in runs.items() if k.startswith(judged)
              and (r["ratio_to_generate"] is None or r["ratio_to_generate"] > ns.max_ratio)]
    result["load_average_1m"] = [load_before, round(os.getloadavg()[0], 2)]
    result["target"] = {"max_ratio_to_generate": ns.max_ratio, "met": not missed and not broken, "missed": missed}
    print_result(result)
    if broken:
        raise SystemExit("generation is broken: " + "; ".join(broken))
    if missed:
        raise SystemExit(f"target missed: clip time over {ns.max_ratio:g}x model.generate's in {', '.join(missed)}")


if __name__ == "__main__":
    main()
