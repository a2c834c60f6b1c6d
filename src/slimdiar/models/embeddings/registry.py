"""Speaker embedding models by name or checkpoint path, behind one inference interface.

``load_embedding_model("ge2e")`` gives Resemblyzer's pretrained GE2E encoder (offline, the
default); ``load_embedding_model("path/to/avg_model.pt")`` gives WeSpeaker's ResNet34 (or any
WeSpeaker BasicBlock ResNet) from a WeSpeaker or pyannote checkpoint, the layout detected from
the key names. Checkpoints are read with ``torch.load(weights_only=True)`` (or safetensors) and
never run code: a Python object that is not a tensor, a container or a primitive (the pickled
pyannote task objects in the metadata of pyannote's Lightning checkpoints) is read as an inert
:class:`InertGlobal` placeholder, which the state dict itself may not contain.
"""

from __future__ import annotations

import logging
import pickle
import re
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F

from slimdiar.errors import AudioError, CheckpointError, ConfigError
from slimdiar.models.embeddings.ge2e import GE2EEmbedding, find_pretrained_ge2e
from slimdiar.models.embeddings.resnet import ResNetEmbedding, to_wespeaker_layout

logger = logging.getLogger(__name__)

#: The model used when none is named: the only one whose trained weights are available offline.
DEFAULT_EMBEDDING = "ge2e"
#: Names :func:`load_embedding_model` knows, with what each needs.
MODEL_NAMES = {
    "ge2e": "Resemblyzer's GE2E encoder; weights from `pip install --no-deps resemblyzer`",
    "wespeaker-resnet34": "WeSpeaker ResNet34; pass the path of its avg_model.pt or "
    "pyannote's pytorch_model.bin instead of the name",
}
#: Agglomerative clustering threshold used with each architecture when the settings give none:
#: GE2E's was measured with oracle segmentation on simulated conversations of unseen voices
#: (``tools/measure_clustering_threshold.py``, ``docs/clustering-threshold.md``); the ResNet's
#: is the reference recipe's, tuned for WeSpeaker's ResNet34.
DEFAULT_THRESHOLDS = {"ge2e": 0.55, "resnet": 0.70}
#: File names looked for, in order, when a directory is given.
CHECKPOINT_FILE_NAMES = ("avg_model.pt", "pytorch_model.bin", "model.safetensors", "pretrained.pt")
#: Containers in which training frameworks nest the state dict.
NESTED_STATE_DICT_KEYS = ("state_dict", "model_state", "model")
#: Harmless non-tensor objects that checkpoints carry (torch.__version__ in metadata).
SAFE_GLOBALS = [torch.torch_version.TorchVersion]


class InertGlobal:
    """What an unknown Python global of a checkpoint is read as: nothing of it ever runs.

    Calling, constructing or restoring the state of a placeholder only records the arguments;
    its ``name`` is the global's full name in the checkpoint.
    """

    name = "<unknown>"
    args: tuple = ()
    state: object = None

    def __new__(cls, *args, **kwargs):
        """A placeholder that records the arguments it was built with."""
        instance = super().__new__(cls)
        instance.args = args
        return instance

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self.state = state

    def __setitem__(self, key, value):
        pass

    def append(self, value):
        """Ignore an item the unpickler adds (a placeholder of a list stays empty)."""

    def extend(self, values):
        """Ignore items the unpickler adds (a placeholder of a list stays empty)."""

    def __repr__(self) -> str:
        return f"<inert {self.name}>"


def _inert_placeholders(names: list[str]) -> list[tuple[type, str]]:
    """One :class:`InertGlobal` subclass per global name, as ``torch.serialization`` takes them."""
    return [
        (type(name.rsplit(".", 1)[-1], (InertGlobal,), {"name": name}), name)
        for name in sorted(names)
    ]


def torch_load_inert(path: Path):
    """``torch.load(weights_only=True)`` with every global it does not allow made inert."""
    try:
        unknown = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except (ValueError, RuntimeError, EOFError, OSError, pickle.UnpicklingError):
        unknown = []  # not a zip checkpoint: torch.load below decides
    allowed = {f"{g.__module__}.{g.__qualname__}" for g in SAFE_GLOBALS}
    unknown = [name for name in unknown if name not in allowed]
    if unknown:
        logger.info(
            "%s: %d Python objects of its metadata are read as inert placeholders (%s)",
            path,
            len(unknown),
            ", ".join(sorted(unknown)[:5]),
        )
    with torch.serialization.safe_globals([*SAFE_GLOBALS, *_inert_placeholders(unknown)]):
        return torch.load(path, map_location="cpu", weights_only=True)


