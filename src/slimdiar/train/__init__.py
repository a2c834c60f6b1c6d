"""The one training loop: a :class:`Trainer` runs any :class:`Objective`.

A new stage plugs in by subclassing :class:`Objective` (modules, parameter groups, loss,
validation statistics, state) and handing it to :class:`Trainer` with its datasets; the paper's
stages are in :mod:`slimdiar.stages`, which this package never imports.
"""

from slimdiar.train.averaging import average_checkpoints
from slimdiar.train.checkpoints import last_checkpoint
from slimdiar.train.clipping import PercentileClipper
from slimdiar.train.distributed import DistContext, init_distributed, shutdown_distributed
from slimdiar.train.objective import Objective, ParamGroup
from slimdiar.train.trainer import Trainer, TrainerConfig, TrainResult

__all__ = [
    "DistContext",
    "Objective",
    "ParamGroup",
    "PercentileClipper",
    "TrainResult",
    "Trainer",
    "TrainerConfig",
    "average_checkpoints",
    "init_distributed",
    "last_checkpoint",
    "shutdown_distributed",
]
