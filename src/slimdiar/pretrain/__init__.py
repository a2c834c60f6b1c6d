"""Self-supervised pretraining of WavLM: masked prediction of k-means targets (HuBERT/WavLM).

Imports one way: this package uses :mod:`slimdiar.models`, :mod:`slimdiar.data` and
:mod:`slimdiar.train`, and nothing imports it but the command line.
"""

from slimdiar.pretrain.data import CropDataset, list_audio
from slimdiar.pretrain.masking import expected_mask_fraction, mix_utterances, span_mask
from slimdiar.pretrain.objective import MaskedPredictionObjective, PretrainHeads
from slimdiar.pretrain.stage import PretrainConfig, pretrain
from slimdiar.pretrain.targets import MFCC, ClusterTargets, LayerFeatures, fit_kmeans

__all__ = [
    "MFCC",
    "ClusterTargets",
    "CropDataset",
    "LayerFeatures",
    "MaskedPredictionObjective",
    "PretrainConfig",
    "PretrainHeads",
    "expected_mask_fraction",
    "fit_kmeans",
    "list_audio",
    "mix_utterances",
    "pretrain",
    "span_mask",
]
