"""Running the same training command on one or many processes.

``torchrun`` and ``accelerate launch`` both start one process per device and set ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_distributed`
reads them and joins the process group (NCCL on GPUs, Gloo on CPUs). Gradients are averaged with
:func:`all_reduce_gradients` after the backward pass, which is what
:class:`~torch.nn.parallel.DistributedDataParallel` computes, without tying the loop to how an
objective composes its modules (a student, a frozen teacher and Lagrange multipliers).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from slimdiar.errors import ConfigError

logger = logging.getLogger(__name__)

BUCKET_NUMEL = 2**24


@dataclass(frozen=True)
class DistContext:
    """Where this process stands among the processes of one run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Whether this process writes files and shows progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether the run has more than one process."""
        return self.world_size > 1


def init_distributed(device: str = "auto") -> DistContext:
    """Join the process group described by the launcher's environment variables, if any.

    Parameters
    ----------
    device
        ``"auto"`` (the GPU of this process's ``LOCAL_RANK`` if CUDA is available, else the CPU),
        ``"cpu"`` or ``"cuda"``.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but CUDA is not available")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        torch_device = torch.device("cuda", local_rank)
    else:
        torch_device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if use_cuda else "gloo"
        dist.init_process_group(backend=backend)
        logger.info("rank %d of %d joined the %s process group", rank, world_size, backend)
    return DistContext(rank, world_size, local_rank, torch_device)


def shutdown_distributed() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_initialized():
        dist.destroy_process_group()


class EpochBatchSampler:
    """One process's share of the global batches of one epoch, in a reproducible order.

    The order of epoch ``e`` is a permutation drawn from ``(seed, e)`` alone, so a resumed run
    sees exactly the batches the uninterrupted run saw. The permutation is cut into global
    batches of ``global_batch_size`` (the incomplete last one is dropped, so every process takes
    the same number of steps), and process ``r`` takes the ``r``-th contiguous slice of
    ``global_batch_size / world_size`` indices of every global batch.

    Parameters
    ----------
    num_items
        Size of the dataset.
    global_batch_size
        Items per optimiser step over all processes; divisible by ``world_size``.
    seed
        Run seed.
    rank, world_size
        This process and the number of processes.
    shuffle
        Permute the items (training) or keep their order.
    """

    def __init__(
        self,
        num_items: int,
        global_batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
    ):
        if global_batch_size < 1 or global_batch_size % world_size:
            raise ConfigError(
                f"global batch size {global_batch_size} must be a positive multiple of the "
                f"number of processes ({world_size})"
            )
        if num_items < global_batch_size:
            raise ConfigError(
                f"the training set holds {num_items} chunks, fewer than one global batch of "
                f"{global_batch_size}; lower trainer.batch_size"
            )
        self.num_items = num_items
        self.global_batch_size = global_batch_size
        self.local_batch_size = global_batch_size // world_size
        self.seed = seed
        self.rank = rank
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose shuffled order the next iteration follows."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_items // self.global_batch_size

    def __iter__(self) -> Iterator[list[int]]:
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.num_items)
        else:
            order = np.arange(self.num_items)
        start = self.rank * self.local_batch_size
        for b in range(len(self)):
            batch = order[b * self.global_batch_size : (b + 1) * self.global_batch_size]
            yield batch[start : start + self.local_batch_size].tolist()


class ShardBatchSampler:
    """Every ``world_size``-th item starting at ``rank``, in order, in batches (validation)."""

    def __init__(self, num_items: int, batch_size: int, rank: int = 0, world_size: int = 1):
        self.indices = list(range(rank, num_items, world_size))
        self.batch_size = batch_size

    def __len__(self) -> int:
        return -(-len(self.indices) // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        for start in range(0, len(self.indices), self.batch_size):
            yield self.indices[start : start + self.batch_size]


def _buckets(tensors: list[torch.Tensor]) -> Iterator[list[torch.Tensor]]:
    bucket: list[torch.Tensor] = []
    size = 0
    for tensor in tensors:
        if bucket and (size + tensor.numel() > BUCKET_NUMEL or tensor.dtype != bucket[0].dtype):
            yield bucket
            bucket, size = [], 0
        bucket.append(tensor)
        size += tensor.numel()
    if bucket:
        yield bucket


def all_reduce_gradients(parameters: list[torch.nn.Parameter], world_size: int) -> None:
    """Replace every gradient by its mean over the processes (a missing gradient counts as 0)."""
    if world_size == 1:
        return
    grads = []
    for p in parameters:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        grads.append(p.grad)
    for bucket in _buckets(grads):
        flat = torch.cat([g.reshape(-1) for g in bucket])
        dist.all_reduce(flat)
        flat.div_(world_size)
        offset = 0
        for g in bucket:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()


def broadcast_tensors(tensors: list[torch.Tensor], world_size: int, src: int = 0) -> None:
    """Overwrite ``tensors`` on every process with rank ``src``'s values."""
    if world_size == 1:
        return
    for bucket in _buckets([t.data for t in tensors]):
        flat = torch.cat([t.reshape(-1) for t in bucket])
        dist.broadcast(flat, src)
        offset = 0
        for t in bucket:
            t.copy_(flat[offset : offset + t.numel()].view_as(t))
            offset += t.numel()


def all_reduce_sum(values: list[float], ctx: DistContext) -> list[float]:
    """Sum floats over the processes (float64)."""
    if not ctx.distributed:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=ctx.device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def gather_objects(obj, ctx: DistContext) -> list:
    """Every process's ``obj``, in rank order (a one-element list on one process)."""
    if not ctx.distributed:
        return [obj]
    gathered = [None] * ctx.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def barrier(ctx: DistContext) -> None:
    """Wait until every process gets here (nothing on one process)."""
    if ctx.distributed:
        dist.barrier()
