"""Rendering for the dataset index: the per-sample path (`apply_chat_template` + `__call__` per conversation) against
the chunked fast path (`trainer.encode.index_chunks`), on the same conversations in the same run.

The conversations are `bench_data_scale.py`'s (the seed scripts' ChatML layout), the tokenizer the tiny checkpoint's
(a Llama-3 vocabulary with Higgs Audio's added tokens). Prints ms per sample of each path, best of `--repeats`, and
the ratio (per-sample / fast, above 1: the fast path is faster); exits 1 when the two give different ids, or when
the fast path was not taken.

    .venv/bin/python bench/bench_render.py [--samples 5000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from common import print_result, result_only_on_stdout

from tests.trainer.datafiles import demo_pairs, seed_sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    ns = parser.parse_args()
    from transformers import AutoTokenizer

    from trainer.config.options import DataArgs
    from trainer.encode.collator import Layout
    from trainer.encode.index_build import CHUNK
    from trainer.encode.index_chunks import ChunkRenderer
    from trainer.encode.prepare import read_dataset, render
    from trainer.model.tiny import build_tiny_checkpoint

    work = Path(tempfile.mkdtemp(prefix="higgs-render-"))
    try:
        model_dir, _ = build_tiny_checkpoint(work / "tiny")
        pairs = [(text, str(path)) for text, path in demo_pairs()]
        samples = [seed_sample(pairs[i % len(pairs)], pairs[(i + 1) % len(pairs)], 1.0, f"spk{i % 50}")
                   for i in range(ns.samples)]
        (work / "train.json").write_text(json.dumps(samples))
        convs, bad = read_dataset(DataArgs(), str(work / "train.json"))
        if bad or len(convs) != ns.samples:
            raise SystemExit(f"{len(bad)} bad samples of {ns.samples}: {bad[:1]}")
        tok = AutoTokenizer.from_pretrained(model_dir)
        layout = Layout(pad_id=0, audio_token_id=tok.convert_tokens_to_ids("<|AUDIO_OUT|>"), audio_delay_token_id=0,
                        eot_id=tok.convert_tokens_to_ids("<|eot_id|>"), stream_bos=0, stream_eos=1, num_codebooks=8)
        slow_times, fast_times, renderer = [], [], None
        for _ in range(ns.repeats):
            started = time.perf_counter()
            slow = [render(c, tok, layout) for c in convs]
            slow_times.append(time.perf_counter() - started)
            renderer = ChunkRenderer(lambda c: render(c, tok, layout), tokenizer=tok, layout=layout, keys={},
                                     frames=lambda key: 1, num_codebooks=8)
            started = time.perf_counter()
            fast = [r for i in range(0, len(convs), CHUNK) for r in renderer.rendered(convs[i:i + CHUNK])]
            fast_times.append(time.perf_counter() - started)
            if fast != slow:
                first = next(i for i, (a, b) in enumerate(zip(fast, slow, strict=True)) if a != b)
                print(f"the paths differ at sample {first}", file=sys.stderr)
                sys.exit(1)
        assert renderer is not None
        if renderer.fast is None or renderer.fast_chunks == 0:
            print("the fast path was not taken", file=sys.stderr)
            sys.exit(1)
        slow_ms, fast_ms = 1e3 * min(slow_times) / len(convs), 1e3 * min(fast_times) / len(convs)
        print_result({"bench": "render", "samples": len(convs), "repeats": ns.repeats,
                      "per_sample_ms": round(slow_ms, 4), "fast_ms": round(fast_ms, 4),
                      "ratio": round(slow_ms / fast_ms, 2), "fast_chunks": renderer.fast_chunks,
                      "same_ids": True})
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    result_only_on_stdout()
    main()
