"""Lagrangian control of the expected sparsity (SPEC §1.4).

The pruning loss gains ``λ1 (ŝ - t) + λ2 (ŝ - t)²``, where ``ŝ`` is the expected sparsity of the
gated student and ``t`` the target of the moment. The student's weights and gates minimise it;
``λ1`` and ``λ2`` maximise it (gradient ascent), so the multipliers grow while ``ŝ`` lags ``t``
and the gates are pushed until the expected sparsity tracks the target.
"""

from __future__ import annotations

import torch
from torch import nn

from slimdiar.errors import ConfigError

OBJECTIVES = ("params", "macs")


def expected_sparsity(student, reference_size: float, objective: str = "params",
                      seconds: float = 1.0) -> torch.Tensor:
    """``1 - expected size of the gated student / size of the reference`` (differentiable).

    Parameters
    ----------
    student
        A :class:`~slimdiar.models.wavlm.WavLM` with gates.
    reference_size
        Parameters (or MACs for ``seconds`` of audio) of the unpruned teacher.
    objective
        ``"params"`` or ``"macs"``.
    seconds
        Audio duration of the MAC count.
    """
    if objective == "params":
        size = student.expected_num_params()
    elif objective == "macs":
        size = student.expected_macs(seconds)
    else:
        raise ConfigError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    return 1.0 - size / reference_size


class SparsityController(nn.Module):
    """The multipliers ``λ1, λ2`` and the target schedule.

    Parameters
    ----------
    final_sparsity
        Target at the end of the warm-up, in (0, 1).
    warmup_epochs
        The target rises linearly from 0 to ``final_sparsity`` over this many epochs.
    """

    def __init__(self, final_sparsity: float, warmup_epochs: float = 5.0):
        super().__init__()
        if not 0.0 < final_sparsity < 1.0:
            raise ConfigError(f"sparsity must be in (0, 1), got {final_sparsity}")
        if warmup_epochs < 0:
            raise ConfigError(f"warmup_epochs must be >= 0, got {warmup_epochs}")
        self.final_sparsity = float(final_sparsity)
        self.warmup_epochs = float(warmup_epochs)
        self.lambda1 = nn.Parameter(torch.zeros(()))
        self.lambda2 = nn.Parameter(torch.zeros(()))

    def target(self, epoch_progress: float) -> float:
        """Target sparsity after ``epoch_progress`` (fractional) epochs."""
        if self.warmup_epochs == 0:
            return self.final_sparsity
        return self.final_sparsity * min(1.0, max(0.0, epoch_progress) / self.warmup_epochs)

    def penalty(self, sparsity: torch.Tensor, target: float) -> torch.Tensor:
        """``λ1 (ŝ - t) + λ2 (ŝ - t)²`` for expected sparsity ``ŝ`` and target ``t``."""
        gap = sparsity - target
        return self.lambda1 * gap + self.lambda2 * gap * gap
