"""Speech synthesis with a trained model: prompts laid out as in training, generation, WAV files."""
