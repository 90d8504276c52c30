"""Run under torchrun by tests: the real training run (options from the environment), then each rank
writes a digest of its trainable weights so the test can check that DDP kept the ranks identical."""

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
    trainer.train(resume_from_checkpoint=resume)
    save_final(trainer, cfg, tokenizer)
    h = hashlib.sha256()
    model = trainer.accelerator.unwrap_model(trainer.model)
    for name, param in sorted(model.named_parameters()):
        if param.requires_grad:
            h.update(name.encode())
            h.update(param.detach().cpu().contiguous().numpy().tobytes())
    rank = int(os.environ["RANK"])
    out = Path(os.environ["PROBE_DIR"]) / f"rank{rank}.json"
    out.write_text(json.dumps({"digest": h.hexdigest(), "step": trainer.state.global_step,
                               "world_size": trainer.args.world_size}))


if __name__ == "__main__":
    main()
