"""Tests of trainer.generate."""
