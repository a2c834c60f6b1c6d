"""The kinds of unit that WavLM's pruning gates, how gates are counted, and what pruning kept.

Each :class:`PruneUnit` is gated by exactly one attribute of one component in
:mod:`slimdiar.models.wavlm.components` (its ``GATES`` table names it); :data:`DEFAULT_RATES`
holds the initial drop rate of each kind (SPEC §1.4).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch

from slimdiar.models.wavlm.hardconcrete import HardConcrete


class PruneUnit(str, enum.Enum):
    """A kind of structure that a hard-concrete gate can remove."""

    CONV = "conv"  #: output channels of every conv layer
    HEADS = "heads"  #: attention heads
    FFN = "ffn"  #: FFN intermediate units
    ATTENTION_BLOCKS = "attention_blocks"  #: whole attention blocks
    FFN_BLOCKS = "ffn_blocks"  #: whole FFN blocks

    @classmethod
    def _missing_(cls, value: object) -> PruneUnit | None:
        """Also take the name a config gives the kind (``prune.units``: ``"head"``, ...)."""
        return next((unit for unit, name in CONFIG_NAMES.items() if name == value), None)


#: The name of each kind in a stage-1 config (``prune.units``).
CONFIG_NAMES = {
    PruneUnit.CONV: "conv",
    PruneUnit.HEADS: "head",
    PruneUnit.FFN: "ffn",
    PruneUnit.ATTENTION_BLOCKS: "attention_block",
    PruneUnit.FFN_BLOCKS: "ffn_block",
}

#: The units gated when none are named (SPEC §1.4: channels, heads, FFN units).
DEFAULT_UNITS = (PruneUnit.CONV, PruneUnit.HEADS, PruneUnit.FFN)

#: Initial probability that a unit of each kind is closed.
DEFAULT_RATES = {
    PruneUnit.CONV: 0.01,
    PruneUnit.HEADS: 0.01,
    PruneUnit.FFN: 0.5,
    PruneUnit.ATTENTION_BLOCKS: 0.01,
    PruneUnit.FFN_BLOCKS: 0.01,
}


def parse_units(units: Iterable[PruneUnit | str]) -> set[PruneUnit]:
    """The :class:`PruneUnit` members named by ``units`` (members or their values)."""
    if isinstance(units, str) or not isinstance(units, Iterable):
        raise TypeError(f"units must be a list of unit names, got {units!r}")
    parsed = set()
    for unit in units:
        try:
            parsed.add(PruneUnit(unit))
        except ValueError:
            valid = ", ".join(u.value for u in PruneUnit)
            raise ValueError(f"unknown pruning unit {unit!r}; valid units: {valid}") from None
    return parsed


def resolve_rates(rates: Mapping[PruneUnit | str, float] | None) -> dict[PruneUnit, float]:
    """:data:`DEFAULT_RATES` with the given initial drop rates put in."""
    resolved = dict(DEFAULT_RATES)
    for unit, rate in (rates or {}).items():
        (key,) = parse_units([unit])
        resolved[key] = float(rate)
    return resolved


class Count(enum.Enum):
    """How a gated model's sizes are counted."""

    EXACT = "exact"  #: the sizes of the current weights (gates ignored)
    EXPECTED = "expected"  #: differentiable expectations under the gates
    DETERMINISTIC = "deterministic"  #: what pruning keeps: the non-zero eval-mode mask units


def gated_size(gate: HardConcrete | None, full: int, count: Count):
    """Units of a block that a gate (or none) leaves open: an int, or a tensor when expected."""
    if count is Count.EXACT or gate is None:
        return full
    if count is Count.EXPECTED:
        return gate.expected_num_open()
    return int((gate.deterministic_mask() > 0).sum())


def block_probability(gate: HardConcrete | None, size, count: Count):
    """Probability that a block is kept by its whole-block gate (1.0 without one).

    Counted deterministically, a block is kept when its gate is open and it keeps a unit.
    """
    if count is Count.DETERMINISTIC:
        open_ = gate is None or float(gate.deterministic_mask()[0]) > 0
        return 1.0 if open_ and size > 0 else 0.0
    if count is Count.EXACT or gate is None:
        return 1.0
    return gate.expected_num_open()


@dataclass
class Kept:
    """What the eval-mode masks keep of one gated block.

    Attributes
    ----------
    index
        ``(k,)`` kept unit indices (into the units before pruning).
    scale
        ``(k,)`` soft mask value of each kept unit, folded into the following weights.
    block
        Soft value of the whole-block gate (1.0 without one; 0.0 removes the block).
    """

    index: torch.Tensor
    scale: torch.Tensor
    block: float = 1.0

    @classmethod
    def of(
        cls, unit_gate: HardConcrete | None, block_gate: HardConcrete | None, num_units: int
    ) -> Kept:
        """Read the deterministic masks of a block's unit gate and whole-block gate."""
        mask = (
            unit_gate.deterministic_mask().float().cpu()
            if unit_gate is not None
            else torch.ones(num_units)
        )
        block = float(block_gate.deterministic_mask()[0]) if block_gate is not None else 1.0
        index = torch.nonzero(mask > 0).flatten() if block > 0 else torch.zeros(0, dtype=torch.long)
        return cls(index, mask[index], block)

    @classmethod
    def nothing(cls) -> Kept:
        """An absent block."""
        return cls(torch.zeros(0, dtype=torch.long), torch.zeros(0), 0.0)

    def __len__(self) -> int:
        return int(self.index.numel())


@dataclass
class PruneResult:
    """What :meth:`~slimdiar.models.wavlm.WavLM.prune` kept.

    Attributes
    ----------
    conv_channels
        Kept channel indices of each conv layer (into the channels before pruning).
    heads
        Kept heads of each layer (indices into the original heads).
    ffn_units
        Kept FFN unit indices of each layer (into the units before pruning).
    """

    conv_channels: list[list[int]]
    heads: list[list[int]]
    ffn_units: list[list[int]]
