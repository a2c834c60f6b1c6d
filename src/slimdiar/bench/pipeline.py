"""Speed and memory of the whole diarization pipeline on long recordings.

The recording is read from disk window by window, so the audio itself never has to fit in
memory; what remains is whatever the pipeline keeps per window. To see whether that grows with
the recording's length, every measurement runs in a fresh process (so peaks of different
lengths never mix) and reports:

- the wall-clock seconds and real-time factor (processing time / audio duration) of each stage,
  as recorded by the pipeline in ``result.info["timings_s"]``, and of the whole call;
- the peak resident set size of the measuring process (``resource.getrusage``'s ``ru_maxrss``)
  and its increase over the resident size just before the call (models already loaded);
- on Linux, the peak resident size seen during each stage, sampled from ``/proc`` by the parent
  process every few milliseconds (so that stages spent in C code without Python running are
  seen too).

The default input is a deterministic synthetic conversation (:func:`write_synthetic_conversation`)
written to a temporary WAV file.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile

from slimdiar.errors import AudioError, CheckpointError, ConfigError, SlimdiarError
from slimdiar.frames import SAMPLE_RATE

logger = logging.getLogger(__name__)

#: Stages in the order the pipeline runs them; "output" is the building of the result.
STAGE_ORDER = (
    "segmentation",
    "speaker_counting",
    "embeddings",
    "clustering",
    "reconstruction",
    "output",
)
#: Seconds between two samples of the measured process's resident size.
RSS_SAMPLE_INTERVAL_S = 0.01
#: Fundamental frequencies (Hz) of the synthetic voices.
SYNTHETIC_F0_HZ = (110.0, 165.0, 220.0, 290.0)


def _bytes_to_mb(num_bytes: float) -> float:
    return num_bytes / 2**20


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (``ru_maxrss``)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes
    return _bytes_to_mb(peak if sys.platform == "darwin" else peak * 1024)


def current_rss_mb(pid: int | None = None) -> float | None:
    """Current resident set size of a process in MiB, from ``/proc`` (``None`` where absent)."""
    status = Path(f"/proc/{pid or 'self'}/status")
    try:
        text = status.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return None


# ---------------------------------------------------------------------- synthetic audio
def write_synthetic_conversation(
    path: str | Path, duration_s: float, num_speakers: int = 3, seed: int = 0
) -> Path:
    """Write a deterministic multi-speaker-like signal as a 16 kHz mono 16-bit WAV file.

    Turns of 0.5-4 s alternate between ``num_speakers`` "voices" (harmonic tones with their own
    fundamental frequency, amplitude-modulated at a syllable rate, with a little noise), with
    pauses, occasional overlaps of two voices and noise bursts. The file is written turn by
    turn (constant memory) to a temporary file, then renamed.

    Parameters
    ----------
    path
        Output WAV file.
    duration_s
        Length of the recording in seconds.
    num_speakers
        Number of distinct voices, 1 to 4.
    seed
        Seed of the random turn lengths, pauses and noise: the same seed gives the same file.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    if not duration_s > 0:
        raise ConfigError(f"the audio duration must be positive, got {duration_s} s")
    if not 1 <= num_speakers <= len(SYNTHETIC_F0_HZ):
        raise ConfigError(f"num_speakers must be in 1..{len(SYNTHETIC_F0_HZ)}, got {num_speakers}")
    path = Path(path)
    rng = np.random.default_rng(seed)
    total_samples = int(round(duration_s * SAMPLE_RATE))

    def voice(speaker: int, num_samples: int, start_sample: int) -> np.ndarray:
        t_s = (start_sample + np.arange(num_samples)) / SAMPLE_RATE
        f0_hz = SYNTHETIC_F0_HZ[speaker] * (1 + 0.03 * np.sin(2 * np.pi * 0.7 * t_s))
        phase = 2 * np.pi * np.cumsum(f0_hz) / SAMPLE_RATE
        tone = sum(np.sin(h * phase) / h for h in range(1, 6))
        syllables = 0.5 * (1 + np.sin(2 * np.pi * (3.0 + speaker) * t_s))
        return 0.15 * tone * syllables + 0.01 * rng.standard_normal(num_samples)

    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".wav", dir=path.parent)
    os.close(handle)
    try:
        with soundfile.SoundFile(
            tmp_name, "w", samplerate=SAMPLE_RATE, channels=1, subtype="PCM_16", format="WAV"
        ) as out:
            written = 0
            speaker = 0
            while written < total_samples:
                num_samples = min(int(rng.uniform(0.5, 4.0) * SAMPLE_RATE), total_samples - written)
                kind = rng.random()
                if kind < 0.15:  # pause
                    part = 0.002 * rng.standard_normal(num_samples)
                elif kind < 0.22:  # noise burst
                    part = 0.05 * rng.standard_normal(num_samples)
                else:
                    part = voice(speaker, num_samples, written)
                    if kind > 0.9 and num_speakers > 1:  # overlap with the next voice
                        part = part + voice((speaker + 1) % num_speakers, num_samples, written)
                    speaker = (
                        speaker + 1 + int(rng.integers(0, max(1, num_speakers - 1)))
                    ) % num_speakers
                out.write(np.clip(part, -1.0, 1.0).astype(np.float32))
                written += num_samples
        os.replace(tmp_name, path)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return path


