"""``slimdiar diarize`` over several processes: ``--jobs N`` here, or ranks of a launcher.

``--jobs N`` starts N worker processes (spawned, so each has its own torch and thread pools),
each with ``--threads`` torch threads (default: the cores divided among the jobs) and the same
cap in ``OMP_NUM_THREADS``/``MKL_NUM_THREADS``/``OPENBLAS_NUM_THREADS``. Each worker runs the
command as rank ``i`` of ``N``, exactly as under ``torchrun``: it diarizes its share of the
recordings and writes their files, and nothing else.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import sys

from slimdiar.errors import ConfigError, SlimdiarError
from slimdiar.pipeline.parallel import (
    Rank,
    gather_failures,
    launcher_rank,
    thread_environment,
    threads_per_job,
)

logger = logging.getLogger(__name__)


def set_threads(args: argparse.Namespace) -> None:
    """Apply ``--threads`` to this process: given, or the cores with ``--jobs 1``, or torch's."""
    threads = getattr(args, "threads", None)
    if threads is None and getattr(args, "jobs", None):
        threads = threads_per_job(args.jobs)
    if threads:
        import torch

        torch.set_num_threads(threads)


def current_rank(args: argparse.Namespace) -> Rank:
    """The rank of this process: from its launcher, or alone (``--jobs`` starts its own)."""
    rank = launcher_rank()
    if rank.distributed and (getattr(args, "jobs", None) or 1) > 1:
        raise ConfigError(
            f"--jobs {args.jobs} cannot run under a launcher that already starts "
            f"{rank.world_size} processes (RANK/WORLD_SIZE are set): give one"
        )
    return rank


def run_jobs(args: argparse.Namespace, command, num_recordings: int) -> int:
    """Run ``command(args)`` in ``args.jobs`` worker processes; the worst exit status.

    No more workers start than there are recordings. Returns 0 when every worker succeeded,
    otherwise the largest status of a worker (1: a recording failed; 2: an error before any
    work; 130: interrupted).
    """
    jobs = max(1, min(args.jobs, num_recordings))
    threads = args.threads or threads_per_job(jobs)
    worker_args = argparse.Namespace(**{**vars(args), "jobs": None, "threads": threads})
    context = multiprocessing.get_context("spawn")
    saved = {
        name: os.environ.get(name)
        for name in (*thread_environment(1), "RANK", "WORLD_SIZE", "LOCAL_RANK")
    }
    processes = []
    try:
        os.environ.update(thread_environment(threads))  # read by the children as they start
        for index in range(jobs):
            os.environ.update(RANK=str(index), WORLD_SIZE=str(jobs), LOCAL_RANK=str(index))
            process = context.Process(
                target=_worker, args=(command, worker_args), name=f"slimdiar-diarize-{index}"
            )
            process.start()
            processes.append(process)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    logger.info("%d jobs, %d torch threads each", jobs, threads)
    try:
        for process in processes:
            process.join()
    except BaseException:  # Ctrl-C: the workers get it too; do not leave one behind
        for process in processes:
            process.terminate()
        for process in processes:
            process.join()
        raise
    statuses = [process.exitcode for process in processes]
    # a worker killed by a signal has a negative exit code: count it as a failure
    return max((s if s is not None and s >= 0 else 1) for s in statuses)


def _worker(command, args: argparse.Namespace) -> None:
    """One ``--jobs`` worker: the command inside the command line's error boundary."""
    from slimdiar.cli import _error_line

    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        set_threads(args)
        status = int(command(args) or 0)
    except KeyboardInterrupt:
        status = 130
    except (SlimdiarError, OSError) as error:
        print(f"slimdiar: error: {_error_line(error)}", file=sys.stderr)
        status = 2
    except Exception as error:
        logger.debug("worker failed", exc_info=True)
        print(
            f"slimdiar: internal error: {type(error).__name__}: {_error_line(error)} "
            "(please report this)",
            file=sys.stderr,
        )
        status = 1
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(status)


def finish_rank(rank: Rank, num_recordings: int, failed: list[str]) -> int:
    """Report the share of one of several ranks; its exit status (1 when a recording failed).

    A summary line for this rank; then, under a launcher with a rendezvous (``MASTER_ADDR``),
    every rank waits for the others, so that none is stopped before its recordings are written
    (torchrun stops all ranks as soon as one exits with an error), and rank 0 reports the total.
    """
    detail = f": {', '.join(failed)}" if failed else ""
    print(
        f"slimdiar: rank {rank.rank} of {rank.world_size}: {num_recordings} recordings, "
        f"{len(failed)} failed{detail}",
        file=sys.stderr,
    )
    totals = gather_failures(rank, num_recordings, len(failed))
    if totals is not None and rank.rank == 0:
        recordings, failures = totals
        print(
            f"slimdiar: all {rank.world_size} ranks: {failures} of {recordings} recordings failed",
            file=sys.stderr,
        )
    return 1 if failed else 0
