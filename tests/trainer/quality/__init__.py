"""Tests of trainer.quality."""
