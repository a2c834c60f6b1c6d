"""Model-wide constants and the backbone's configuration.

:class:`~slimdiar.models.wavlm.config.WavLMConfig` and the WavLM presets live beside the model,
in :mod:`slimdiar.models.wavlm.config`.
"""

from __future__ import annotations

from slimdiar.models.wavlm.config import WavLMConfig

SAMPLE_RATE = 16000

__all__ = ["SAMPLE_RATE", "WavLMConfig"]
