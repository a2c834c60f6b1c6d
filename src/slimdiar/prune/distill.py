"""Layer-wise distillation loss between a student and a teacher WavLM."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from slimdiar.errors import ConfigError


def default_distill_layers(num_layers: int) -> list[int]:
    """Hidden states distilled by default: the input and every third of the depth.

    ``[0, 4, 8, 12]`` for 12 layers (Base+), ``[0, 8, 16, 24]`` for 24 (Large).
    """
    return [0, *sorted({max(1, round(num_layers * k / 3)) for k in (1, 2, 3)})]


def validate_layers(layers: list[int], num_layers: int) -> list[int]:
    """Check that every index names a hidden state of a ``num_layers``-layer model.

    Raises
    ------
    ConfigError
        If a layer is out of range, repeated, or the list is empty.
    """
    layers = [int(i) for i in layers]
    if not layers:
        raise ConfigError("distill_layers is empty; give at least one hidden-state index")
    bad = [i for i in layers if not 0 <= i <= num_layers]
    if bad:
        raise ConfigError(
            f"distill_layers {bad} are beyond the model's depth: a {num_layers}-layer WavLM has "
            f"hidden states 0..{num_layers}"
        )
    if len(set(layers)) != len(layers):
        raise ConfigError(f"distill_layers has repeated entries: {layers}")
    return layers


def distillation_loss(
    student: list[torch.Tensor],
    teacher: list[torch.Tensor],
    layers: list[int],
    frame_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """L1 distance plus negative cosine similarity, averaged over the chosen hidden states.

    Per hidden state, the L1 term is the mean absolute difference over every element of the
    real frames and the cosine term the mean over those frames of the cosine similarity of the
    two feature vectors; both are then averaged over ``layers``. For equally long chunks this is
    the mean absolute error and the mean cosine of the stacked ``(batch, layer, frames, E)``
    states, the reference's loss; no log-sigmoid is applied to the cosine.

    Parameters
    ----------
    student, teacher
        All hidden states, each ``(batch, frames, E)``.
    layers
        Indices of the hidden states to match.
    frame_mask
        ``(batch, frames)`` bool, True on real frames (padding is ignored).

    Returns
    -------
    tuple
        ``(loss, scalars)``: ``loss = distill_l1 - distill_cos``, the two layer-averaged terms
        also in ``scalars``.
    """
    if not layers:
        raise ConfigError("distill_layers is empty; give at least one hidden-state index")
    total_l1 = total_cos = 0.0
    for i in layers:
        s, t = student[i], teacher[i].detach()
        l1 = (s - t).abs().mean(-1)                                   # (B, T)
        cos = F.cosine_similarity(s, t, dim=-1)                       # (B, T)
        if frame_mask is None:
            total_l1 = total_l1 + l1.mean()
            total_cos = total_cos + cos.mean()
        else:
            weight = frame_mask.to(l1.dtype)
            count = weight.sum().clamp(min=1.0)
            total_l1 = total_l1 + (l1 * weight).sum() / count
            total_cos = total_cos + (cos * weight).sum() / count
    mean_l1, mean_cos = total_l1 / len(layers), total_cos / len(layers)
    loss = mean_l1 - mean_cos
    return loss, {"distill_l1": float(mean_l1.detach()), "distill_cos": float(mean_cos.detach())}
