"""The two models of the pipeline behind one interface each, run by torch or by ONNX Runtime.

::

    SegmentationModel   waveforms (batch, num_samples) float32
                          → log-probabilities (batch, num_frames, num_classes) float32
                        + frame_step_samples, receptive_field_samples, mapping, num_frames()
    EmbeddingModel      embed_windows(waveforms (batch, num_samples),
                                      weights (batch, num_speakers, num_weight_frames))
                          → (batch, num_speakers, dimension) unit-norm, NaN for empty weights
                        + dimension, min_num_samples, default_threshold, shares_windows

:class:`TorchSegmentation` runs an :class:`~slimdiar.models.eend.EEND` (today's path) and
:class:`OnnxSegmentation` an exported ``segmentation.onnx`` (see :mod:`slimdiar.pipeline.export`).
The torch embedding model is :class:`~slimdiar.models.embeddings.SpeakerEmbedding` itself;
:class:`OnnxResNetEmbedding` runs an exported ResNet trunk and pooling, with the filterbank
computed by torch as in the torch path. ONNX Runtime is an optional dependency
(``pip install 'slimdiar[onnx]'``); without it, asking for the ONNX engine is a
:class:`~slimdiar.errors.ConfigError`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from slimdiar.errors import AudioError, CheckpointError, ConfigError
from slimdiar.interrupts import interrupts_held
from slimdiar.models.embeddings.fbank import FbankConfig
from slimdiar.models.embeddings.registry import DEFAULT_THRESHOLDS
from slimdiar.models.embeddings.resnet import ResNetConfig, input_features, resample_weights

logger = logging.getLogger(__name__)

#: The engines ``--engine`` accepts.
ENGINES = ("torch", "onnx")
#: What an export directory holds (:func:`slimdiar.pipeline.export.export_pipeline_models`).
SEGMENTATION_FILE = "segmentation.onnx"
EMBEDDING_FILE = "embedding.onnx"
#: The ``format`` field of every sidecar JSON.
SIDECAR_FORMAT = "slimdiar-onnx"


@runtime_checkable
class SegmentationModel(Protocol):
    """What the pipeline needs of a segmentation model, whatever runs it."""

    engine: str
    frame_step_samples: int
    receptive_field_samples: int
    mapping: np.ndarray  # (num_classes, num_local_speakers) 0/1

    def num_frames(self, num_samples: int) -> int:
        """Output frames for ``num_samples`` input samples."""

    def __call__(self, waveforms: np.ndarray) -> np.ndarray:
        """``(batch, num_samples)`` float32 → ``(batch, num_frames, num_classes)`` float32."""


@runtime_checkable
class EmbeddingModel(Protocol):
    """What the pipeline needs of a speaker embedding model, whatever runs it."""

    name: str
    dimension: int
    min_num_samples: int
    default_threshold: float
    shares_windows: bool

    def embed_windows(self, waveforms, weights) -> np.ndarray:
        """``(batch, num_samples)``, ``(batch, S, W)`` → ``(batch, S, dimension)`` float32."""

    def __call__(self, waveforms, weights=None) -> np.ndarray:
        """``(batch, num_samples)``, ``(batch, W)`` → ``(batch, dimension)`` float32."""


class TorchSegmentation:
    """A torch segmentation model (an EEND, possibly under autocast) as a SegmentationModel.

    Parameters
    ----------
    model
        Anything with ``powerset.mapping``, ``frame_step_samples``, ``receptive_field_samples``,
        ``num_frames`` and a ``(batch, num_samples) -> (batch, num_frames, num_classes)``
        forward.
    device
        Where it runs.
    """

    engine = "torch"

    def __init__(self, model, device: str = "cpu"):
        self.model = model
        self.device = device
        self.frame_step_samples = int(model.frame_step_samples)
        self.receptive_field_samples = int(model.receptive_field_samples)
        self.mapping = model.powerset.mapping.detach().cpu().numpy()

    def num_frames(self, num_samples: int) -> int:
        """Frames the model emits for ``num_samples`` samples."""
        return int(self.model.num_frames(num_samples))

    def __call__(self, waveforms: np.ndarray) -> np.ndarray:
        """Log-probabilities ``(batch, num_frames, num_classes)`` of ``(batch, num_samples)``."""
        with torch.inference_mode():
            log_probs = self.model(
                torch.from_numpy(np.ascontiguousarray(waveforms)).to(self.device)
            )
        return log_probs.float().cpu().numpy()


def as_segmentation_model(model, device: str = "cpu") -> SegmentationModel:
    """``model`` itself when it already is a :class:`SegmentationModel`, else wrapped in torch."""
    if isinstance(model, SegmentationModel):
        return model
    return TorchSegmentation(model, device)


def weights_fingerprint(module) -> str:
    """SHA-256 of a module's state (names, shapes, float32 values), to match an export to it."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(f"{name}:{tuple(tensor.shape)};".encode())
        value = tensor.detach().cpu()
        value = value.float() if value.is_floating_point() else value
        digest.update(value.contiguous().numpy().tobytes())
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# ONNX Runtime
# ---------------------------------------------------------------------------------------------
def require_onnxruntime():
    """The ``onnxruntime`` module, or a one-line :class:`ConfigError` saying how to install it."""
    try:
        with interrupts_held():  # a pybind11 extension: Ctrl-C inside its loading aborts
            import onnxruntime
    except ImportError:
        raise ConfigError(
            "the ONNX engine needs onnxruntime: pip install 'slimdiar[onnx]' "
            "(or pip install onnxruntime)"
        ) from None
    return onnxruntime