@runtime_checkable
class EmbeddingNetwork(Protocol):
    """What :class:`SpeakerEmbedding` needs of a network (the GE2E and ResNet models have it).

    Calling it maps ``(batch, num_samples)`` float32 waveforms and optional
    ``(batch, num_weight_frames)`` weights to raw ``(batch, dimension)`` embeddings.
    """

    @property
    def dimension(self) -> int:
        """Size of the embedding."""
        ...

    @property
    def sample_rate(self) -> int:
        """Sampling rate in Hz the audio must have."""
        ...

    @property
    def min_num_samples(self) -> int:
        """Fewest samples the network takes."""
        ...

    @property
    def compute_dtype(self) -> torch.dtype:
        """Precision the network runs in."""
        ...

    def set_compute_dtype(self, dtype: torch.dtype) -> EmbeddingNetwork:
        """Run the network in ``dtype``; return itself."""
        ...

    def eval(self) -> EmbeddingNetwork:
        """Switch to inference mode; return itself."""
        ...

    def to(self, device: str | torch.device) -> EmbeddingNetwork:
        """Move to ``device``; return itself."""
        ...

    def __call__(self, waveforms: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
        """Raw ``(batch, dimension)`` embeddings of ``(batch, num_samples)`` waveforms."""
        ...


@runtime_checkable
class WindowEmbeddingNetwork(EmbeddingNetwork, Protocol):
    """A network that embeds every speaker of a waveform from one pass (the ResNet)."""

    def embed_windows(self, waveforms: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Raw ``(batch, num_speakers, dimension)`` embeddings of every weighted speaker.

        ``waveforms`` is ``(batch, num_samples)``, ``weights`` the frame weights
        ``(batch, num_speakers, num_weight_frames)`` of each speaker.
        """
        ...


class SpeakerEmbedding:
    """Inference wrapper: numpy or torch audio in, L2-normalised numpy embeddings out.

    Parameters
    ----------
    model
        A :class:`~slimdiar.models.embeddings.resnet.ResNetEmbedding` or
        :class:`~slimdiar.models.embeddings.ge2e.GE2EEmbedding`.
    name
        What the model was loaded from (for messages).
    device
        Where to run it.
    """

    def __init__(self, model: EmbeddingNetwork, name: str, device: str | torch.device = "cpu"):
        self.model = model.eval().to(device)
        self.name = name
        self.device = torch.device(device)

    @property
    def shares_windows(self) -> bool:
        """Whether :meth:`embed_windows` runs the network once per waveform for all speakers.

        True for the ResNet, whose masks weight only the statistics pooling; false for GE2E,
        which embeds the samples each mask selects (see ``docs/embeddings.md``).
        """
        return isinstance(self.model, WindowEmbeddingNetwork)

    @property
    def architecture(self) -> str:
        """``"ge2e"`` or ``"resnet"``."""
        return "ge2e" if isinstance(self.model, GE2EEmbedding) else "resnet"

    @property
    def default_threshold(self) -> float:
        """Agglomerative clustering threshold of this embedding (:data:`DEFAULT_THRESHOLDS`)."""
        return DEFAULT_THRESHOLDS[self.architecture]

    @property
    def compute_dtype(self) -> torch.dtype:
        """Precision the network runs in (its trunk, for the ResNet)."""
        return self.model.compute_dtype

    def set_compute_dtype(self, dtype: torch.dtype) -> SpeakerEmbedding:
        """Run the network in ``dtype``; features and pooling stay in float32. Returns self."""
        self.model.set_compute_dtype(dtype)
        return self

    @property
    def dimension(self) -> int:
        """Size of the embedding."""
        return self.model.dimension

    @property
    def sample_rate(self) -> int:
        """Sampling rate in Hz the audio must have."""
        return self.model.sample_rate

    @property
    def min_num_samples(self) -> int:
        """Fewest samples (per waveform, or selected by a mask for GE2E) the model takes."""
        return self.model.min_num_samples

    def __repr__(self) -> str:
        return (
            f"SpeakerEmbedding({self.name!r}, dimension={self.dimension}, "
            f"sample_rate={self.sample_rate}, device={str(self.device)!r})"
        )

    def embed_windows(self, waveforms, weights) -> np.ndarray:
        """Embed every masked speaker of each waveform.

        With :attr:`shares_windows`, the network runs once per waveform and only the pooling
        once per speaker; otherwise each (waveform, speaker) pair with a non-empty mask is
        embedded on its own. Both give the numbers of ``self(waveforms[i], weights[i, k])``.

        Parameters
        ----------
        waveforms : (batch, num_samples) np.ndarray or torch.Tensor
            float32 audio in [-1, 1] at :attr:`sample_rate`.
        weights : (batch, num_speakers, num_weight_frames) np.ndarray or torch.Tensor
            Frame weights of each speaker of each waveform, at any resolution.

        Returns
        -------
        embeddings : (batch, num_speakers, dimension) np.ndarray, float32
            Unit L2 norm; NaN rows for all-zero weights (and where :meth:`__call__` gives NaN).
        """
        waveforms = self._waveforms(waveforms)
        weights = torch.as_tensor(np.asarray(weights) if not torch.is_tensor(weights) else weights)
        if weights.ndim != 3 or weights.shape[0] != waveforms.shape[0]:
            raise AudioError(
                f"weights of shape {tuple(weights.shape)} do not match waveforms of shape "
                f"{tuple(waveforms.shape)}: expected (batch, num_speakers, num_weight_frames)"
            )
        weights = weights.to(self.device, torch.float32)
        if not isinstance(self.model, WindowEmbeddingNetwork):
            window_index, speaker_index = np.nonzero((weights.sum(dim=-1) > 0).cpu().numpy())
            embeddings = np.full((*weights.shape[:2], self.dimension), np.nan, dtype=np.float32)
            if len(window_index):
                embeddings[window_index, speaker_index] = self(
                    waveforms[window_index], weights[window_index, speaker_index]
                )
            return embeddings
        with torch.inference_mode():
            pooled = F.normalize(self.model.embed_windows(waveforms, weights), dim=-1)
            # (batch, num_speakers, dimension)
        return pooled.float().cpu().numpy()

    def _waveforms(self, waveforms) -> torch.Tensor:
        """Validated (batch, num_samples) float32 waveforms on :attr:`device`."""
        waveforms = torch.as_tensor(
            np.asarray(waveforms) if not torch.is_tensor(waveforms) else waveforms
        )
        if waveforms.ndim == 1:
            waveforms = waveforms[None]
        if waveforms.ndim != 2:
            raise AudioError(
                f"expected waveforms of shape (batch, num_samples), got {tuple(waveforms.shape)}"
            )
        if not torch.isfinite(waveforms).all():
            raise AudioError("waveforms contain NaN or infinite samples")
        return waveforms.to(self.device, torch.float32)

    def __call__(self, waveforms, weights=None) -> np.ndarray:
        """Embed a batch of waveforms.

        Parameters
        ----------
        waveforms : (batch, num_samples) np.ndarray or torch.Tensor
            float32 audio in [-1, 1] at :attr:`sample_rate`; a single (num_samples,) waveform
            is taken as a batch of one.
        weights : (batch, num_weight_frames) np.ndarray or torch.Tensor, optional
            Where each speaker talks: per-sample or per-frame weights (a 0/1 mask) at any
            resolution spread uniformly over the waveform. The ResNet pools statistics over the
            weighted frames; GE2E embeds the samples where the mask is above 0.5.

        Returns
        -------
        embeddings : (batch, dimension) np.ndarray, float32
            Unit L2 norm; a row is NaN when its selection is empty (or, for GE2E, shorter than
            :attr:`min_num_samples`).
        """
        waveforms = self._waveforms(waveforms)
        if weights is not None:
            weights = torch.as_tensor(
                np.asarray(weights) if not torch.is_tensor(weights) else weights
            )
            if weights.ndim == 1:
                weights = weights[None]
            if weights.ndim != 2 or weights.shape[0] != waveforms.shape[0]:
                raise AudioError(
                    f"weights of shape {tuple(weights.shape)} do not match waveforms of shape "
                    f"{tuple(waveforms.shape)}: expected (batch, num_weight_frames)"
                )
            weights = weights.to(self.device, torch.float32)
        with torch.inference_mode():
            embeddings = self.model(waveforms, weights)
            # (batch, dimension)
            embeddings = F.normalize(embeddings.float(), dim=-1)
        return embeddings.cpu().numpy().astype(np.float32)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read the tensors of a checkpoint file without running any code from it.

    ``.safetensors`` files are read with safetensors; anything else with
    ``torch.load(weights_only=True)``, where any Python global that it does not allow (a pickled
    object of the checkpoint's metadata) becomes an inert :class:`InertGlobal`: no code from the
    file runs. A state dict nested under ``state_dict`` (Lightning, pyannote), ``model_state``
    (Resemblyzer) or ``model`` is unwrapped.

    Raises
    ------
    CheckpointError
        When the file is missing, unreadable, would need code execution to load, or holds no
        state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as error:  # safetensors raises its own error types
            raise CheckpointError(f"{path}: not a readable safetensors file ({error})") from None
    try:
        content = torch_load_inert(path)
    except pickle.UnpicklingError as error:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(error))
        if found is None:
            detail = re.search(r"WeightsUnpickler error:\s*(.+)", str(error))
            reason = detail.group(1).strip() if detail else str(error).splitlines()[0]
            raise CheckpointError(f"{path}: not a readable torch checkpoint ({reason})") from None
        raise CheckpointError(
            f"{path}: refusing to load it: it holds the Python object {found.group(1)} in the "
            "legacy (non-zip) torch format, where it cannot be read without running code from "
            "the file. Where you trust the file, save its state dict alone, e.g. "
            "torch.save(torch.load(src, weights_only=False)['state_dict'], dst), and pass that "
            "file"
        ) from None
    except Exception as error:  # a file that is not a torch checkpoint fails anywhere in torch
        raise CheckpointError(
            f"{path}: not a readable torch checkpoint ({type(error).__name__}: {error})"
        ) from None
    for key in NESTED_STATE_DICT_KEYS:
        if isinstance(content, dict) and isinstance(content.get(key), dict):
            content = content[key]
            break
    if not isinstance(content, dict) or not content:
        raise CheckpointError(f"{path}: holds no state dict (a dict of tensors)")
    not_tensors = sorted(str(k) for k, v in content.items() if not torch.is_tensor(v))
    if not_tensors:
        raise CheckpointError(
            f"{path}: not a state dict: entries that are not tensors: {', '.join(not_tensors)}"
        )
    return content


def detect_architecture(state_dict: dict[str, torch.Tensor]) -> str:
    """Which embedding model a state dict belongs to: ``"ge2e"`` or ``"resnet"``.

    Raises
    ------
    CheckpointError
        Listing some keys when neither fits.
    """
    if "lstm.weight_ih_l0" in state_dict:
        return "ge2e"
    renamed, _ = to_wespeaker_layout(state_dict)
    if "conv1.weight" in renamed and "seg_1.weight" in renamed:
        return "resnet"
    shown = ", ".join(sorted(state_dict)[:8])
    raise CheckpointError(
        "not a known speaker embedding checkpoint: expected GE2E keys (lstm.*, linear.*) or "
        f"WeSpeaker ResNet keys ([resnet.]conv1.weight, ..., seg_1.weight); found {shown}"
        + (", ..." if len(state_dict) > 8 else "")
    )


def load_embedding_checkpoint(path: str | Path) -> GE2EEmbedding | ResNetEmbedding:
    """Build and strictly load the embedding model a checkpoint file (or directory) holds."""
    path = Path(path)
    if path.is_dir():
        candidates = [path / name for name in CHECKPOINT_FILE_NAMES if (path / name).is_file()]
        if not candidates:
            raise CheckpointError(
                f"{path}: directory holds none of {', '.join(CHECKPOINT_FILE_NAMES)}"
            )
        path = candidates[0]
    state_dict = read_state_dict(path)
    if detect_architecture(state_dict) == "ge2e":
        return GE2EEmbedding.from_state_dict(state_dict, str(path))
    return ResNetEmbedding.from_state_dict(state_dict, str(path))


def load_embedding_model(
    name_or_path: str | Path = DEFAULT_EMBEDDING, device: str | torch.device = "cpu"
) -> SpeakerEmbedding:
    """Load a speaker embedding model for inference.

    Parameters
    ----------
    name_or_path
        ``"ge2e"`` (Resemblyzer's pretrained weights, installed with
        ``pip install --no-deps resemblyzer``), or the path of a checkpoint file or directory
        (WeSpeaker ``avg_model.pt``, pyannote ``pytorch_model.bin``, a safetensors file, or a
        GE2E ``pretrained.pt``); the architecture and key layout are detected.
    device
        Where to run the model.

    Returns
    -------
    SpeakerEmbedding
        Callable as ``model(waveforms, weights=None)`` with ``dimension``, ``sample_rate`` and
        ``min_num_samples``.

    Raises
    ------
    ConfigError
        For ``"wespeaker-resnet34"`` without a path, or an unknown name that is not a file.
    CheckpointError
        When the weights are missing, unsafe or do not match the model.
    """
    name = str(name_or_path)
    if name == "ge2e":
        path = find_pretrained_ge2e()
        model = GE2EEmbedding.from_state_dict(read_state_dict(path), str(path))
        return SpeakerEmbedding(model, name, device)
    if name == "wespeaker-resnet34":
        raise ConfigError(
            "the WeSpeaker ResNet34 weights are not shipped: pass the path of its checkpoint "
            "(WeSpeaker's avg_model.pt or pyannote/wespeaker-voxceleb-resnet34-LM's "
            "pytorch_model.bin) instead of the name"
        )
    path = Path(name_or_path)
    if not path.exists():
        known = "; ".join(f"{k}: {v}" for k, v in MODEL_NAMES.items())
        raise ConfigError(
            f"{name!r} is neither a known embedding model nor an existing path. Known: {known}"
        )
    return SpeakerEmbedding(load_embedding_checkpoint(path), str(path), device)
