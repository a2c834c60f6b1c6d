"""Speaker embedding models for the diarization pipeline (torch and numpy only).

- :mod:`.fbank`: Kaldi-compatible log mel filterbanks and cepstral mean normalisation;
- :mod:`.resnet`: WeSpeaker's ResNet34 (the reference's embedding), loading WeSpeaker and
  pyannote checkpoints;
- :mod:`.ge2e`: Resemblyzer's GE2E LSTM encoder, whose weights are available offline;
- :mod:`.registry`: :func:`load_embedding_model`, by name or checkpoint path.
"""

from slimdiar.models.embeddings.fbank import (
    FbankConfig,
    cepstral_mean_normalize,
    kaldi_fbank,
    kaldi_mel_banks,
    wespeaker_fbank,
)
from slimdiar.models.embeddings.ge2e import (
    GE2EConfig,
    GE2EEmbedding,
    find_pretrained_ge2e,
    resemblyzer_ge2e,
)
from slimdiar.models.embeddings.registry import (
    DEFAULT_EMBEDDING,
    DEFAULT_THRESHOLDS,
    SpeakerEmbedding,
    load_embedding_model,
    read_state_dict,
)
from slimdiar.models.embeddings.resnet import (
    ResNetConfig,
    ResNetEmbedding,
    statistics_pooling,
    to_wespeaker_layout,
    wespeaker_resnet34,
)

__all__ = [
    "DEFAULT_EMBEDDING",
    "DEFAULT_THRESHOLDS",
    "FbankConfig",
    "GE2EConfig",
    "GE2EEmbedding",
    "ResNetConfig",
    "ResNetEmbedding",
    "SpeakerEmbedding",
    "cepstral_mean_normalize",
    "find_pretrained_ge2e",
    "kaldi_fbank",
    "kaldi_mel_banks",
    "load_embedding_model",
    "read_state_dict",
    "resemblyzer_ge2e",
    "statistics_pooling",
    "to_wespeaker_layout",
    "wespeaker_fbank",
    "wespeaker_resnet34",
]
