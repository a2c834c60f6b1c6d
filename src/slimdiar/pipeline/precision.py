"""Run both models of a diarization pipeline in a lower precision (bfloat16 or float16)."""

from __future__ import annotations

import logging

from slimdiar.models.precision import dtype_name, resolve_dtype, with_precision

logger = logging.getLogger(__name__)


def set_pipeline_precision(pipeline, dtype, device: str = "cpu"):
    """Make ``pipeline`` run its segmentation and embedding models in ``dtype``.

    The segmentation model runs under autocast (its log-softmax in float32, see
    :mod:`slimdiar.models.precision`); the embedding model runs its network in ``dtype`` and
    its features and pooling in float32. float32 leaves the pipeline as it is.

    Parameters
    ----------
    pipeline
        A :class:`~slimdiar.pipeline.DiarizationPipeline`.
    dtype
        ``"float32"``, ``"bfloat16"``, ``"float16"`` or the torch dtype.
    device
        Where the pipeline runs (float16 is refused on a CPU).

    Returns
    -------
    The pipeline itself.

    Raises
    ------
    ConfigError
        For an unknown precision, or float16 on a CPU.
    """
    import torch

    dtype = resolve_dtype(dtype, device)
    if dtype == torch.float32:
        return pipeline
    if pipeline.segmentation_model is not None:
        pipeline.segmentation_model = with_precision(pipeline.segmentation_model, dtype)
    embedding = pipeline.embedding_model
    if embedding is not None and hasattr(embedding, "set_compute_dtype"):
        embedding.set_compute_dtype(dtype)
    logger.info("segmentation and embedding models run in %s", dtype_name(dtype))
    return pipeline
