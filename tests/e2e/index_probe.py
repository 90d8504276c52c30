"""Run under torchrun by tests: the real training run (options from the environment), recording each rank's
batches (a digest of every trained batch's tensors, in step order) and the dataset index it read."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from trainer.commands.train import build, save_final
from trainer.config.cli import parse_train_args


def main() -> None:
    cfg = parse_train_args([], os.environ)
    trainer, tokenizer, resume = build(cfg)
    seen: list[str] = []
    step = trainer.training_step

    def recorded(model, inputs, *args, **kwargs):
        h = hashlib.sha256()
        for name in sorted(inputs):
            h.update(name.encode())
            h.update(inputs[name].cpu().contiguous().numpy().tobytes())
        seen.append(h.hexdigest())
        return step(model, inputs, *args, **kwargs)

    trainer.training_step = recorded
    trainer.train(resume_from_checkpoint=resume)
    save_final(trainer, cfg, tokenizer)
    samples = trainer.train_dataset.samples
    index = getattr(samples, "index", None)
    out = Path(os.environ["PROBE_DIR"]) / f"rank{os.environ['RANK']}.json"
    out.write_text(json.dumps({"batches": seen, "index": str(index.dir) if index is not None else None,
                               "samples": len(samples)}))


if __name__ == "__main__":
    main()
