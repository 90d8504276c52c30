"""Run under torchrun by tests: the real training run (options from the environment) with each rank recording,
per micro-batch its training step received, the padded shape and which samples it held (matched by their
tokens), written to PROBE_DIR/rank<R>.json."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from trainer.commands.train import build
from trainer.config.cli import parse_train_args


def main() -> None:
    cfg = parse_train_args([], os.environ)
    trainer, _, resume = build(cfg)
    data = trainer.train_dataset
    index = {data[i]["input_ids"].tobytes(): i for i in range(len(data))}
    lengths = [len(data[i]["input_ids"]) for i in range(len(data))]
    batches: list[list[int]] = []
    shapes: list[list[int]] = []
    inner = trainer.training_step

    def training_step(model, inputs, num_items_in_batch=None):
        ids, mask = inputs["input_ids"].cpu(), inputs["attention_mask"].cpu().bool()
        shapes.append(list(ids.shape))
        batches.append([index[row[m].numpy().astype("int64").tobytes()] for row, m in zip(ids, mask, strict=True)])
        return inner(model, inputs, num_items_in_batch)

    trainer.training_step = training_step
    trainer.train(resume_from_checkpoint=resume)
    rank = int(os.environ["RANK"])
    out = Path(os.environ["PROBE_DIR"]) / f"rank{rank}.json"
    out.write_text(json.dumps({"batches": batches, "shapes": shapes, "lengths": lengths,
                               "step": trainer.state.global_step}))


if __name__ == "__main__":
    main()
