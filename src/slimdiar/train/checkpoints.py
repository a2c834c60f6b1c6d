"""Epoch checkpoints of a training run: where they live, how they are written and read back.

``EXP_DIR/checkpoints/epoch-NNN/`` (1-based NNN) is a checkpoint directory of the objective (its
weights and config, :meth:`~slimdiar.train.objective.Objective.save`) plus ``training-state.pt``:
the optimisers, the clipper, the random states of every process and the loop counters, saved as
plain tensors and Python values so that it loads with ``weights_only=True``. A directory is
written under a temporary name and renamed when complete: a killed run leaves no half-written
checkpoint.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from slimdiar.errors import CheckpointError
from slimdiar.fileio import current_umask
from slimdiar.models.checkpoint import is_checkpoint_dir

STATE_NAME = "training-state.pt"
CHECKPOINT_PATTERN = re.compile(r"^epoch-(\d{3,})$")


def checkpoint_name(epoch: int) -> str:
    """Directory name of the checkpoint written after ``epoch`` (1-based) epochs."""
    return f"epoch-{epoch:03d}"


def checkpoint_epoch(checkpoint: Path) -> int:
    """The epoch (1-based) of a checkpoint directory named by :func:`checkpoint_name`."""
    match = CHECKPOINT_PATTERN.match(checkpoint.name)
    if match is None:
        raise CheckpointError(
            f"{checkpoint}: not an epoch checkpoint (its name should be epoch-NNN)"
        )
    return int(match.group(1))


def last_checkpoint(exp_dir: str | Path) -> Path | None:
    """The complete epoch checkpoint with the highest epoch in ``exp_dir``, if any."""
    root = Path(exp_dir) / "checkpoints"
    found = []
    if root.is_dir():
        for path in root.iterdir():
            match = CHECKPOINT_PATTERN.match(path.name)
            if match and (path / STATE_NAME).is_file() and is_checkpoint_dir(path):
                found.append((int(match.group(1)), path))
    return max(found)[1] if found else None


def write_checkpoint(
    final: Path, save_weights: Callable[[Path], object], training_state: dict
) -> None:
    """Write the checkpoint directory ``final`` atomically (replacing one of the same name).

    Parameters
    ----------
    final
        ``EXP_DIR/checkpoints/epoch-NNN``.
    save_weights
        Writes the objective's checkpoint directory at the path it is given.
    training_state
        What :func:`read_training_state` returns on resume.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp_root = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp.", dir=final.parent))
    try:
        tmp = tmp_root / final.name
        save_weights(tmp)
        state_tmp = tmp / f".{STATE_NAME}.tmp"
        torch.save(training_state, state_tmp)
        os.replace(state_tmp, tmp / STATE_NAME)
        os.chmod(tmp, 0o777 & ~current_umask())
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)


def read_training_state(checkpoint: Path) -> dict:
    """The training state of an epoch checkpoint, loaded without executing code."""
    try:
        return torch.load(checkpoint / STATE_NAME, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several unrelated types
        raise CheckpointError(f"{checkpoint / STATE_NAME}: unreadable ({error})") from None


def rng_state() -> dict:
    """The random states of this process as plain Python values (picklable, weights-only safe)."""
    state = np.random.get_state(legacy=True)
    if not isinstance(state, tuple):  # the legacy layout is a tuple for the global generator
        raise TypeError(f"unexpected NumPy random state of type {type(state).__name__}")
    kind, key, *rest = state
    rng = {
        "python": random.getstate(),
        "numpy": [kind, key.tolist(), *rest],
        "torch": torch.get_rng_state().tolist(),
    }
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state().tolist()
    return rng


def set_rng_state(rng: dict) -> None:
    """Restore the random states that :func:`rng_state` returned."""
    python = rng["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))
    kind, key, *rest = rng["numpy"]
    np.random.set_state((kind, np.asarray(key, dtype=np.uint32), *rest))
    torch.set_rng_state(torch.tensor(rng["torch"], dtype=torch.uint8))
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(torch.tensor(rng["cuda"], dtype=torch.uint8))


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (before building a model, identically on every process)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