def read_sidecar(onnx_path: str | Path, kind: str) -> dict:
    """The JSON written beside an exported model, checked to describe a ``kind`` model."""
    onnx_path = Path(onnx_path)
    sidecar = onnx_path.with_suffix(".json")
    if not onnx_path.is_file():
        raise CheckpointError(f"{onnx_path}: no such ONNX model (make it with 'slimdiar export')")
    try:
        info = json.loads(sidecar.read_text())
    except FileNotFoundError:
        raise CheckpointError(
            f"{sidecar}: missing; an exported model needs its JSON "
            "sidecar (written by 'slimdiar export')"
        ) from None
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{sidecar}: not readable JSON ({error})") from None
    if (
        not isinstance(info, dict)
        or info.get("format") != SIDECAR_FORMAT
        or info.get("kind") != kind
    ):
        raise CheckpointError(
            f"{sidecar}: not the sidecar of an exported {kind} model "
            f"(expected format {SIDECAR_FORMAT!r} and kind {kind!r})"
        )
    return info


def make_session(onnx_path: str | Path, threads: int | None = None):
    """An ONNX Runtime CPU session, ``threads`` intra-op threads (default: torch's count)."""
    ort = require_onnxruntime()
    if threads is None:
        threads = torch.get_num_threads()
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own error types
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{onnx_path}: ONNX Runtime cannot load it ({first})") from None


