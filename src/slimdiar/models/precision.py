"""Inference precision: float32, bfloat16 (CPU and GPU) or float16 (GPU only).

A model runs in a lower precision in one of two modes (:func:`with_precision`):

- ``"autocast"`` (the default): the weights stay float32 and the forward pass runs under
  :func:`torch.autocast`, which computes convolutions, linear layers and attention in the lower
  precision and keeps the rest (normalisations, softmax, the waveform) in float32;
- ``"weights"``: the weights are cast (``model.to(torch.bfloat16)``) and everything runs in the
  lower precision; :class:`~slimdiar.models.eend.EEND` casts its float32 input to the precision
  of its weights.

Either way the segmentation model returns float32 log-probabilities (its log-softmax runs in
float32). The ResNet speaker embedding runs only its trunk in the lower precision, its
filterbank, statistics pooling and projection staying in float32
(:meth:`~slimdiar.models.embeddings.resnet.ResNetEmbedding.set_compute_dtype`).

bfloat16 is fast on a CPU only where it has native bfloat16 arithmetic (AVX-512-BF16 or AMX);
elsewhere oneDNN emulates it and it is several times slower than float32: :func:`resolve_dtype`
warns then.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from slimdiar.errors import ConfigError

logger = logging.getLogger(__name__)

#: The precisions a model can run in, by the name the command line uses.
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
#: How a model is run in a lower precision (see the module docstring).
PRECISION_MODES = ("autocast", "weights")
#: /proc/cpuinfo flags of native bfloat16 arithmetic.
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
#: Holds an item once the missing-bfloat16 warning has been considered (once per process).
_WARNED: set[bool] = set()


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str]:
    """The feature flags of the first CPU in ``cpuinfo`` (empty where it is not readable)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def cpu_bf16_support(cpuinfo: str | Path = "/proc/cpuinfo") -> tuple[bool, str]:
    """Whether this CPU computes bfloat16 natively, and what that was decided from.

    Native means one of the /proc/cpuinfo flags ``avx512_bf16`` or ``amx_bf16``, or a torch
    CPU capability of ``AVX512_BF16``/``AMX`` (where torch reports one).

    Returns
    -------
    native
        True with AVX-512-BF16 or AMX-BF16.
    description
        The torch CPU capability and the bfloat16 flags found, for messages.
    """
    capability = torch.backends.cpu.get_cpu_capability()
    found = sorted(set(CPU_BF16_FLAGS) & cpu_flags(cpuinfo))
    native = bool(found) or any(name in capability.upper() for name in ("BF16", "AMX"))
    description = f"torch CPU capability {capability}, bfloat16 flags: {', '.join(found) or 'none'}"
    return native, description


def cpu_facts(cpuinfo: str | Path = "/proc/cpuinfo") -> dict:
    """What a CPU benchmark records of the processor's bfloat16 support.

    Returns
    -------
    dict
        ``cpu_capability`` (torch's vector instruction set, e.g. ``"AVX512"``; torch names no
        AMX here), ``cpu_native_bf16`` (as :func:`cpu_bf16_support`) and ``cpu_bf16_flags``
        (the /proc/cpuinfo flags found of ``avx512_bf16`` and ``amx_bf16``).
    """
    native, _ = cpu_bf16_support(cpuinfo)
    return {
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_native_bf16": native,
        "cpu_bf16_flags": sorted(set(CPU_BF16_FLAGS) & cpu_flags(cpuinfo)),
    }


def resolve_dtype(name: str | torch.dtype, device: str | torch.device = "cpu") -> torch.dtype:
    """The torch dtype of a precision name, checked against the device.

    Parameters
    ----------
    name
        ``"float32"``, ``"bfloat16"`` or ``"float16"`` (or the torch dtype itself).
    device
        Where the model will run.

    Raises
    ------
    ConfigError
        For an unknown name, or float16 on a CPU.
    """
    if isinstance(name, torch.dtype):
        names = {dtype: key for key, dtype in DTYPES.items()}
        if name not in names:
            raise ConfigError(f"unsupported dtype {name}; use one of {', '.join(DTYPES)}")
        name = names[name]
    if name not in DTYPES:
        raise ConfigError(f"unknown dtype {name!r}; use one of {', '.join(DTYPES)}")
    dtype = DTYPES[name]
    device_type = str(device).split(":")[0]  # an unknown device is reported where it is used
    if dtype == torch.float16 and device_type == "cpu":
        raise ConfigError(
            "float16 runs on a GPU only (CPUs have no fast float16 arithmetic); on a CPU use "
            "--dtype bfloat16 or float32"
        )
    if dtype == torch.bfloat16 and device_type == "cpu" and not _WARNED:
        native, description = cpu_bf16_support()
        _WARNED.add(True)
        if not native:
            logger.warning(
                "this CPU has no native bfloat16 arithmetic (no AVX-512-BF16 or AMX; %s): "
                "bfloat16 is emulated and slower than float32 here",
                description,
            )
    if dtype == torch.bfloat16 and device_type == "cuda" and torch.cuda.is_available():
        if not torch.cuda.is_bf16_supported():
            logger.warning("this GPU has no native bfloat16 support: it will be slow")
    return dtype


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``"bfloat16"``."""
    return str(dtype).replace("torch.", "")


def _to_float32(output):
    if torch.is_tensor(output):
        return output.float() if output.is_floating_point() else output
    if isinstance(output, list | tuple):
        return type(output)(_to_float32(item) for item in output)
    return output


class Autocast(nn.Module):
    """A float32 model whose forward pass runs under :func:`torch.autocast`.

    Floating-point outputs (a tensor, or a list or tuple of tensors) are returned as float32.
    Attributes the wrapper lacks are looked up on the wrapped model, so that it can stand in
    for it (``frame_step_samples``, ``powerset``, ``config``...).

    Parameters
    ----------
    model
        The float32 model.
    dtype
        ``torch.bfloat16`` or ``torch.float16``.
    """

    def __init__(self, model: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.model = model
        self.dtype = dtype

    def forward(self, *args, **kwargs):
        """The wrapped model's forward pass under autocast, outputs in float32."""
        parameter = next(self.model.parameters(), None)
        device_type = parameter.device.type if parameter is not None else "cpu"
        with torch.autocast(device_type=device_type, dtype=self.dtype):
            output = self.model(*args, **kwargs)
        return _to_float32(output)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["model"], name)


def with_precision(model: nn.Module, dtype: torch.dtype, mode: str = "autocast") -> nn.Module:
    """A model that runs in ``dtype`` (the model itself for float32).

    Parameters
    ----------
    model
        A float32 model (the segmentation model or a backbone).
    dtype
        From :func:`resolve_dtype`.
    mode
        ``"autocast"`` (wrap it in :class:`Autocast`) or ``"weights"`` (cast its weights, in
        place).

    Raises
    ------
    ConfigError
        For an unknown mode.
    """
    if mode not in PRECISION_MODES:
        raise ConfigError(
            f"unknown precision mode {mode!r}; use one of {', '.join(PRECISION_MODES)}"
        )
    if dtype == torch.float32:
        return model
    if mode == "weights":
        return model.to(dtype)
    return Autocast(model, dtype)
