"""Gradient-norm clipping at a percentile of the recently observed norms."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

import numpy as np
import torch

from slimdiar.errors import ConfigError


class PercentileClipper:
    """Clip the total gradient norm at a percentile of the last ``history_size`` norms.

    Every call records the current norm, then clips the gradients to the ``percentile``-th
    percentile (linear interpolation, as :func:`numpy.percentile`) of the recorded norms, the
    current one included. The first step is therefore never clipped. A non-finite norm is not
    recorded and leaves the gradients untouched; the caller should skip that step.

    Parameters
    ----------
    percentile
        In ``(0, 100]``; 90 in the reference recipe.
    history_size
        How many recent norms to keep; 1000 in the reference recipe.
    """

    def __init__(self, percentile: float = 90.0, history_size: int = 1000):
        if not 0 < percentile <= 100:
            raise ConfigError(f"clip percentile must be in (0, 100], got {percentile}")
        if history_size < 1:
            raise ConfigError(f"clip history size must be >= 1, got {history_size}")
        self.percentile = float(percentile)
        self.history: deque[float] = deque(maxlen=int(history_size))

    def threshold(self) -> float:
        """The current clipping threshold (``inf`` before any norm was recorded)."""
        if not self.history:
            return math.inf
        return float(np.percentile(np.asarray(self.history, dtype=np.float64), self.percentile))

    def __call__(self, parameters: Sequence[torch.Tensor]) -> tuple[float, float]:
        """Record the gradient norm of ``parameters`` and clip their gradients in place.

        Returns
        -------
        tuple
            ``(norm, threshold)``: the total 2-norm before clipping and the threshold used.
        """
        grads = [p.grad for p in parameters if p.grad is not None]
        if not grads:
            return 0.0, self.threshold()
        norm = float(
            torch.linalg.vector_norm(
                torch.stack([torch.linalg.vector_norm(g.detach().float()) for g in grads])
            )
        )
        if not math.isfinite(norm):
            return norm, self.threshold()
        self.history.append(norm)
        threshold = self.threshold()
        if norm > threshold:
            scale = threshold / (norm + 1e-6)
            for g in grads:
                g.mul_(scale)
        return norm, threshold

    def state_dict(self) -> dict:
        """The percentile and the recorded norms, for a checkpoint."""
        return {
            "percentile": self.percentile,
            "history_size": self.history.maxlen,
            "history": list(self.history),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.percentile = float(state["percentile"])
        self.history = deque(state["history"], maxlen=int(state["history_size"]))
