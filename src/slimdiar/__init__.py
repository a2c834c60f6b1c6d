"""slimdiar: compact self-supervised speech models for speaker diarization."""

__version__ = "0.1.0"
