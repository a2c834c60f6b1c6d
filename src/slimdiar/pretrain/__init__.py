"""Self-supervised pretraining of WavLM: masked prediction of k-means targets (HuBERT/WavLM).

This package holds the pieces of the objective (masking, k-means targets, crops of unlabelled
audio, the prediction heads); the stage that runs it is :mod:`slimdiar.stages.pretrain`. Imports
one way: this package uses :mod:`slimdiar.models`, :mod:`slimdiar.data` and :mod:`slimdiar.train`.
"""

from slimdiar.pretrain.data import CropDataset, list_audio
from slimdiar.pretrain.masking import expected_mask_fraction, mix_utterances, span_mask
from slimdiar.pretrain.objective import MaskedPredictionObjective, PretrainHeads
from slimdiar.pretrain.targets import MFCC, ClusterTargets, LayerFeatures, fit_kmeans

__all__ = [
    "MFCC",
    "ClusterTargets",
    "CropDataset",
    "LayerFeatures",
    "MaskedPredictionObjective",
    "PretrainHeads",
    "expected_mask_fraction",
    "fit_kmeans",
    "list_audio",
    "mix_utterances",
    "span_mask",
]
