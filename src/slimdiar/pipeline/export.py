"""Export the pipeline's models to ONNX: dynamic batch and length axes, a JSON sidecar each.

::

    segmentation.onnx   waveforms (batch, num_samples) float32
                          → log_probs (batch, num_frames, num_classes) float32
    embedding.onnx      fbank (batch, num_fbank_frames, num_mel_bins) float32,
                        weights (batch, num_speakers, num_output_frames) float32
                          → embeddings (batch, num_speakers, dimension) float32 (not normalised)

Each file has a ``.json`` sidecar with what is needed to run it (the model config, the frame
grid, the powerset mapping, the opset, the exporter) and the same facts in the model's
``metadata_props``. The exporter is torch's ``torch.export``-based one (``dynamo=True``, which
needs ``onnxscript``): the TorchScript exporter records the batch size times the number of heads
of ``nn.MultiheadAttention`` (the Conformer's) as a constant, so its graph fails on any other
batch or length. Scaled dot-product attention is traced with its math kernel, whose output
layout matches what the graph's later reshapes expect. Files are written to a temporary name
and renamed into place: an error leaves no half-written file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from slimdiar.errors import ConfigError
from slimdiar.fileio import current_umask, write_json_atomic
from slimdiar.frames import SAMPLE_RATE
from slimdiar.interrupts import interrupts_held
from slimdiar.models.eend import EEND
from slimdiar.models.embeddings.resnet import ResNet, ResNetEmbedding, statistics_pooling
from slimdiar.models.wavlm import WavLM, WavLMConfig
from slimdiar.pipeline.engines import (
    EMBEDDING_FILE,
    SEGMENTATION_FILE,
    SIDECAR_FORMAT,
    weights_fingerprint,
)

logger = logging.getLogger(__name__)

#: The ONNX opset of every export (ONNX Runtime >= 1.14 runs it).
OPSET = 18
#: Largest input the exported graphs accept: one hour at 16 kHz per item.
MAX_NUM_SAMPLES = SAMPLE_RATE * 3600


def require_exporter() -> None:
    """Raise a one-line :class:`ConfigError` unless ``onnx`` and ``onnxscript`` import."""
    for module in ("onnx", "onnxscript"):
        try:
            __import__(module)
        except ImportError:
            raise ConfigError(
                f"exporting to ONNX needs {module}: pip install 'slimdiar[onnx]'"
            ) from None


class SegmentationGraph(nn.Module):
    """The EEND forward without its Python input checks (which fix the length when traced)."""

    def __init__(self, model: EEND):
        super().__init__()
        self.model = model

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        """``(batch, num_samples)`` → ``(batch, num_frames, num_classes)`` log-probabilities."""
        model = self.model
        features = model.combine_layers(model.backbone(waveforms))
        # (batch, num_frames, embed_dim)
        x = model.conformer(model.norm(model.projection(features)), None)
        # (batch, num_frames, d_model)
        return F.log_softmax(model.classifier(x), dim=-1)


class BackboneGraph(nn.Module):
    """A WavLM backbone returning its hidden states as a tuple (for ``slimdiar bench``)."""

    def __init__(self, backbone: WavLM):
        super().__init__()
        self.backbone = backbone

    def forward(self, waveforms: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(batch, num_samples)`` → L+1 × ``(batch, num_frames, E)``."""
        return tuple(self.backbone(waveforms))


