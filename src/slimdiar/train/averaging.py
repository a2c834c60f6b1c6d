"""The final model of a run: which epochs to average, and averaging checkpoint directories.

An epoch of a run's history is a dict with ``epoch`` (1-based), ``val_loss``, ``selectable`` and
``metrics`` (every validation metric of that epoch, by name).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import torch

from slimdiar.errors import CheckpointError
from slimdiar.models.checkpoint import CONFIG_NAME, load_checkpoint, save_checkpoint

logger = logging.getLogger(__name__)


def lowest_loss_epochs(history: list[dict], count: int) -> list[int]:
    """The ``count`` selectable epochs with the lowest validation loss, best first.

    Ties go to the earlier epoch; a NaN loss ranks last. Empty if no epoch is selectable.
    """
    candidates = [h for h in history if h["selectable"]]
    ranked = sorted(candidates, key=lambda h: (_nan_last(h["val_loss"]), h["epoch"]))
    return [h["epoch"] for h in ranked[:count]]


def post_peak_epochs(history: list[dict], count: int, metric: str) -> list[int]:
    """The ``count`` epochs with the lowest ``metric`` from the epoch where it peaks on, best first.

    The peak is the epoch of the highest value of ``metric`` over the whole history (the
    earliest one if several share it); it is itself a candidate. Pruning first makes the loss
    rise while units close, then fall once the sparsity stops changing: only the checkpoints from
    the peak on hold the final architecture. Ties go to the earlier epoch; NaN values are never
    the peak and rank last. Empty if no epoch has a finite ``metric``.

    Raises
    ------
    CheckpointError
        If an epoch of the history lacks ``metric`` (a history written by another version).
    """
    values = []
    for h in history:
        metrics = h.get("metrics", {})
        if metric not in metrics:
            raise CheckpointError(
                f"epoch {h['epoch']} of the run's history has no validation {metric!r}; the "
                "checkpoints were written by another version of slimdiar, choose the final model "
                "with another rule"
            )
        values.append(float(metrics[metric]))
    finite = [i for i, v in enumerate(values) if math.isfinite(v)]
    if not finite:
        return []
    peak = max(finite, key=lambda i: (values[i], -i))
    ranked = sorted(
        range(peak, len(history)), key=lambda i: (_nan_last(values[i]), history[i]["epoch"])
    )
    return [history[i]["epoch"] for i in ranked[:count]]


def _nan_last(value: float) -> float:
    return math.inf if math.isnan(value) else value


def average_checkpoints(
    directories: Sequence[str | Path], output: str | Path, metadata: dict | None = None
) -> Path:
    """Average the weights of checkpoint directories into a new checkpoint directory.

    Floating-point tensors are averaged (in float64, stored in their own dtype); other tensors
    (integer buffers such as BatchNorm's ``num_batches_tracked``) are taken from the first
    directory. Every directory must hold a checkpoint of the same kind, config and keys.

    Parameters
    ----------
    directories
        One or more slimdiar checkpoint directories.
    output
        The directory to write (replaced atomically if it exists).
    metadata
        Metadata of the result; ``averaged_from`` (the source directories) is added to it.

    Returns
    -------
    Path
        ``output``.
    """
    if not directories:
        raise CheckpointError("no checkpoints to average")
    first_state, config, first_metadata = load_checkpoint(directories[0])
    kind = _kind(directories[0])
    sums = {k: v.to(torch.float64) if v.is_floating_point() else v for k, v in first_state.items()}
    for directory in directories[1:]:
        state, other_config, _ = load_checkpoint(directory, kind=kind)
        if other_config != config:
            raise CheckpointError(
                f"{directory}: its config differs from that of {directories[0]}; only "
                "checkpoints of one architecture can be averaged"
            )
        if set(state) != set(sums):
            raise CheckpointError(
                f"{directory}: keys differ from those of {directories[0]}: "
                f"{sorted(set(state) ^ set(sums))[:20]}"
            )
        for key, value in state.items():
            if value.shape != sums[key].shape:
                raise CheckpointError(
                    f"{directory}: {key} has shape {tuple(value.shape)}, "
                    f"{tuple(sums[key].shape)} in {directories[0]}"
                )
            if value.is_floating_point():
                sums[key] += value.to(torch.float64)
    count = len(directories)
    averaged = {
        k: (v / count).to(first_state[k].dtype) if first_state[k].is_floating_point() else v
        for k, v in sums.items()
    }
    info = dict(metadata or {})
    info["averaged_from"] = [str(d) for d in directories]
    for key in ("stage",):
        if key in first_metadata and key not in info:
            info[key] = first_metadata[key]
    logger.info("averaged %d checkpoints into %s", count, output)
    return save_checkpoint(output, averaged, kind, config, info)


def _kind(directory: str | Path) -> str:
    return json.loads((Path(directory) / CONFIG_NAME).read_text())["kind"]
