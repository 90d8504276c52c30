"""Conversations to training inputs: the audio code cache, the prompt layout and collator, data preparation."""
