"""Self-describing checkpoint directories.

A slimdiar checkpoint is a directory::

    model.safetensors   the weights
    config.json         {"kind": ..., "config": {...}} - the full resolved architecture
    metadata.json       free-form facts: stage, step, sources, metrics

Loading is strict: a missing or unexpected key, or a tensor of the wrong shape, is a
:class:`~slimdiar.errors.CheckpointError` that lists the keys. Saving is atomic (the directory is
written beside its final place and renamed) and ends by reading the weights back.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from slimdiar.errors import CheckpointError
from slimdiar.fileio import current_umask, make_temporary_dir, write_json_atomic

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
METADATA_NAME = "metadata.json"
MAX_KEYS_SHOWN = 20


def _key_list(keys) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:MAX_KEYS_SHOWN])
    if len(keys) > MAX_KEYS_SHOWN:
        shown += f", ... ({len(keys) - MAX_KEYS_SHOWN} more)"
    return shown


def is_checkpoint_dir(path: str | Path) -> bool:
    """Whether ``path`` is a slimdiar checkpoint directory."""
    path = Path(path)
    return (path / WEIGHTS_NAME).is_file() and (path / CONFIG_NAME).is_file()


def save_checkpoint(
    directory: str | Path,
    state_dict: dict[str, torch.Tensor],
    kind: str,
    config: dict,
    metadata: dict | None = None,
) -> Path:
    """Write a checkpoint directory atomically.

    Parameters
    ----------
    directory
        Final path of the checkpoint; an existing checkpoint there is replaced only once the new
        one is completely written and verified.
    state_dict
        Tensors to store (made contiguous; shared storage is copied).
    kind
        What the weights are (``"wavlm"``, ``"eend"``, ...); checked on load.
    config
        JSON-serialisable description of the architecture.
    metadata
        JSON-serialisable facts about the checkpoint (stage, step, metrics, ...).

    Returns
    -------
    Path
        The checkpoint directory.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temporary_dir(directory.parent, f".{directory.name}.tmp.")
    try:
        tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
        save_file(tensors, str(tmp / WEIGHTS_NAME))
        os.chmod(tmp / WEIGHTS_NAME, 0o666 & ~current_umask())  # as the JSON files beside it
        write_json_atomic(tmp / CONFIG_NAME, {"kind": kind, "config": config})
        write_json_atomic(tmp / METADATA_NAME, metadata or {})
        reloaded = load_file(str(tmp / WEIGHTS_NAME))
        if set(reloaded) != set(tensors) or any(
            not torch.equal(reloaded[k], tensors[k]) for k in tensors
        ):
            raise CheckpointError(f"{directory}: weights read back differ from those written")
        if directory.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{directory.name}.old.", dir=directory.parent))
            os.replace(directory, old / "ckpt")
            os.replace(tmp, directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("saved %s checkpoint to %s", kind, directory)
    return directory


def load_checkpoint(
    directory: str | Path, kind: str | None = None
) -> tuple[dict[str, torch.Tensor], dict, dict]:
    """Read a checkpoint directory written by :func:`save_checkpoint`.

    Parameters
    ----------
    directory
        The checkpoint directory.
    kind
        If given, the kind the checkpoint must have.

    Returns
    -------
    tuple
        ``(state_dict, config, metadata)``.
    """
    directory = Path(directory)
    if not directory.exists():
        raise CheckpointError(f"{directory}: no such checkpoint")
    if not is_checkpoint_dir(directory):
        raise CheckpointError(
            f"{directory}: not a slimdiar checkpoint (expected {WEIGHTS_NAME} and {CONFIG_NAME})"
        )
    try:
        header = json.loads((directory / CONFIG_NAME).read_text())
        metadata_path = directory / METADATA_NAME
        metadata = json.loads(metadata_path.read_text()) if metadata_path.exists() else {}
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{directory}: unreadable JSON ({error})") from None
    if not isinstance(header, dict) or "kind" not in header or "config" not in header:
        raise CheckpointError(f"{directory / CONFIG_NAME}: expected keys 'kind' and 'config'")
    if kind is not None and header["kind"] != kind:
        raise CheckpointError(
            f"{directory}: holds a {header['kind']!r} checkpoint, expected {kind!r}"
        )
    try:
        state_dict = load_file(str(directory / WEIGHTS_NAME))
    except Exception as error:  # safetensors raises its own error types
        raise CheckpointError(f"{directory / WEIGHTS_NAME}: unreadable weights ({error})") from None
    return state_dict, header["config"], metadata


def read_metadata(directory: str | Path) -> dict:
    """The ``metadata.json`` of a checkpoint directory (``{}`` when there is none)."""
    path = Path(directory) / METADATA_NAME
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: unreadable metadata ({error})") from None


def load_state_dict_strict(
    module: torch.nn.Module,
    state_dict: dict[str, torch.Tensor],
    source: str | Path,
    file_keys: Mapping[str, str] | None = None,
) -> None:
    """Load ``state_dict`` into ``module``, failing on any missing, unexpected or mis-shaped key.

    Parameters
    ----------
    module
        The model, built for the checkpoint.
    state_dict
        Its tensors, under the model's keys.
    source
        Named in error messages.
    file_keys
        For tensors converted from another format: the key each has in the file, by the model's
        key. The error then names the first offending tensor as the file calls it (``key K has
        no place in the model``, ``K has shape ... but the model's ... needs ...``) or the first
        of the model's tensors the file lacks (``no tensor for the model's ...``).

    Raises
    ------
    CheckpointError
        Naming ``source`` and listing the offending keys.
    """
    expected = module.state_dict()
    if file_keys is not None:
        _check_converted(state_dict, expected, source, file_keys)
    missing = set(expected) - set(state_dict)
    unexpected = set(state_dict) - set(expected)
    problems = []
    if missing:
        problems.append(f"missing keys: {_key_list(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_key_list(unexpected)}")
    mismatched = [
        f"{k} {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(expected) & set(state_dict))
        if state_dict[k].shape != expected[k].shape
    ]
    if mismatched:
        problems.append("shape mismatch: " + "; ".join(mismatched[:MAX_KEYS_SHOWN]))
    if problems:
        detail = "; ".join(problems)
        raise CheckpointError(f"{source}: checkpoint does not match the model; {detail}")
    module.load_state_dict(state_dict, strict=True)


def _check_converted(
    state_dict: Mapping[str, torch.Tensor],
    expected: Mapping[str, torch.Tensor],
    source: str | Path,
    file_keys: Mapping[str, str],
) -> None:
    """The first problem of converted tensors, named as the file names them."""
    for key, value in state_dict.items():
        name = file_keys.get(key, key)
        if key not in expected:
            raise CheckpointError(f"{source}: key {name} has no place in the model ({key})")
        if value.shape != expected[key].shape:
            raise CheckpointError(
                f"{source}: {name} has shape {tuple(value.shape)} but the model's {key} needs "
                f"{tuple(expected[key].shape)}"
            )
    missing = [k for k in expected if k not in state_dict]
    if missing:
        raise CheckpointError(
            f"{source}: no tensor for the model's {missing[0]}"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
        )
