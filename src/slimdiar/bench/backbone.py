"""Size and speed of WavLM backbones, side by side.

Every model is timed in the same process on the same input, at batch 1 and at a chosen batch
size: all of them loaded at once, then warm-up rounds and timed rounds that run each model once in
turns, so that the speed-ups (medians of per-round ratios) compare runs made moments apart.
Random weights are fine for speed, so preset names and architecture JSON files (such as the
published pruned shapes) can be compared with real checkpoints.
"""

from __future__ import annotations

import functools
import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
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
    times_s, times_batch_s
        The timed runs at batch 1 and at ``batch_size``, one per round. All models (every
        precision and engine) are timed in turns, round by round, and every speed-up above is
        the median of the per-round ratios (:func:`paired_ratio`), not the ratio of the
        medians.
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
    times_s: list[float] = field(default_factory=list)
    times_batch_s: list[float] = field(default_factory=list)

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


def _interleaved_latencies(
    runs: list[Callable[[], None]], warmup: int, repeats: int, sync
) -> list[list[float]]:
    """Seconds of each run of ``runs``, timed in turns: ``times[i][r]`` is run ``i`` in round ``r``.

    Every round times each callable once, starting one further along the list each round, so a
    change of the machine's load (or of its clock) during the measurement reaches every model
    alike, and no model always follows the same other one. The warm-up runs are taken in turns
    too.
    """
    for _ in range(warmup):
        for run in runs:
            run()
    sync()
    times: list[list[float]] = [[] for _ in runs]
    for round_index in range(repeats):
        for offset in range(len(runs)):
            i = (round_index + offset) % len(runs)
            start = time.perf_counter()
            runs[i]()
            sync()
            times[i].append(time.perf_counter() - start)
    return times


def paired_ratio(slower: list[float], faster: list[float]) -> float:
    """Median over rounds of ``slower[r] / faster[r]``: a speed-up measured in turns.

    Per-round ratios cancel the load of the moment both runs of a round shared; their median
    is steadier than the ratio of two medians taken from different moments. With one round it is
    the plain ratio.
    """
    if len(slower) != len(faster) or not slower:
        raise ValueError("paired times need the same, non-zero number of rounds")
    return statistics.median(a / b for a, b in zip(slower, faster, strict=True))


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
        Untimed and timed rounds per batch size; a round runs every model once, in turns
        (:func:`_interleaved_latencies`).
    dtype
        Precision, or several precisions measured side by side: every model in each of them,
        all loaded at once and timed in the same rounds (results ordered by precision, then
        model).
    progress
        Called with a short status line before each measurement.
    precision_mode
        How a precision other than float32 is applied: ``"autocast"`` (float32 weights and
        input, :func:`torch.autocast`) or ``"weights"`` (weights and input cast).
    engines
        ``"torch"`` and/or ``"onnx"``: with ``"onnx"``, every model is also exported to ONNX
        (a temporary file) and timed in ONNX Runtime, float32 only, in the same rounds.
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

    variants: list[_Variant] = []
    for precision in dtypes if "torch" in engines else []:
        lower = precision != torch.float32
        input_dtype = precision if lower and precision_mode == "weights" else torch.float32
        for spec in specs:
            if progress:
                progress(f"{spec} ({dtype_name(precision)}): loading")
            model = load_backbone_for_bench(spec).to(device=device).eval()
            if num_samples < model.config.receptive_field_samples:
                raise ConfigError(f"{seconds} s is shorter than one frame of {spec}")
            run = with_precision(model, precision, precision_mode)
            variants.append(
                _Variant(
                    dict(
                        name=spec,
                        params=model.num_params(),
                        macs_per_second=model.macs(1.0),
                        dtype=dtype_name(precision),
                        precision_mode=precision_mode if lower else None,
                    ),
                    run,
                    input_dtype,
                )
            )
    if "onnx" in engines:
        variants += _onnx_variants(specs, progress)
    generator = torch.Generator().manual_seed(0)
    single = torch.randn(1, num_samples, generator=generator)
    batch = torch.randn(batch_size, num_samples, generator=generator)
    times = []  # per phase (batch 1, then batch_size): per variant, per round
    for size, waveforms in ((1, single), (batch_size, batch)):
        if progress:
            progress(f"{len(variants)} models in turns: batch {size}")
        runs = [variant.bind(waveforms, device) for variant in variants]
        with torch.inference_mode():
            times.append(_interleaved_latencies(runs, warmup, repeats, sync))
        del runs
    results = []
    for variant, single_times, batch_times in zip(variants, *times, strict=True):
        latency, latency_batch = statistics.median(single_times), statistics.median(batch_times)
        results.append(
            BackboneResult(
                **variant.fields,
                latency_s=latency,
                latency_batch_s=latency_batch,
                rtf=latency / seconds,
                rtf_batch=latency_batch / (seconds * batch_size),
                times_s=single_times,
                times_batch_s=batch_times,
            )
        )
    del variants
    for group in {(r.dtype, r.engine) for r in results}:
        same = [r for r in results if (r.dtype, r.engine) == group]
        first = same[0]
        for result in same:
            result.speedup_vs_first = paired_ratio(first.times_s, result.times_s)
            result.speedup_batch_vs_first = paired_ratio(first.times_batch_s, result.times_batch_s)
    float32 = {r.name: r for r in results if r.dtype == "float32" and r.engine == "torch"}
    for result in results:
        if result.name not in float32:
            continue
        reference = float32[result.name]
        speedup = paired_ratio(reference.times_s, result.times_s)
        speedup_batch = paired_ratio(reference.times_batch_s, result.times_batch_s)
        if result.engine == "onnx":
            result.speedup_vs_torch, result.speedup_batch_vs_torch = speedup, speedup_batch
        else:
            result.speedup_vs_float32, result.speedup_batch_vs_float32 = speedup, speedup_batch
    return results


