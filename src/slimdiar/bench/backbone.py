"""Size and speed of WavLM backbones, side by side.

Every model is timed in the same process on the same input: warm-up runs first, then the median
of repeated runs, at batch 1 and at a chosen batch size. Random weights are fine for speed, so
preset names and architecture JSON files (such as the published pruned shapes) can be compared
with real checkpoints.
"""

from __future__ import annotations

import functools
import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from slimdiar.errors import ConfigError
from slimdiar.models.config import PRESETS, WavLMConfig
from slimdiar.models.wavlm import WavLM

logger = logging.getLogger(__name__)


@dataclass
class BackboneResult:
    """Measurements of one backbone.

    Attributes
    ----------
    name
        What was given on the command line.
    params
        Counted parameters.
    macs_per_second
        Analytic MACs for one second of audio.
    latency_s
        Median seconds for one forward pass at batch 1.
    latency_batch_s
        Median seconds for one forward pass at ``batch_size``.
    rtf
        Real-time factor at batch 1: processing time / audio duration.
    rtf_batch
        Real-time factor at ``batch_size``: processing time / total audio duration.
    speedup_vs_first, speedup_batch_vs_first
        Latency of the first model divided by this model's, at batch 1 and at ``batch_size``.
    """

    name: str
    params: int
    macs_per_second: int
    latency_s: float
    latency_batch_s: float
    rtf: float
    rtf_batch: float
    speedup_vs_first: float = 1.0
    speedup_batch_vs_first: float = 1.0

    def to_dict(self) -> dict:
        return asdict(self)


def load_backbone_for_bench(spec: str) -> WavLM:
    """A preset name, an architecture JSON (random weights) or a checkpoint (its weights)."""
    if spec in PRESETS:
        return WavLM.from_preset(spec)
    path = Path(spec)
    if path.is_file() and path.suffix == ".json":
        return WavLM(WavLMConfig.from_json(path))
    if path.exists():
        return WavLM.from_pretrained(path)
    raise ConfigError(
        f"{spec!r} is neither a preset ({', '.join(sorted(PRESETS))}), an architecture JSON "
        "file, nor a checkpoint path"
    )


def _median_latency(run: Callable[[], None], warmup: int, repeats: int, sync) -> float:
    for _ in range(warmup):
        run()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def benchmark_backbones(
    specs: list[str],
    seconds: float = 8.0,
    batch_size: int = 8,
    device: str = "cpu",
    warmup: int = 2,
    repeats: int = 5,
    dtype: torch.dtype = torch.float32,
    progress: Callable[[str], None] | None = None,
) -> list[BackboneResult]:
    """Measure each backbone of ``specs`` on ``seconds`` of random audio.

    Parameters
    ----------
    specs
        Preset names, architecture JSON files or checkpoint paths; the first is the reference of
        the speed-up columns.
    seconds
        Audio duration of one input.
    batch_size
        The second batch size measured (besides 1).
    device
        ``"cpu"`` or ``"cuda"``.
    warmup, repeats
        Untimed and timed runs per measurement.
    dtype
        Weights and input dtype.
    progress
        Called with a short status line before each measurement.
    """
    if not specs:
        raise ConfigError("give at least one model to benchmark")
    if seconds <= 0 or batch_size < 1 or repeats < 1 or warmup < 0:
        raise ConfigError("seconds must be > 0, batch_size >= 1, repeats >= 1, warmup >= 0")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for, but torch sees no CUDA device")
    num_samples = int(round(seconds * 16000))

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    results = []
    for spec in specs:
        model = load_backbone_for_bench(spec).to(device=device, dtype=dtype).eval()
        if num_samples < model.config.receptive_field_samples:
            raise ConfigError(f"{seconds} s is shorter than one frame of {spec}")
        generator = torch.Generator().manual_seed(0)
        single = torch.randn(1, num_samples, generator=generator).to(device=device, dtype=dtype)
        batch = torch.randn(batch_size, num_samples, generator=generator).to(device=device,
                                                                             dtype=dtype)
        with torch.inference_mode():
            if progress:
                progress(f"{spec}: batch 1")
            latency = _median_latency(functools.partial(model, single), warmup, repeats, sync)
            if progress:
                progress(f"{spec}: batch {batch_size}")
            latency_batch = _median_latency(functools.partial(model, batch), warmup, repeats,
                                            sync)
        results.append(BackboneResult(
            name=spec,
            params=model.num_params(),
            macs_per_second=model.macs(1.0),
            latency_s=latency,
            latency_batch_s=latency_batch,
            rtf=latency / seconds,
            rtf_batch=latency_batch / (seconds * batch_size),
        ))
        del model, single, batch
    first = results[0]
    for result in results:
        result.speedup_vs_first = first.latency_s / result.latency_s
        result.speedup_batch_vs_first = first.latency_batch_s / result.latency_batch_s
    return results


def environment(device: str, dtype: torch.dtype) -> dict:
    """Facts that a timing depends on."""
    info = {
        "device": device,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "dtype": str(dtype).replace("torch.", ""),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["device_name"] = torch.cuda.get_device_name()
    else:
        import platform

        info["device_name"] = platform.processor() or platform.machine()
    return info
