"""build-dataset's steps: long recordings -> voice-activity clips, transcripts, filters, references, report."""