class OnnxSegmentation:
    """An exported segmentation model run by ONNX Runtime, as a :class:`SegmentationModel`.

    Parameters
    ----------
    onnx_path
        ``segmentation.onnx`` written by :func:`slimdiar.pipeline.export.export_segmentation`
        (its ``segmentation.json`` sidecar beside it).
    threads
        ONNX Runtime intra-op threads (default: torch's thread count).
    expected_config, expected_fingerprint
        The EEND config (``EENDConfig.to_dict()``) and :func:`weights_fingerprint` the export
        must have been made from; a mismatch is a :class:`CheckpointError`.
    """

    engine = "onnx"

    def __init__(
        self,
        onnx_path: str | Path,
        threads: int | None = None,
        expected_config: dict | None = None,
        expected_fingerprint: str | None = None,
    ):
        self.path = Path(onnx_path)
        self.info = read_sidecar(self.path, "segmentation")
        if expected_config is not None:
            expected_config = json.loads(json.dumps(expected_config))
        for what, expected in (
            ("config", expected_config),
            ("weights_sha256", expected_fingerprint),
        ):
            if expected is not None and self.info.get(what) != expected:
                raise CheckpointError(
                    f"{self.path}: exported from another model than the checkpoint given "
                    f"(their {what.split('_')[0]} differ); export it again with "
                    "'slimdiar export'"
                )
        self.session = make_session(self.path, threads)
        self.frame_step_samples = int(self.info["frame_step_samples"])
        self.receptive_field_samples = int(self.info["receptive_field_samples"])
        self.mapping = np.asarray(self.info["mapping"], dtype=np.float32)
        self.conv_layers = [tuple(layer) for layer in self.info["conv_layers"]]
        self.input_name = self.session.get_inputs()[0].name

    def num_frames(self, num_samples: int) -> int:
        """Frames the exported model emits for ``num_samples`` samples (its conv stack's count)."""
        length = int(num_samples)
        for _, kernel, stride in self.conv_layers:
            if length < kernel:
                return 0
            length = (length - kernel) // stride + 1
        return length

    def __call__(self, waveforms: np.ndarray) -> np.ndarray:
        """Log-probabilities ``(batch, num_frames, num_classes)`` of ``(batch, num_samples)``."""
        waveforms = np.ascontiguousarray(waveforms, dtype=np.float32)
        if waveforms.ndim != 2 or waveforms.shape[1] < self.receptive_field_samples:
            raise ValueError(
                f"waveforms must be (batch, num_samples >= {self.receptive_field_samples}), "
                f"got {waveforms.shape}"
            )
        return self.session.run(None, {self.input_name: waveforms})[0]


class OnnxResNetEmbedding:
    """An exported ResNet embedding (trunk + masked statistics pooling) run by ONNX Runtime.

    The Kaldi filterbank and its mean normalisation are computed by torch, exactly as in
    :class:`~slimdiar.models.embeddings.resnet.ResNetEmbedding`; the exported graph takes the
    features ``(batch, num_fbank_frames, num_mel_bins)`` and the frame weights of every speaker
    at the trunk's output resolution ``(batch, num_speakers, num_output_frames)`` and returns
    the raw embeddings ``(batch, num_speakers, dimension)``. The network runs once per window
    for all its speakers (``shares_windows``).
    """

    engine = "onnx"
    shares_windows = True

    def __init__(self, onnx_path: str | Path, threads: int | None = None):
        self.path = Path(onnx_path)
        self.info = read_sidecar(self.path, "embedding")
        config = dict(self.info["config"])
        config["fbank"] = FbankConfig(**config["fbank"])
        config["num_blocks"] = tuple(config["num_blocks"])
        self.config = ResNetConfig(**config)
        self.name = str(self.info.get("source") or self.path)
        self.session = make_session(self.path, threads)

    @property
    def dimension(self) -> int:
        """Size of the embeddings."""
        return self.config.embedding_dim

    @property
    def min_num_samples(self) -> int:
        """Shortest input, in samples, the network takes."""
        return self.config.min_num_samples

    @property
    def sample_rate(self) -> int:
        """Sample rate of the input audio."""
        return self.config.fbank.sample_rate

    @property
    def default_threshold(self) -> float:
        """The AHC threshold measured for ResNet embeddings."""
        return DEFAULT_THRESHOLDS["resnet"]

    def embed_windows(self, waveforms, weights) -> np.ndarray:
        """Unit-norm embeddings of every masked speaker of each waveform.

        Parameters
        ----------
        waveforms : (batch, num_samples) array
        weights : (batch, num_speakers, num_weight_frames) array
            Frame weights at any resolution, resampled (nearest) to the pooled frames.

        Returns
        -------
        (batch, num_speakers, dimension) float32, NaN rows for all-zero weights.
        """
        waveforms = torch.as_tensor(np.asarray(waveforms, dtype=np.float32))
        weights = torch.as_tensor(np.asarray(weights, dtype=np.float32))
        if waveforms.ndim != 2 or weights.ndim != 3 or len(weights) != len(waveforms):
            raise AudioError(
                f"waveforms {tuple(waveforms.shape)} and weights {tuple(weights.shape)} must be "
                "(batch, num_samples) and (batch, num_speakers, num_weight_frames)"
            )
        with torch.inference_mode():
            fbank = input_features(waveforms, self.config)
            # (batch, num_fbank_frames, num_mel_bins)
            num_frames = self.config.num_output_frames(fbank.shape[1])
            batch, speakers, _ = weights.shape
            pooled = resample_weights(weights.reshape(batch * speakers, -1), num_frames)
            pooled = pooled.reshape(batch, speakers, num_frames)
        active = (weights.sum(dim=-1) > 0).numpy()
        raw = self.session.run(None, {"fbank": fbank.numpy(), "weights": pooled.numpy()})[0]
        # (batch, num_speakers, dimension)
        norms = np.linalg.norm(raw, axis=-1, keepdims=True)
        embeddings = (raw / np.maximum(norms, 1e-12)).astype(np.float32)
        embeddings[~active] = np.nan
        return embeddings

    def __call__(self, waveforms, weights=None) -> np.ndarray:
        """Embeddings of a batch of waveforms (weights ``(batch, W)``, default: all frames)."""
        waveforms = np.asarray(waveforms, dtype=np.float32)
        if waveforms.ndim == 1:
            waveforms = waveforms[None]
        if weights is None:
            weights = np.ones((len(waveforms), 1), dtype=np.float32)
        weights = np.asarray(weights, dtype=np.float32)
        if weights.ndim == 1:
            weights = weights[None]
        return self.embed_windows(waveforms, weights[:, None])[:, 0]


