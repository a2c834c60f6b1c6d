"""Neural network models: the prunable WavLM backbone and the diarization head."""

from slimdiar.models.wavlm import WavLM, WavLMConfig, preset

__all__ = ["WavLM", "WavLMConfig", "preset"]
