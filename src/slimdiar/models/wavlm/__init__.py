"""The prunable WavLM backbone.

- :mod:`~slimdiar.models.wavlm.model`: :class:`WavLM` (build, forward, load/save, prune);
- :mod:`~slimdiar.models.wavlm.components`: its blocks, each owning its gates, counts and
  pruning step;
- :mod:`~slimdiar.models.wavlm.units`: the kinds of pruning unit and what pruning kept;
- :mod:`~slimdiar.models.wavlm.config`: :class:`WavLMConfig` and the presets;
- :mod:`~slimdiar.models.wavlm.convert`: reading published checkpoints into our key layout;
- :mod:`~slimdiar.models.wavlm.diarizen_format`: DiariZen's WavLM config and tensor names;
- :mod:`~slimdiar.models.wavlm.hardconcrete`: the hard-concrete gate.
"""

from slimdiar.models.wavlm.config import WavLMConfig, preset
from slimdiar.models.wavlm.hardconcrete import HardConcrete
from slimdiar.models.wavlm.model import WavLM, scale_gradient
from slimdiar.models.wavlm.units import Count, PruneResult, PruneUnit

__all__ = [
    "Count",
    "HardConcrete",
    "PruneResult",
    "PruneUnit",
    "WavLM",
    "WavLMConfig",
    "preset",
    "scale_gradient",
]