@dataclass
class _Variant:
    """One model in one precision and engine, waiting for its input."""

    fields: dict  # the BackboneResult fields known before timing
    call: Callable
    input_dtype: torch.dtype | None  # None: a numpy float32 array (ONNX Runtime)

    def bind(self, waveforms: torch.Tensor, device: str) -> Callable[[], object]:
        if self.input_dtype is None:
            return functools.partial(self.call, waveforms.numpy())
        return functools.partial(self.call, waveforms.to(device, self.input_dtype))


def _onnx_variants(specs, progress) -> list[_Variant]:
    """Export each backbone to a temporary ONNX file and open it in ONNX Runtime."""
    import tempfile

    from slimdiar.pipeline.engines import make_session, require_onnxruntime
    from slimdiar.pipeline.export import export_backbone, require_exporter

    ort = require_onnxruntime()
    require_exporter()
    # Every session returns the memory of a run to the system at its end: several sessions are
    # open at once here, and ONNX Runtime's arena would otherwise keep each one's largest run
    # (Large at batch 32 in torch and ONNX Runtime at once ran out of 24 GB). It costs no time
    # measurably (Base+ s80, 8 s: 0.96x at batch 1, 0.95x at batch 8, in turns with a session
    # that keeps its arena).
    shrink = ort.RunOptions()
    shrink.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    variants = []
    for spec in specs:
        model = load_backbone_for_bench(spec).eval()
        params, macs = model.num_params(), model.macs(1.0)
        with tempfile.TemporaryDirectory(prefix="slimdiar-bench-") as directory:
            if progress:
                progress(f"{spec} (onnx): export")
            path = export_backbone(model, Path(directory) / "backbone.onnx", spec)
            del model
            session = make_session(path, torch.get_num_threads())

        def run(x, session=session):
            session.run(None, {"waveforms": x}, shrink)

        variants.append(
            _Variant(dict(name=spec, params=params, macs_per_second=macs, engine="onnx"), run, None)
        )
    return variants


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
