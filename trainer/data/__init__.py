"""Dataset formats read into conversations, audio files checked from their headers, and the sample types."""
