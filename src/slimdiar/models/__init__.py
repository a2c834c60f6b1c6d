"""Neural network models: the prunable WavLM backbone and the diarization head."""

from slimdiar.models.config import WavLMConfig, preset

__all__ = ["WavLMConfig", "preset"]
