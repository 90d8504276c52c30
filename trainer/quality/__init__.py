"""Objective quality of generated speech: error rates through a local speech recognizer, speaker similarity."""