# ---------------------------------------------------------------------- the measurement
@dataclass
class PipelineBenchResult:
    """Measurements of one pipeline run on one recording.

    Attributes
    ----------
    model, embedding
        The segmentation checkpoint and the embedding model.
    audio
        The recording (``None`` for the synthetic one, which is deleted afterwards).
    seconds
        Audio duration in seconds.
    stages
        ``{stage: {"seconds": ..., "rtf": ...}}`` from the pipeline's own timings.
    total_s, rtf
        Wall-clock seconds of the whole pipeline call, and ``total_s / seconds``.
    peak_rss_mb
        Peak resident set size of the measuring process (models and interpreter included), MiB.
    rss_before_mb
        Resident size just before the pipeline call (models loaded), MiB.
    rss_increase_mb
        ``peak_rss_mb - rss_before_mb``.
    stage_peak_rss_mb
        Peak resident size sampled during each stage (empty where ``/proc`` is missing).
    num_chunks, num_speakers
        Windows processed and speakers found.
    model_params
        Parameters of the segmentation model.
    device, threads, torch
        Where it ran, torch CPU threads, torch version.
    dtype
        Precision of both models (see :func:`slimdiar.pipeline.precision.set_pipeline_precision`).
    cpu
        On a CPU, its bfloat16 support (:func:`slimdiar.models.precision.cpu_facts`).
    batch_size
        Windows per segmentation (and embedding) batch.
    engine
        ``"torch"``, or ``"onnx"`` (the models of a ``slimdiar export`` directory in ONNX
        Runtime; a GE2E embedding stays on torch).
    """

    model: str
    embedding: str | None
    audio: str | None
    seconds: float
    stages: dict[str, dict[str, float]]
    total_s: float
    rtf: float
    peak_rss_mb: float
    rss_before_mb: float
    rss_increase_mb: float
    num_chunks: int
    num_speakers: int
    model_params: int
    device: str
    threads: int
    torch: str
    stage_peak_rss_mb: dict[str, float] = field(default_factory=dict)
    dtype: str = "float32"
    cpu: dict = field(default_factory=dict)
    batch_size: int | None = None
    engine: str = "torch"

    def to_dict(self) -> dict:
        """The documented JSON layout (``"mode": "pipeline"`` first)."""
        return {
            "mode": "pipeline",
            "model": self.model,
            "embedding": self.embedding,
            "audio": self.audio,
            "seconds": self.seconds,
            "stages": self.stages,
            "total_s": self.total_s,
            "rtf": self.rtf,
            "peak_rss_mb": self.peak_rss_mb,
            "rss_before_mb": self.rss_before_mb,
            "rss_increase_mb": self.rss_increase_mb,
            "stage_peak_rss_mb": self.stage_peak_rss_mb,
            "num_chunks": self.num_chunks,
            "num_speakers": self.num_speakers,
            "model_params": self.model_params,
            "device": self.device,
            "threads": self.threads,
            "torch": self.torch,
            "dtype": self.dtype,
            "batch_size": self.batch_size,
            "engine": self.engine,
            **self.cpu,
        }


