"""Structured pruning with distillation: the losses and the sparsity control of SPEC §1.4.

The gates themselves live beside the modules they prune (:mod:`slimdiar.models.wavlm`); this
package holds what the pruning stages add on top: the distillation loss, the Lagrangian sparsity
controller with its target schedule, and the report of a pruned model.
"""

from slimdiar.prune.distill import default_distill_layers, distillation_loss, validate_layers
from slimdiar.prune.lagrangian import SparsityController, expected_sparsity

__all__ = [
    "SparsityController",
    "default_distill_layers",
    "distillation_loss",
    "expected_sparsity",
    "validate_layers",
]
