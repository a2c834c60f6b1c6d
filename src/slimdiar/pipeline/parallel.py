"""Many recordings over many processes: which process diarizes which recording, on what.

A launcher (``torchrun``, or any other that sets ``RANK`` and ``WORLD_SIZE``, and ``LOCAL_RANK``
per machine) starts the same command several times; every process reads the same inputs, and
:func:`shard` splits them the same way in every process, so that each recording is diarized by
exactly one of them. Nothing needs to be exchanged for that: the split depends only on the
recording ids and their durations.

Usage::

    rank = launcher_rank()                         # Rank(0, 1, 0) without a launcher
    mine = shard(recordings, rank.world_size, durations_s(recordings))[rank.rank]
    device = rank_device("cuda", rank.local_rank)  # "cuda:<local rank>"
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from slimdiar.errors import ConfigError

logger = logging.getLogger(__name__)

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@dataclass(frozen=True)
class Rank:
    """One process among ``world_size`` that share the inputs.

    Parameters
    ----------
    rank
        Index of this process, ``0 <= rank < world_size``.
    world_size
        Number of processes.
    local_rank
        Index of this process on its machine (picks its GPU).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        """Whether more than one process shares the inputs."""
        return self.world_size > 1


def launcher_rank(environ: Mapping[str, str] | None = None) -> Rank:
    """The rank of this process, from the ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` variables.

    Without ``WORLD_SIZE`` (or ``RANK``) the process is alone: ``Rank(0, 1, 0)``. ``LOCAL_RANK``
    defaults to ``RANK`` (one machine).

    Raises
    ------
    ConfigError
        When a variable is not an integer, or the rank is outside ``[0, WORLD_SIZE)``.
    """
    environ = os.environ if environ is None else environ
    if "WORLD_SIZE" not in environ and "RANK" not in environ:
        return Rank()

    def number(name: str, default: str | None = None) -> int:
        text = environ.get(name, default)
        if text is None:
            raise ConfigError(
                f"{name} is not set, but "
                f"{'RANK' if name == 'WORLD_SIZE' else 'WORLD_SIZE'} is: a launcher "
                "sets both (e.g. torchrun)"
            )
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"{name}={text!r} is not an integer") from None

    world_size = number("WORLD_SIZE")
    rank = number("RANK")
    local_rank = number("LOCAL_RANK", str(rank))
    if world_size < 1:
        raise ConfigError(f"WORLD_SIZE={world_size} must be at least 1")
    if not 0 <= rank < world_size:
        raise ConfigError(f"RANK={rank} must be in [0, WORLD_SIZE={world_size})")
    if local_rank < 0:
        raise ConfigError(f"LOCAL_RANK={local_rank} must be at least 0")
    return Rank(rank, world_size, local_rank)


def durations_s(recordings: Sequence[tuple[str, Path]]) -> dict[str, float]:
    """Duration in seconds of every ``(uri, path)`` from its file header (0 when unreadable).

    An unreadable file weighs nothing in the split; the process that owns it reports why it
    cannot be read.
    """
    import soundfile

    found: dict[str, float] = {}
    for uri, path in recordings:
        try:
            found[uri] = float(soundfile.info(str(path)).duration)
        except (OSError, RuntimeError, soundfile.LibsndfileError) as error:
            logger.debug("%s: no duration from the header (%s)", path, error)
            found[uri] = 0.0
    return found


def shard(
    recordings: Sequence[tuple[str, Path]],
    world_size: int,
    durations: Mapping[str, float] | None = None,
) -> list[list[tuple[str, Path]]]:
    """Split recordings into ``world_size`` parts of about the same total duration.

    Longest recording first, each goes to the part with the least audio so far (the lower index
    on a tie); recordings of equal duration are taken in order of their id. The result depends
    only on the ids and durations, not on the order of ``recordings``; within a part, the
    recordings keep the order they were given in.

    Parameters
    ----------
    recordings
        ``(uri, path)`` pairs with distinct uris.
    world_size
        Number of parts, at least 1.
    durations
        Seconds per uri (missing: 0, i.e. balanced by count among themselves).

    Returns
    -------
    list of list of (uri, path)
        Part ``r`` is what rank ``r`` diarizes; a part may be empty.
    """
    if world_size < 1:
        raise ValueError(f"world_size must be at least 1, got {world_size}")
    durations = durations or {}
    loads = [0.0] * world_size
    counts = [0] * world_size
    owner: dict[str, int] = {}
    for uri, _ in sorted(recordings, key=lambda item: (-durations.get(item[0], 0.0), item[0])):
        part = min(range(world_size), key=lambda r: (loads[r], counts[r], r))
        owner[uri] = part
        loads[part] += durations.get(uri, 0.0)
        counts[part] += 1
    parts: list[list[tuple[str, Path]]] = [[] for _ in range(world_size)]
    for uri, path in recordings:
        parts[owner[uri]].append((uri, path))
    return parts


def rank_device(device: str, local_rank: int, num_gpus: int | None = None) -> str:
    """The device of the process of index ``local_rank`` on its machine.

    ``"cuda"`` becomes ``"cuda:<local_rank>"`` (modulo the number of GPUs, so that more
    processes than GPUs share them); an explicit index (``"cuda:1"``) and ``"cpu"`` stay as
    given.
    """
    if device != "cuda":
        return device
    if num_gpus is None:
        import torch

        num_gpus = torch.cuda.device_count()
    if num_gpus < 1:
        return device  # the pipeline reports that CUDA is not available
    if local_rank >= num_gpus:
        logger.warning("local rank %d shares a GPU: this machine has %d", local_rank, num_gpus)
    return f"cuda:{local_rank % num_gpus}"


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def threads_per_job(jobs: int, cores: int | None = None) -> int:
    """Threads per process when ``jobs`` processes share ``cores`` cores: at least 1."""
    cores = available_cores() if cores is None else cores
    return max(1, cores // jobs)


def thread_environment(threads: int) -> dict[str, str]:
    """Environment variables that cap the OpenMP/MKL/OpenBLAS threads of a process."""
    return {name: str(threads) for name in THREAD_VARIABLES}


def gather_failures(rank: Rank, num_recordings: int, num_failed: int) -> tuple[int, int] | None:
    """Wait for every rank and sum ``(recordings, failures)`` over them (gloo, CPU only).

    Used at the end of a run under a launcher: it keeps each rank alive until all of them have
    written their files, since a launcher such as torchrun stops every rank as soon as one exits
    with an error. Returns ``None``, without waiting, when there is no rendezvous to join
    (``MASTER_ADDR``/``MASTER_PORT`` unset, e.g. the workers of ``--jobs``) or a single rank.
    """
    if not rank.distributed or not (
        os.environ.get("MASTER_ADDR") and os.environ.get("MASTER_PORT")
    ):
        return None
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    started = not dist.is_initialized()
    if started:
        # the ranks meet here when they are done: the slowest may come much later
        dist.init_process_group(
            "gloo", rank=rank.rank, world_size=rank.world_size, timeout=timedelta(days=7)
        )
    try:
        counts = torch.tensor([num_recordings, num_failed], dtype=torch.int64)
        dist.all_reduce(counts)
    finally:
        if started:
            dist.destroy_process_group()
    return int(counts[0]), int(counts[1])