def _measure_in_this_process(
    model: str,
    audio: str,
    embedding: str | None,
    device: str,
    threads: int | None,
    batch_size: int,
    dtype: str = "float32",
    onnx: str | None = None,
) -> dict:
    """Load the pipeline, run it once on ``audio``, return timings and memory (a plain dict)."""
    import gc

    import torch

    from slimdiar.pipeline import DiarizationPipeline

    if threads:
        torch.set_num_threads(threads)
    pipeline = DiarizationPipeline.from_pretrained(
        model,
        embedding=embedding,
        device=device,
        settings={"windows": {"batch_size": batch_size}},
    )
    # counted before an ONNX session replaces the torch model (the exported model's count)
    num_params = sum(p.numel() for p in pipeline.segmentation_model.parameters())
    if dtype != "float32":
        from slimdiar.pipeline.precision import set_pipeline_precision

        set_pipeline_precision(pipeline, dtype, device)
    if onnx is not None:
        from slimdiar.pipeline.engines import use_onnx_models

        use_onnx_models(pipeline, onnx, threads)
    gc.collect()
    rss_before = current_rss_mb()
    if rss_before is None:  # no /proc: the peak so far is the best available bound
        rss_before = peak_rss_mb()
    stage_end_times: dict[str, float] = {}

    def hook(stage, payload, completed=None, total=None):
        if payload is not None:
            stage_end_times[stage] = time.time()

    start_time = time.time()
    tic = time.perf_counter()
    result = pipeline(audio, hook=hook)
    total_s = time.perf_counter() - tic
    stage_end_times["output"] = time.time()
    return {
        "timings_s": dict(result.info["timings_s"]),
        "total_s": total_s,
        "duration_s": result.duration_s,
        "peak_rss_mb": peak_rss_mb(),
        "rss_before_mb": rss_before,
        "num_chunks": int(result.info["num_chunks"]),
        "num_speakers": len(result.speakers),
        "model_params": num_params,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "start_time": start_time,
        "stage_end_times": stage_end_times,
    }


def _child(connection, kwargs: dict) -> None:
    try:
        connection.send(("ok", _measure_in_this_process(**kwargs)))
    except SlimdiarError as error:
        connection.send(("error", type(error).__name__, str(error)))
    except Exception as error:  # reported to the parent with its type
        connection.send(("error", type(error).__name__, f"{type(error).__name__}: {error}"))
    finally:
        connection.close()


_ERRORS = {cls.__name__: cls for cls in (AudioError, CheckpointError, ConfigError)}


def _run_in_fresh_process(kwargs: dict) -> tuple[dict, list[tuple[float, float]]]:
    """Run :func:`_measure_in_this_process` in a spawned process, sampling its resident size."""
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(sender, kwargs), daemon=True)
    process.start()
    sender.close()
    samples: list[tuple[float, float]] = []
    message = None
    try:
        while message is None:
            if receiver.poll(RSS_SAMPLE_INTERVAL_S):
                message = receiver.recv()
                break
            rss = current_rss_mb(process.pid)
            if rss is not None:
                samples.append((time.time(), rss))
            if not process.is_alive() and not receiver.poll():
                raise RuntimeError(
                    f"the measuring process ended without a result (exit code {process.exitcode}"
                    "; out of memory?)"
                )
    except EOFError as error:
        raise RuntimeError(
            f"the measuring process ended without a result (exit code {process.exitcode})"
        ) from error
    finally:
        process.join(timeout=60)
        if process.is_alive():
            process.kill()
    if message[0] == "error":
        raise _ERRORS.get(message[1], RuntimeError)(message[2])
    return message[1], samples


def _stage_peaks(measured: dict, samples: list[tuple[float, float]]) -> dict[str, float]:
    """Peak sampled resident size (MiB) between the end of one stage and the end of the next."""
    peaks: dict[str, float] = {}
    begin = measured["start_time"]
    for stage in STAGE_ORDER:
        end = measured["stage_end_times"].get(stage)
        if end is None:
            continue
        inside = [rss for t, rss in samples if begin <= t <= end]
        if inside:
            peaks[stage] = round(max(inside), 1)
        begin = end
    return peaks


def validate_pipeline_bench(
    model: str | Path, seconds: float | None, audio: str | Path | None, batch_size: int | None
) -> None:
    """Check the options of :func:`benchmark_pipeline` before any work.

    Raises
    ------
    ConfigError
        For a non-positive duration or batch size, or a duration given with an audio file.
    CheckpointError
        If ``model`` is not a checkpoint directory.
    AudioError
        If ``audio`` does not exist or cannot be read.
    """
    from slimdiar.models.checkpoint import is_checkpoint_dir

    model = Path(model)
    if not model.exists():
        raise CheckpointError(
            f"{model}: no such segmentation checkpoint (give an EEND "
            "checkpoint directory written by save_pretrained or finetune)"
        )
    if not is_checkpoint_dir(model):
        raise CheckpointError(
            f"{model}: not a slimdiar checkpoint directory (weights and config JSON expected)"
        )
    if audio is not None:
        if seconds is not None:
            raise ConfigError("give either an audio file or a duration in seconds, not both")
        if not Path(audio).is_file():
            raise AudioError(f"{audio}: no such audio file")
        from slimdiar.data.audio import audio_info

        audio_info(audio)  # AudioError if unreadable, before a process is started
    elif seconds is None or not seconds > 0:
        raise ConfigError(f"the audio duration must be positive, got {seconds} s")
    if batch_size is not None and (int(batch_size) != batch_size or batch_size < 1):
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size}")