class EmbeddingGraph(nn.Module):
    """ResNet trunk once per window, then the masked statistics pooling of every speaker."""

    def __init__(self, resnet: ResNet):
        super().__init__()
        self.resnet = resnet

    def forward(self, fbank: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Raw embeddings ``(batch, num_speakers, dimension)``.

        ``fbank`` is ``(batch, num_fbank_frames, num_mel_bins)`` (mean-normalised), ``weights``
        ``(batch, num_speakers, num_output_frames)``. The statistics are those of
        :func:`~slimdiar.models.embeddings.resnet.statistics_pooling`, for all speakers at once.
        """
        frames = self.resnet.forward_frames(fbank)[:, None]
        # (batch, 1, dimension, num_output_frames)
        stats = statistics_pooling(frames, weights)
        # (batch, num_speakers, 2 * dimension)
        return self.resnet.seg_1(stats)


def _metadata_props(proto, info: dict) -> None:
    for key, value in info.items():
        entry = proto.metadata_props.add()
        entry.key = key
        entry.value = value if isinstance(value, str) else json.dumps(value)


def export_graph(
    module: nn.Module,
    example: tuple[torch.Tensor, ...],
    path: str | Path,
    input_names: list[str],
    output_names: list[str],
    dynamic_shapes: dict,
    info: dict,
) -> Path:
    """Export ``module`` (eval mode, float32) to ``path`` and its sidecar, atomically.

    Parameters
    ----------
    module
        The graph to export.
    example
        Example inputs (their sizes must not be 0 or 1 on a dynamic axis).
    path
        The ``.onnx`` file; the sidecar is ``path`` with suffix ``.json``.
    input_names, output_names
        Names of the graph's inputs and outputs.
    dynamic_shapes
        ``torch.export`` dynamic shapes by input name.
    info
        Sidecar content (``format``, ``opset`` and ``exporter`` are added).

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    require_exporter()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    path = Path(path)
    module = module.eval().float()
    info = {
        "format": SIDECAR_FORMAT,
        **info,
        "opset": OPSET,
        "exporter": f"torch.onnx.export(dynamo=True), torch {torch.__version__}",
        "inputs": input_names,
        "outputs": output_names,
    }
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), _quiet_exporter():
        program = torch.onnx.export(
            module,
            example,
            input_names=input_names,
            output_names=output_names,
            dynamic_shapes=dynamic_shapes,
            opset_version=OPSET,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    if program is None:
        raise ConfigError(f"the ONNX exporter returned no program for {path}")
    write_model(program.model_proto, path, info)
    logger.info("exported %s (opset %d)", path, OPSET)
    return path


def write_model(proto, path: str | Path, info: dict) -> None:
    """Write an ONNX model with ``info`` in its metadata and as its JSON sidecar, atomically.

    The model goes to a temporary file beside ``path``, then the sidecar, then the rename: an
    error leaves neither a partial ``.onnx`` nor a sidecar without its model.
    """
    with interrupts_held():  # a pybind11 extension: Ctrl-C inside its loading aborts
        import onnx

    path = Path(path)
    _metadata_props(proto, {k: v for k, v in info.items() if k != "mapping"})
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    sidecar = path.with_suffix(".json")
    try:
        onnx.save(proto, tmp_name)
        os.chmod(tmp_name, 0o666 & ~current_umask())
        write_json_atomic(sidecar, info)
        os.replace(tmp_name, path)
    except BaseException:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        if sidecar.exists() and not path.exists():
            sidecar.unlink()
        raise


@contextlib.contextmanager
def _quiet_exporter():
    """The exporter prints its progress; library code logs instead."""
    import io
    from contextlib import redirect_stdout

    buffer = io.StringIO()
    with redirect_stdout(buffer):
        yield
    for line in buffer.getvalue().splitlines():
        logger.debug("%s", line)


def _waveform_shapes(receptive_field_samples: int) -> tuple[torch.Tensor, dict]:
    batch = torch.export.Dim("batch", min=1, max=4096)
    samples = torch.export.Dim("num_samples", min=receptive_field_samples, max=MAX_NUM_SAMPLES)
    example = torch.randn(2, SAMPLE_RATE, generator=torch.Generator().manual_seed(0)) * 0.1
    return example, {"waveforms": {0: batch, 1: samples}}


def export_segmentation(model: EEND, path: str | Path, source: str | None = None) -> Path:
    """Export an EEND model to ``path`` (``segmentation.onnx``) with its sidecar.

    Parameters
    ----------
    model
        A float32 :class:`~slimdiar.models.eend.EEND` (WavLM or filterbank front-end).
    path
        The ``.onnx`` file to write.
    source
        What the model was loaded from (recorded in the sidecar).
    """
    backbone_config = model.backbone.config
    if not isinstance(backbone_config, WavLMConfig):
        raise ConfigError("only models with a WavLM front-end export to ONNX")
    example, shapes = _waveform_shapes(int(model.receptive_field_samples))
    info = {
        "kind": "segmentation",
        "source": source,
        "config": model.config.to_dict(),
        "weights_sha256": weights_fingerprint(model),
        "frame_step_samples": int(model.frame_step_samples),
        "receptive_field_samples": int(model.receptive_field_samples),
        "conv_layers": [list(layer) for layer in backbone_config.conv_layers],
        "num_classes": int(model.num_classes),
        "mapping": model.powerset.mapping.detach().cpu().numpy().astype(int).tolist(),
        "sample_rate": SAMPLE_RATE,
    }
    return export_graph(
        SegmentationGraph(model), (example,), path, ["waveforms"], ["log_probs"], shapes, info
    )


def export_backbone(backbone: WavLM, path: str | Path, source: str | None = None) -> Path:
    """Export a WavLM backbone (all hidden states) to ``path`` with its sidecar."""
    config = backbone.config
    example, shapes = _waveform_shapes(int(config.receptive_field_samples))
    outputs = [f"hidden_state_{i}" for i in range(config.num_layers + 1)]
    info = {"kind": "backbone", "source": source, "config": config.to_dict()}
    return export_graph(
        BackboneGraph(backbone), (example,), path, ["waveforms"], outputs, shapes, info
    )


def export_embedding(model: nn.Module, path: str | Path, source: str | None = None) -> Path:
    """Export a ResNet embedding model (trunk + masked pooling) to ``path`` with its sidecar.

    Parameters
    ----------
    model
        A :class:`~slimdiar.models.embeddings.resnet.ResNetEmbedding` (or a
        :class:`~slimdiar.models.embeddings.SpeakerEmbedding` holding one).

    Raises
    ------
    ConfigError
        For GE2E, whose masks select samples before its network runs (nothing is shared
        between the speakers of a window): it stays on torch.
    """
    inner = getattr(model, "model", model)
    if not isinstance(inner, ResNetEmbedding):
        raise ConfigError(
            f"only the ResNet embedding exports to ONNX, not {type(inner).__name__} "
            "(GE2E runs on torch with either engine)"
        )
    config = inner.config
    num_fbank_frames = 200
    num_output_frames = config.num_output_frames(num_fbank_frames)
    generator = torch.Generator().manual_seed(0)
    fbank = torch.randn(2, num_fbank_frames, config.fbank.num_mel_bins, generator=generator)
    weights = (torch.rand(2, 3, num_output_frames, generator=generator) > 0.5).float()
    auto = torch.export.Dim.AUTO
    shapes = {"fbank": {0: auto, 1: auto}, "weights": {0: auto, 1: auto, 2: auto}}
    info = {
        "kind": "embedding",
        "architecture": "resnet",
        "source": source,
        "config": dataclasses.asdict(config),
        "weights_sha256": weights_fingerprint(inner),
    }
    return export_graph(
        EmbeddingGraph(inner.resnet),
        (fbank, weights),
        path,
        ["fbank", "weights"],
        ["embeddings"],
        shapes,
        info,
    )


def export_pipeline_models(
    model: EEND,
    out_dir: str | Path,
    embedding=None,
    source: str | None = None,
    embedding_source: str | None = None,
) -> list[Path]:
    """Export the segmentation model (and a ResNet embedding model) into ``out_dir``.

    Returns
    -------
    list of pathlib.Path
        The ``.onnx`` files written (each with its ``.json`` sidecar).
    """
    out_dir = Path(out_dir)
    written = [export_segmentation(model, out_dir / SEGMENTATION_FILE, source)]
    if embedding is not None:
        written.append(export_embedding(embedding, out_dir / EMBEDDING_FILE, embedding_source))
    return written
