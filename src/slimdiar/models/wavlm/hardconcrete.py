"""Hard-concrete gates (Louizos et al., 2018) for structured pruning.

One :class:`HardConcrete` holds one ``log_alpha`` per prunable unit (a conv channel, an attention
head, an FFN unit, or a whole block). In training mode it samples a stretched, clamped concrete
mask per forward call; in eval mode it returns a deterministic mask: the expected number of closed
units (rounded) close, choosing the units with the smallest ``sigmoid(0.8 * log_alpha / beta)``,
and the others keep that soft value as their scale.
"""

from __future__ import annotations

import math

import torch
from torch import nn

TEMPERATURE = 2.0 / 3.0
STRETCH_LOW = -0.1
STRETCH_HIGH = 1.1
EPSILON = 1e-6


class HardConcrete(nn.Module):
    """A vector of hard-concrete gates.

    Parameters
    ----------
    num_units
        Number of gated units ``n``.
    init_drop_rate
        Initial probability of a unit being closed; ``log_alpha`` starts near
        ``log((1 - p) / p)`` with a small random spread.
    temperature
        Concrete temperature ``beta`` (2/3).
    """

    def __init__(
        self, num_units: int, init_drop_rate: float = 0.01, temperature: float = TEMPERATURE
    ):
        super().__init__()
        if num_units < 1:
            raise ValueError(f"a gate needs at least one unit, got {num_units}")
        if not 0.0 < init_drop_rate < 1.0:
            raise ValueError(f"init_drop_rate must be in (0, 1), got {init_drop_rate}")
        self.num_units = int(num_units)
        self.temperature = float(temperature)
        self.log_alpha = nn.Parameter(torch.empty(self.num_units))
        self.init_drop_rate = float(init_drop_rate)
        #: Random source of the training-mode masks (``None``: torch's default generator).
        self.generator: torch.Generator | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Draw ``log_alpha`` around ``log((1 - p) / p)`` with standard deviation 0.01."""
        mean = math.log(1.0 - self.init_drop_rate) - math.log(self.init_drop_rate)
        with torch.no_grad():
            self.log_alpha.normal_(mean, 0.01)

    def extra_repr(self) -> str:
        """The gate count and temperature, for ``repr``."""
        return f"num_units={self.num_units}, temperature={self.temperature:.3f}"

    def open_probability(self) -> torch.Tensor:
        """Probability that each unit's gate is non-zero, shape ``(n,)`` (differentiable)."""
        shift = self.temperature * math.log(-STRETCH_LOW / STRETCH_HIGH)
        return torch.sigmoid(self.log_alpha - shift)

    def expected_num_open(self) -> torch.Tensor:
        """Expected number of open units (a differentiable scalar, the L0 norm)."""
        return self.open_probability().sum()

    def deterministic_mask(self) -> torch.Tensor:
        """The eval-mode mask, shape ``(n,)``: zeros for closed units, soft scales elsewhere."""
        num_closed = round(self.num_units - self.expected_num_open().item())
        mask = torch.sigmoid(self.log_alpha / self.temperature * 0.8)
        if num_closed > 0:
            closed = torch.topk(mask, k=num_closed, largest=False).indices
            mask = mask.index_fill(0, closed, 0.0)
        return mask

    def sample_mask(self) -> torch.Tensor:
        """A training-mode mask, shape ``(n,)``, sampled with the reparameterisation trick."""
        u = torch.rand(
            self.log_alpha.shape,
            generator=self.generator,
            dtype=self.log_alpha.dtype,
            device=self.log_alpha.device,
        ).clamp(EPSILON, 1.0 - EPSILON)
        s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + self.log_alpha) / self.temperature)
        return (s * (STRETCH_HIGH - STRETCH_LOW) + STRETCH_LOW).clamp(0.0, 1.0)

    @torch.no_grad()
    def constrain_(self, bound: float) -> None:
        """Clamp ``log_alpha`` so that every open probability stays in ``[bound, 1 - bound]``.

        In place; ``bound <= 0`` does nothing. Applied after each optimiser step, it stops gates
        from saturating far beyond the point where they are (almost surely) open or closed, where
        their gradients vanish: a closed unit can reopen, and an important one cannot run away
        from the sparsity pressure.
        """
        if not 0.0 < bound < 0.5:
            return
        shift = self.temperature * math.log(-STRETCH_LOW / STRETCH_HIGH)
        limit = math.log(1.0 - bound) - math.log(bound)
        self.log_alpha.clamp_(shift - limit, shift + limit)

    def forward(self) -> torch.Tensor:
        """Return a sampled mask in training mode and the deterministic mask in eval mode."""
        return self.sample_mask() if self.training else self.deterministic_mask()
