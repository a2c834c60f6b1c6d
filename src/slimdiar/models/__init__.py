"""Neural network models: the prunable WavLM backbone and the diarization head."""

from slimdiar.models.config import WavLMConfig, preset
from slimdiar.models.wavlm import WavLM

__all__ = ["WavLM", "WavLMConfig", "preset"]
