"""Data path: batches collated from the code cache against encoding audio on the fly, per epoch.

- `cached`: what training does every epoch: `SampleDataset` + `Collator` over the bundled speech
  (codes read from the on-disk cache when the dataset was built; per batch only numpy expansion and
  padding remain). Timed as `--cached_passes` whole epochs back to back, divided by their number: one
  pass takes milliseconds, so alone it is at the mercy of the scheduler; a block of them spans long
  enough to meet the same machine load as the slow half does.
- `on_the_fly`: what `HiggsAudioV2Processor` does, and what the old scripts did every epoch: decode and
  resample each clip, run the audio tokenizer on it, then build the same batch. The tokenizer here has
  the real Higgs Audio v2 tokenizer's architecture (HuBERT-base semantic encoder + DAC acoustic
  encoder) with random weights: the cost of encoding does not depend on the weights. Encoding is seconds
  per clip on CPU, so each repeat encodes the same `--encode_samples` samples, spread evenly over the
  dataset, and the epoch figure is extrapolated in proportion to audio length (code frames of the
  subset against those of the whole epoch): encoding cost grows with the length of the audio.
- The two halves alternate over `--repeats` repeats (and which goes first), after one untimed warm-up
  of each, so load from other processes hits both alike; the speedup is the ratio of the medians, and
  `speedup_per_repeat` shows the spread.
- `loader_share`: time to draw one batch from the trainer's own train DataLoader / time of one
  training step of the benchmark model (hidden 512, 8 layers), measured in the same run. With the
  default `--dataloader_num_workers 0` the loader runs in the training process between steps, so this
  is the share of a step spent waiting for data (with workers it would prefetch while the step runs).

    .venv/bin/python bench/bench_data_path.py [--batch_size 2] [--steps 8] [--encode_samples 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from common import (
    StepClock,
    add_model_args,
    config,
    make_checkpoint,
    median_after_warmup,
    print_result,
    result_only_on_stdout,
)


def released_codec() -> Any:
    """An audio tokenizer of the released Higgs Audio v2 tokenizer's shape, random weights."""
    from transformers import HiggsAudioV2TokenizerConfig, HiggsAudioV2TokenizerModel

    return HiggsAudioV2TokenizerModel(HiggsAudioV2TokenizerConfig(
        target_bandwidths=[0.5, 1, 1.5, 2],
        acoustic_model_config={"encoder_hidden_size": 64, "downsampling_ratios": [8, 5, 4, 2, 3],
                               "decoder_hidden_size": 1024, "upsampling_ratios": [8, 5, 4, 2, 3], "hidden_size": 256},
    )).eval()


def batches_of(indices: list[int], size: int) -> list[list[int]]:
    return [indices[i:i + size] for i in range(0, len(indices), size)]


def cached_epoch(dataset: Any, collator: Callable, batch_size: int) -> None:
    """One epoch as training builds it: expand from the cached codes, pad."""
    for batch in batches_of(list(range(len(dataset))), batch_size):
        collator([dataset[j] for j in batch])


def on_the_fly(dataset: Any, collator: Callable, codec: Any, by_id: dict, indices: list[int], batch_size: int) -> None:
    """The given samples as an uncached pipeline builds them: decode, resample, encode, expand, pad."""
    from trainer.data.audio import load_audio
    from trainer.encode.code_cache import encode_waveform
    from trainer.encode.collator import expand

    for batch in batches_of(indices, batch_size):
        feats = []
        for j in batch:
            sample = dataset.samples[j]
            codes = [encode_waveform(codec, load_audio(p, 24000))[: dataset.layout.num_codebooks]
                     for p in by_id[sample.id].audio_paths()]
            feats.append(expand(type(sample)(sample.id, sample.source, sample.input_ids, codes, sample.is_target,
                                             sample.text_target_positions), dataset.layout, dataset.text_labels))
        collator(feats)


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def frames(dataset: Any, indices: list[int]) -> int:
    """Code frames of the given samples: proportional to their seconds of audio."""
    return sum(c.shape[1] for j in indices for c in dataset.samples[j].codes)


def loader_batch_seconds(trainer: Any) -> float:
    """Median seconds to draw one batch from the trainer's train DataLoader (what a step waits for)."""
    times, it = [], iter(trainer.get_train_dataloader())
    while True:
        start = time.perf_counter()
        if next(it, None) is None:
            break
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser)
    parser.add_argument("--encode_samples", type=int, default=4, help="samples encoded on the fly per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cached_passes", type=int, default=20, help="cached epochs timed together per repeat")
    ns = parser.parse_args()
    result_only_on_stdout()
    work, model_dir, codec_dir = make_checkpoint(ns)
    from trainer.commands.train import build
    from trainer.data.load import load_conversations

    cfg = config(ns, work, model_dir, codec_dir)
    trainer, _, _ = build(cfg)
    dataset, collator, bs = trainer.train_dataset, trainer.data_collator, ns.batch_size
    n = len(dataset)
    k = max(1, min(n, ns.encode_samples))
    subset = sorted({round(i * n / k) for i in range(k)})
    scale = frames(dataset, list(range(n))) / frames(dataset, subset)
    convs, _ = load_conversations(cfg.data.train_data_file, system_prompt=cfg.data.system_prompt,
                                  max_audio_seconds=30)
    by_id, codec = {c.id: c for c in convs}, released_codec()

    def cached() -> float:
        return timed(lambda: [cached_epoch(dataset, collator, bs) for _ in range(ns.cached_passes)]) / ns.cached_passes

    def fly() -> float:
        return timed(lambda: on_the_fly(dataset, collator, codec, by_id, subset, bs)) * scale

    cached_epoch(dataset, collator, bs)  # warm-up: first calls allocate and fill caches
    on_the_fly(dataset, collator, codec, by_id, subset[:1], bs)
    cached_s, fly_s = [], []
    for r in range(ns.repeats):
        if r % 2 == 0:
            cached_s.append(cached())
            fly_s.append(fly())
        else:
            fly_s.append(fly())
            cached_s.append(cached())

    clock = StepClock()
    trainer.add_callback(clock.callback)
    trainer.train()
    step = median_after_warmup(clock.times())
    per_batch = loader_batch_seconds(trainer)
    cached_med, fly_med = statistics.median(cached_s), statistics.median(fly_s)
    print_result({
        "benchmark": "data_path", "samples_per_epoch": n, "batch_size": bs, "threads": torch.get_num_threads(),
        "repeats": ns.repeats, "encoded_samples_per_repeat": len(subset),
        "epoch_extrapolation_factor": round(scale, 3),
        "epoch_seconds_cached": round(cached_med, 5), "epoch_seconds_on_the_fly": round(fly_med, 2),
        "speedup_per_epoch": round(fly_med / cached_med, 1),
        "speedup_per_repeat": [round(f / c, 1) for f, c in zip(fly_s, cached_s, strict=True)],
        "per_repeat": {"cached": [round(x, 5) for x in cached_s], "on_the_fly": [round(x, 2) for x in fly_s]},
        "dataloader_num_workers": trainer.args.dataloader_num_workers,
        "batch_seconds_loader": round(per_batch, 5), "step_seconds": round(step, 4),
        "loader_share_of_step": round(per_batch / step, 4),
    })


if __name__ == "__main__":
    main()
