"""The training loop around transformers' Trainer: loss, checkpoints, background saves, signals, NaN policy."""
