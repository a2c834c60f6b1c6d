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
from slimdiar.frames import SAMPLE_RATE
from slimdiar.models.precision import dtype_name, resolve_dtype, with_precision
from slimdiar.models.wavlm import WavLM
from slimdiar.models.wavlm.config import PRESETS, WavLMConfig

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
        Latency of the first model divided by this model's, at batch 1 and at ``batch_size``,
        both in this result's precision.
    dtype
        Precision the model ran in.
    precision_mode
        How a lower precision was applied (``"autocast"`` or ``"weights"``; see
        :mod:`slimdiar.models.precision`); ``None`` for float32.
    speedup_vs_float32, speedup_batch_vs_float32
        The same model's float32 latency divided by this one's, when float32 was measured too.
    engine
        What ran the model: ``"torch"`` (eager) or ``"onnx"`` (ONNX Runtime, float32, the
        model exported first; its intra-op threads are torch's thread count).
    speedup_vs_torch, speedup_batch_vs_torch
        For ONNX Runtime: the same model's float32 torch latency divided by this one's.
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
    dtype: str = "float32"
    precision_mode: str | None = None
    speedup_vs_float32: float | None = None
    speedup_batch_vs_float32: float | None = None
    engine: str = "torch"
    speedup_vs_torch: float | None = None
    speedup_batch_vs_torch: float | None = None

    def to_dict(self) -> dict:
        """The fields as a JSON-ready dict."""
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
    dtype: torch.dtype | list[torch.dtype] = torch.float32,
    progress: Callable[[str], None] | None = None,
    precision_mode: str = "autocast",
    engines: list[str] | tuple[str, ...] = ("torch",),
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
        Precision, or several precisions measured side by side: every model in each of them,
        one model after the other (results ordered by precision, then model).
    progress
        Called with a short status line before each measurement.
    precision_mode
        How a precision other than float32 is applied: ``"autocast"`` (float32 weights and
        input, :func:`torch.autocast`) or ``"weights"`` (weights and input cast).
    engines
        ``"torch"`` and/or ``"onnx"``: with ``"onnx"``, every model is also exported to ONNX
        (a temporary file) and timed in ONNX Runtime, float32 only, after the torch runs.
    """
    if not specs:
        raise ConfigError("give at least one model to benchmark")
    if seconds <= 0 or batch_size < 1 or repeats < 1 or warmup < 0:
        raise ConfigError("seconds must be > 0, batch_size >= 1, repeats >= 1, warmup >= 0")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for, but torch sees no CUDA device")
    dtypes = list(dtype) if isinstance(dtype, list | tuple) else [dtype]
    dtypes = [resolve_dtype(d, device) for d in dtypes]
    if len(set(dtypes)) != len(dtypes) or not dtypes:
        raise ConfigError("give each precision once")
    engines = list(engines)
    if not engines or set(engines) - {"torch", "onnx"} or len(set(engines)) != len(engines):
        raise ConfigError("engines are 'torch' and/or 'onnx', each once")
    if "onnx" in engines and (device != "cpu" or dtypes != [torch.float32]):
        raise ConfigError("the onnx engine is measured on the CPU in float32 only")
    num_samples = int(round(seconds * SAMPLE_RATE))

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    results = []
    for precision in dtypes if "torch" in engines else []:
        lower = precision != torch.float32
        input_dtype = precision if lower and precision_mode == "weights" else torch.float32
        for spec in specs:
            model = load_backbone_for_bench(spec).to(device=device).eval()
            if num_samples < model.config.receptive_field_samples:
                raise ConfigError(f"{seconds} s is shorter than one frame of {spec}")
            params, macs = model.num_params(), model.macs(1.0)
            run = with_precision(model, precision, precision_mode)
            generator = torch.Generator().manual_seed(0)
            single = torch.randn(1, num_samples, generator=generator).to(device, input_dtype)
            batch = torch.randn(batch_size, num_samples, generator=generator).to(
                device, input_dtype
            )
            label = f"{spec} ({dtype_name(precision)})"
            with torch.inference_mode():
                if progress:
                    progress(f"{label}: batch 1")
                latency = _median_latency(functools.partial(run, single), warmup, repeats, sync)
                if progress:
                    progress(f"{label}: batch {batch_size}")
                latency_batch = _median_latency(
                    functools.partial(run, batch), warmup, repeats, sync
                )
            results.append(
                BackboneResult(
                    name=spec,
                    params=params,
                    macs_per_second=macs,
                    latency_s=latency,
                    latency_batch_s=latency_batch,
                    rtf=latency / seconds,
                    rtf_batch=latency_batch / (seconds * batch_size),
                    dtype=dtype_name(precision),
                    precision_mode=precision_mode if lower else None,
                )
            )
            del model, run, single, batch
    if "onnx" in engines:
        results += _benchmark_onnx(specs, seconds, batch_size, warmup, repeats, progress)
    for group in {(r.dtype, r.engine) for r in results}:
        same = [r for r in results if (r.dtype, r.engine) == group]
        first = same[0]
        for result in same:
            result.speedup_vs_first = first.latency_s / result.latency_s
            result.speedup_batch_vs_first = first.latency_batch_s / result.latency_batch_s
    float32 = {r.name: r for r in results if r.dtype == "float32" and r.engine == "torch"}
    for result in results:
        if result.engine == "onnx" and result.name in float32:
            result.speedup_vs_torch = float32[result.name].latency_s / result.latency_s
            result.speedup_batch_vs_torch = (
                float32[result.name].latency_batch_s / result.latency_batch_s
            )
        elif result.name in float32:
            result.speedup_vs_float32 = float32[result.name].latency_s / result.latency_s
            result.speedup_batch_vs_float32 = (
                float32[result.name].latency_batch_s / result.latency_batch_s
            )
    return results


def _benchmark_onnx(specs, seconds, batch_size, warmup, repeats, progress):
    """Export each backbone to a temporary ONNX file and time it in ONNX Runtime."""
    import tempfile

    import numpy as np

    from slimdiar.pipeline.engines import make_session, require_onnxruntime
    from slimdiar.pipeline.export import export_backbone, require_exporter

    require_onnxruntime()
    require_exporter()
    num_samples = int(round(seconds * SAMPLE_RATE))
    results = []
    for spec in specs:
        model = load_backbone_for_bench(spec).eval()
        params, macs = model.num_params(), model.macs(1.0)
        with tempfile.TemporaryDirectory(prefix="slimdiar-bench-") as directory:
            if progress:
                progress(f"{spec} (onnx): export")
            path = export_backbone(model, Path(directory) / "backbone.onnx", spec)
            del model
            session = make_session(path, torch.get_num_threads())
        generator = np.random.default_rng(0)
        single = generator.standard_normal((1, num_samples), dtype=np.float32)
        batch = generator.standard_normal((batch_size, num_samples), dtype=np.float32)

        def run(x, session=session):
            session.run(None, {"waveforms": x})

        if progress:
            progress(f"{spec} (onnx): batch 1")
        latency = _median_latency(functools.partial(run, single), warmup, repeats, lambda: None)
        if progress:
            progress(f"{spec} (onnx): batch {batch_size}")
        latency_batch = _median_latency(
            functools.partial(run, batch), warmup, repeats, lambda: None
        )
        results.append(
            BackboneResult(
                name=spec,
                params=params,
                macs_per_second=macs,
                latency_s=latency,
                latency_batch_s=latency_batch,
                rtf=latency / seconds,
                rtf_batch=latency_batch / (seconds * batch_size),
                engine="onnx",
            )
        )
        del session
    return results


def environment(device: str, dtype: torch.dtype | list[torch.dtype]) -> dict:
    """Facts that a timing depends on."""
    dtypes = list(dtype) if isinstance(dtype, list | tuple) else [dtype]
    info = {
        "device": device,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "dtype": dtype_name(dtypes[0]) if len(dtypes) == 1 else "several",
    }
    if len(dtypes) > 1:
        info["dtypes"] = [dtype_name(d) for d in dtypes]
    if not device.startswith("cuda"):
        from slimdiar.models.precision import cpu_facts

        info.update(cpu_facts())
    if device.startswith("cuda") and torch.cuda.is_available():
        info["device_name"] = torch.cuda.get_device_name()
    else:
        import platform

        info["device_name"] = platform.processor() or platform.machine()
    return info
