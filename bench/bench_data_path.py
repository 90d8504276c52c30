"""Data path: batches collated from the code cache against encoding audio on the fly, per epoch.

- `cached`: what training does every epoch: `SampleDataset` + `Collator` over the bundled speech
  (codes read from the on-disk cache when the dataset was built; per batch only numpy expansion and
  padding remain).
- `on_the_fly`: what `HiggsAudioV2Processor` does, and what the old scripts did every epoch: decode and
  resample each clip, run the audio tokenizer on it, then build the same batch. The tokenizer here has
  the real Higgs Audio v2 tokenizer's architecture (HuBERT-base semantic encoder + DAC acoustic
  encoder) with random weights: the cost of encoding does not depend on the weights.
- `loader_share`: time to produce one batch from the cache / time of one training step of the benchmark
  model (hidden 512, 8 layers), measured in the same run: the share of a step the loader would block
  with zero workers; with the default of one worker it prefetches while the step runs.

    .venv/bin/python bench/bench_data_path.py [--batch_size 2] [--steps 8]
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from common import StepClock, add_model_args, config, make_checkpoint, median_after_warmup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser)
    ns = parser.parse_args()
    work, model_dir, codec_dir = make_checkpoint(ns)
    from transformers import HiggsAudioV2TokenizerConfig, HiggsAudioV2TokenizerModel

    from trainer.audio import load_audio
    from trainer.codes import encode_waveform
    from trainer.collator import expand
    from trainer.data import load_conversations
    from trainer.run import build

    cfg = config(ns, work, model_dir, codec_dir)
    trainer, _, _ = build(cfg)
    dataset, collator = trainer.train_dataset, trainer.data_collator
    n = len(dataset)

    start = time.perf_counter()
    for i in range(0, n, ns.batch_size):
        collator([dataset[j] for j in range(i, min(n, i + ns.batch_size))])
    cached = time.perf_counter() - start

    real_codec = HiggsAudioV2TokenizerModel(HiggsAudioV2TokenizerConfig(  # the released tokenizer's shape
        target_bandwidths=[0.5, 1, 1.5, 2],
        acoustic_model_config={"encoder_hidden_size": 64, "downsampling_ratios": [8, 5, 4, 2, 3],
                               "decoder_hidden_size": 1024, "upsampling_ratios": [8, 5, 4, 2, 3], "hidden_size": 256},
    )).eval()
    convs, _ = load_conversations(cfg.data.train_data_file, system_prompt=cfg.data.system_prompt,
                                  max_audio_seconds=30)
    by_id = {c.id: c for c in convs}
    start = time.perf_counter()
    for i in range(0, n, ns.batch_size):
        feats = []
        for j in range(i, min(n, i + ns.batch_size)):
            sample = dataset.samples[j]
            conv = by_id[sample.id]
            codes = [encode_waveform(real_codec, load_audio(p, 24000))[: dataset.layout.num_codebooks]
                     for p in conv.audio_paths()]
            feats.append(expand(type(sample)(sample.id, sample.source, sample.input_ids, codes, sample.is_target,
                                             sample.text_target_positions), dataset.layout, dataset.text_labels))
        collator(feats)
    on_the_fly = time.perf_counter() - start

    clock = StepClock()
    trainer.add_callback(clock.callback)
    trainer.train()
    step = median_after_warmup(clock.times())
    per_batch = cached / ((n + ns.batch_size - 1) // ns.batch_size)
    print(json.dumps({
        "benchmark": "data_path", "samples_per_epoch": n, "batch_size": ns.batch_size,
        "threads": torch.get_num_threads(),
        "epoch_seconds_cached": round(cached, 4), "epoch_seconds_on_the_fly": round(on_the_fly, 2),
        "speedup_per_epoch": round(on_the_fly / cached, 1),
        "batch_seconds_cached": round(per_batch, 5), "step_seconds": round(step, 4),
        "loader_share_of_step": round(per_batch / step, 4),
    }, indent=2))


if __name__ == "__main__":
    main()
