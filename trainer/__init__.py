"""higgs-audio-trainer: fine-tune Higgs Audio v2 with transformers' Trainer and peft, under torchrun.

The package imports nothing heavy at the top level so that `higgs-audio-trainer train --help` and
configuration errors answer in milliseconds.
"""

__version__ = "0.1.0"