def load_onnx_models(
    directory: str | Path,
    threads: int | None = None,
    expected_config: dict | None = None,
    expected_fingerprint: str | None = None,
) -> tuple[OnnxSegmentation, OnnxResNetEmbedding | None]:
    """The models of an export directory: the segmentation model and, if exported, the embedding.

    Raises
    ------
    ConfigError
        When onnxruntime is not installed.
    CheckpointError
        When the directory holds no exported segmentation model, or it does not match
        ``expected_config``.
    """
    require_onnxruntime()
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(
            f"{directory}: no such export directory (make it with 'slimdiar export')"
        )
    segmentation = OnnxSegmentation(
        directory / SEGMENTATION_FILE, threads, expected_config, expected_fingerprint
    )
    embedding = None
    if (directory / EMBEDDING_FILE).is_file():
        embedding = OnnxResNetEmbedding(directory / EMBEDDING_FILE, threads)
    return segmentation, embedding


def use_onnx_models(pipeline, export_dir, threads: int | None) -> None:
    """Replace the pipeline's torch models by the ONNX Runtime sessions of ``export_dir``.

    The exported segmentation model must come from the checkpoint the pipeline loaded; the
    exported embedding model replaces the torch one when there is one (a ResNet export), else
    the embedding stays on torch (GE2E).
    """
    model = pipeline.segmentation_model
    segmentation, embedding = load_onnx_models(
        export_dir, threads, model.config.to_dict(), weights_fingerprint(model)
    )
    pipeline.segmentation_model = segmentation
    if embedding is not None and pipeline.embedding_model is not None:
        torch_model = getattr(pipeline.embedding_model, "model", None)
        config = getattr(torch_model, "config", None)
        if (
            not dataclasses.is_dataclass(config)
            or isinstance(config, type)
            or embedding.info["config"] != json.loads(json.dumps(dataclasses.asdict(config)))
            or embedding.info.get("weights_sha256") != weights_fingerprint(torch_model)
        ):
            raise ConfigError(
                f"{export_dir}: its embedding model was not exported from --embedding "
                f"{pipeline.embedding_name} (export it again with 'slimdiar export')"
            )
        pipeline.embedding_model = embedding
    elif pipeline.embedding_model is not None:
        logger.info("%s holds no embedding model: the embedding runs on torch", export_dir)