def benchmark_pipeline(
    model: str | Path,
    seconds: float | None = 600.0,
    audio: str | Path | None = None,
    embedding: str | None = "ge2e",
    device: str = "cpu",
    threads: int | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    dtype: str = "float32",
    onnx: str | Path | None = None,
) -> PipelineBenchResult:
    """Time the diarization pipeline stage by stage and measure its peak memory.

    The run happens in a freshly spawned process, so its ``ru_maxrss`` is the peak of this
    recording alone (plus the interpreter and the models).

    Parameters
    ----------
    model
        EEND checkpoint directory.
    seconds
        Length of the synthetic recording (``None`` with ``audio``).
    audio
        An audio file to diarize instead of the synthetic recording.
    embedding
        Embedding model name or checkpoint
        (see :func:`~slimdiar.models.embeddings.load_embedding_model`).
    device
        ``"cpu"`` or ``"cuda"``.
    threads
        torch CPU threads of the measuring process (``None``: torch's choice).
    batch_size
        Windows per segmentation batch (see :class:`~slimdiar.pipeline.PipelineConfig`);
        ``None``: the pipeline's default for ``device``
        (:func:`~slimdiar.pipeline.config.default_batch_size`).
    seed
        Seed of the synthetic recording.
    dtype
        Precision of both models: ``"float32"``, ``"bfloat16"`` or (GPU only) ``"float16"``.
    onnx
        A ``slimdiar export`` directory of ``model`` (and of a ResNet ``embedding``): its models
        run in ONNX Runtime (float32, CPU) instead of torch.

    Returns
    -------
    PipelineBenchResult
    """
    from slimdiar.models.precision import cpu_facts, resolve_dtype
    from slimdiar.pipeline.config import default_batch_size

    validate_pipeline_bench(model, seconds, audio, batch_size)
    if batch_size is None:
        batch_size = default_batch_size(device)

    resolve_dtype(dtype, device)  # refuse float16 on a CPU before any work
    if onnx is not None:
        from slimdiar.pipeline.engines import load_onnx_models, require_onnxruntime

        require_onnxruntime()
        if dtype != "float32" or device != "cpu":
            raise ConfigError("the ONNX engine runs in float32 on the CPU only")
        load_onnx_models(onnx)  # a missing or broken export fails here, before any work
    with tempfile.TemporaryDirectory(prefix="slimdiar-bench-") as tmp:
        if audio is None:
            path = write_synthetic_conversation(Path(tmp) / "synthetic.wav", seconds, seed=seed)
            logger.info("wrote %.0f s of synthetic audio to %s", seconds, path)
        else:
            path = Path(audio)
        kwargs = dict(
            model=str(model),
            audio=str(path),
            embedding=embedding,
            device=device,
            threads=threads,
            batch_size=batch_size,
            dtype=dtype,
            onnx=None if onnx is None else str(onnx),
        )
        measured, samples = _run_in_fresh_process(kwargs)
    duration_s = float(measured["duration_s"])
    stages = {
        name: {"seconds": float(value), "rtf": float(value) / duration_s}
        for name, value in measured["timings_s"].items()
    }
    return PipelineBenchResult(
        model=str(model),
        embedding=embedding,
        audio=None if audio is None else str(audio),
        seconds=duration_s,
        stages=stages,
        total_s=measured["total_s"],
        rtf=measured["total_s"] / duration_s,
        peak_rss_mb=round(measured["peak_rss_mb"], 1),
        rss_before_mb=round(measured["rss_before_mb"], 1),
        rss_increase_mb=round(measured["peak_rss_mb"] - measured["rss_before_mb"], 1),
        num_chunks=measured["num_chunks"],
        num_speakers=measured["num_speakers"],
        model_params=measured["model_params"],
        device=device,
        threads=measured["threads"],
        torch=measured["torch"],
        stage_peak_rss_mb=_stage_peaks(measured, samples),
        dtype=dtype,
        cpu={} if device.startswith("cuda") else cpu_facts(),
        batch_size=batch_size,
        engine="torch" if onnx is None else "onnx",
    )
