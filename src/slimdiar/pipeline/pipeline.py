"""The diarization pipeline: audio in, speaker turns out.

::

    audio (num_samples,) at 16 kHz
      └─ 1. sliding windows of 8 s every 0.8 s, read by offset, in batches
      └─ 2. segmentation model → powerset → local speaker activities → median filter
                                              (num_chunks, num_frames, num_local_speakers)
      └─ 3. speaker count per global frame    (num_global_frames,)
      └─ 4. one embedding per (chunk, local speaker)
                                              (num_chunks, num_local_speakers, dimension)
      └─ 5. clustering into global speakers   (num_chunks, num_local_speakers)
      └─ 6. reconstruction                    (num_global_frames, num_speakers) → turns

Each stage is a function of :mod:`slimdiar.pipeline` on numpy arrays; this module only reads the
audio, runs the models and chains the stages. Oracle variants replace stages 1-3 (reference
segmentation) or stage 5 (reference clustering) with the reference turns.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from slimdiar.data.audio import audio_info, load_audio, read_audio
from slimdiar.data.records import Turn
from slimdiar.errors import ConfigError
from slimdiar.frames import SAMPLE_RATE, FrameGrid
from slimdiar.models.checkpoint import read_metadata
from slimdiar.models.diarizen import is_diarizen_dir, load_diarizen_dir
from slimdiar.models.eend import EEND
from slimdiar.models.embeddings import load_embedding_model
from slimdiar.models.wavlm.config import wavlm_base_plus
from slimdiar.pipeline.clustering import SpeakerBounds
from slimdiar.pipeline.config import (
    PipelineConfig,
    default_batch_size,
    merge_settings,
    resolve_settings,
)
from slimdiar.pipeline.embeddings import embed_speakers, embedding_masks
from slimdiar.pipeline.engines import SegmentationModel, as_segmentation_model
from slimdiar.pipeline.reconstruction import (
    activity_to_segments,
    aggregate_clusters,
    exclusive_activity,
    select_speakers,
)
from slimdiar.pipeline.result import DiarizationResult
from slimdiar.pipeline.segmentation import (
    as_turn_triples,
    binarize_powerset,
    chunk_reference,
    oracle_chunk_activities,
    recording_num_frames,
    reference_frame_activity,
    speaker_count,
)
from slimdiar.pipeline.windows import Windows, batches, sliding_windows

logger = logging.getLogger(__name__)

#: ``hook(stage_name, payload, completed=..., total=...)``: called while a stage runs (payload
#: ``None``) and once when it ends (payload: the stage's output).
Hook = Callable[..., Any]
STAGES = ("segmentation", "speaker_counting", "embeddings", "clustering", "reconstruction")


class _AudioReader:
    """Windows of a recording at 16 kHz mono, read by offset from a file when possible."""

    def __init__(self, audio, channel: int | None):
        self.channel = channel
        self.path: Path | None = None
        self.waveform: np.ndarray | None = None
        if isinstance(audio, str | Path):
            self.path = Path(audio)
            info = audio_info(self.path)
            self.num_samples = int(round(info.num_frames * SAMPLE_RATE / info.sample_rate))
            self.name = str(self.path)
        else:
            self.waveform = load_audio(audio, channel=channel)
            self.num_samples = len(self.waveform)
            self.name = getattr(audio, "name", None) or "<waveform>"

    @property
    def duration_s(self) -> float:
        return self.num_samples / SAMPLE_RATE

    def read(self, start_sample: int, num_samples: int) -> np.ndarray:
        """``(num_samples,)`` float32 from ``start_sample``, zero-padded past the end."""
        stop = min(start_sample + num_samples, self.num_samples)
        if self.waveform is not None:
            part = self.waveform[start_sample:stop]
        elif self.path is not None and stop > start_sample:
            part = read_audio(
                self.path,
                start_s=start_sample / SAMPLE_RATE,
                duration_s=(stop - start_sample) / SAMPLE_RATE,
                channel=self.channel,
            )
        else:
            part = np.zeros(0, dtype=np.float32)
        part = part[:num_samples]
        if len(part) < num_samples:
            part = np.pad(part, (0, num_samples - len(part)))
        return np.asarray(part, dtype=np.float32)

    def read_windows(self, start_samples: np.ndarray, window_samples: int) -> np.ndarray:
        """``(len(start_samples), window_samples)`` float32 window waveforms."""
        return np.stack([self.read(int(s), window_samples) for s in start_samples])


def _notify(hook: Hook | None, stage: str, payload, completed: int, total: int) -> None:
    if hook is not None:
        hook(stage, payload, completed=completed, total=total)


def check_device(device: str) -> None:
    """Raise :class:`ConfigError` unless ``device`` names a torch device that is available here."""
    import torch

    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError):
        raise ConfigError(f"unknown device {device!r} (use 'cpu' or 'cuda')") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available here")


def default_frame_grid() -> FrameGrid:
    """The WavLM frame grid (20 ms step, 25 ms receptive field), from the Base+ preset."""
    return FrameGrid.from_config(wavlm_base_plus(), SAMPLE_RATE)


class DiarizationPipeline:
    """Speaker diarization with a powerset segmentation model and speaker embeddings.

    Parameters
    ----------
    segmentation_model
        An :class:`~slimdiar.models.eend.EEND` (anything with ``powerset.mapping``,
        ``frame_step_samples``, ``receptive_field_samples``, ``num_frames`` and a
        ``(batch, num_samples) -> (batch, num_frames, num_classes)`` forward), run by torch; or
        a :class:`~slimdiar.pipeline.engines.SegmentationModel` (e.g. an ONNX Runtime session,
        :class:`~slimdiar.pipeline.engines.OnnxSegmentation`); ``None`` only with oracle
        segmentation.
    embedding_model
        A speaker embedding model (a :class:`~slimdiar.pipeline.engines.EmbeddingModel`:
        ``dimension``, ``min_num_samples`` and
        ``__call__(waveforms (batch, num_samples), weights (batch, num_frames)) -> (batch,
        dimension)``); ``None`` only with a clustering method that needs no embeddings.
    config
        Pipeline options; an unset ``windows.batch_size`` becomes the default for ``device``
        (:meth:`~slimdiar.pipeline.config.PipelineConfig.for_device`), and ``self.config``
        and every result's ``config`` hold the resolved value.
    device
        Where the segmentation model runs.
    segmentation_name, embedding_name
        What the models were loaded from, recorded in every result.
    """

    def __init__(
        self,
        segmentation_model=None,
        embedding_model=None,
        config: PipelineConfig | None = None,
        device: str = "cpu",
        segmentation_name: str | None = None,
        embedding_name: str | None = None,
    ):
        check_device(device)
        self.config = (config or PipelineConfig()).for_device(device)
        self.clustering = self.config.make_clustering()
        prepare = getattr(self.clustering, "prepare", None)
        if prepare is not None:
            prepare()  # read what the method needs (VBx: its PLDA) before any audio
        if self.config.segmentation.source == "model" and segmentation_model is None:
            raise ConfigError("model segmentation needs a segmentation model (or use 'oracle')")
        if self.clustering.needs_embeddings and embedding_model is None:
            raise ConfigError(
                f"{self.config.clustering.method} clustering needs a speaker embedding model"
            )
        self.device = device
        self.segmentation_model = segmentation_model
        self.embedding_model = embedding_model
        self.segmentation_name = segmentation_name
        self.embedding_name = embedding_name or (
            getattr(embedding_model, "name", None) if embedding_model is not None else None
        )
        self.mapping: np.ndarray | None
        if segmentation_model is not None:
            self.grid = FrameGrid.from_config(segmentation_model)
            if isinstance(segmentation_model, SegmentationModel):
                self.mapping = np.asarray(segmentation_model.mapping)
            else:
                self.mapping = segmentation_model.powerset.mapping.detach().cpu().numpy()
                segmentation_model.eval().to(device)
            self.num_local_speakers = int(self.mapping.shape[1])
        else:
            self.grid = default_frame_grid()
            self.mapping = None
            self.num_local_speakers = self.config.segmentation.num_local_speakers
        self.chunk_num_frames = self.grid.num_frames(self.config.window_samples)
        if self.chunk_num_frames < 1:
            raise ConfigError(
                f"windows of {self.config.windows.duration_s} s are shorter than one frame"
            )

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path | None,
        embedding: str | Path | None = "ge2e",
        device: str = "cpu",
        settings: dict | Sequence[dict] | None = None,
    ) -> DiarizationPipeline:
        """Load the segmentation model from a checkpoint directory and an embedding model.

        The pipeline settings are, from lowest to highest precedence: the defaults of
        :class:`PipelineConfig`, the embedding model's default agglomerative clustering
        threshold (``SpeakerEmbedding.default_threshold``: measured for GE2E, the reference
        recipe's 0.70 for the ResNet), the checkpoint's ``metadata["pipeline"]`` (the settings
        the model was tuned with) and ``settings``.

        Parameters
        ----------
        path
            EEND checkpoint directory or DiariZen model directory (``config.toml`` +
            ``pytorch_model.bin``; ``None`` only with ``segmentation="oracle"``).
        embedding
            Embedding model name or checkpoint path (see
            :func:`~slimdiar.models.embeddings.load_embedding_model`); ``None`` only with a
            clustering method that needs no embeddings.
        device
            ``"cpu"`` or ``"cuda"`` (or any torch device string).
        settings
            A nested settings mapping, or a sequence of them in increasing precedence (see
            :mod:`slimdiar.pipeline.config`), e.g. ``{"windows": {"step_s": 1.6},
            "clustering": {"method": "agglomerative", "threshold": 0.5}}``.
        """
        layers = [settings] if isinstance(settings, dict) or settings is None else list(settings)
        check_device(device)
        source = merge_settings(*layers).get("segmentation", {}).get("source", "model")
        segmentation_model = None
        model_settings: dict = {}
        if path is not None and source == "model":
            if is_diarizen_dir(path):
                segmentation_model, metadata = load_diarizen_dir(path)
            else:
                segmentation_model = EEND.from_pretrained(path)
                metadata = read_metadata(path)
            model_settings = metadata.get("pipeline") or {}
        config = resolve_settings(
            [model_settings, *layers], model_dir=path if segmentation_model is not None else None
        )
        embedding_model = None
        if embedding is not None and config.make_clustering().needs_embeddings:
            embedding_model = load_embedding_model(embedding, device=device)
            given = merge_settings(model_settings, *layers).get("clustering", {})
            if config.clustering.method == "agglomerative" and "threshold" not in given:
                config.clustering.options["threshold"] = float(embedding_model.default_threshold)
        return cls(
            segmentation_model,
            embedding_model,
            config,
            device=device,
            segmentation_name=None if path is None else str(path),
            embedding_name=None if embedding is None else str(embedding),
        )

    @property
    def batch_size(self) -> int:
        """Windows per segmentation batch: ``windows.batch_size``, or the device's default."""
        size = self.config.windows.batch_size
        return default_batch_size(self.device) if size is None else int(size)

    # ------------------------------------------------------------------ the algorithm
    def __call__(
        self,
        audio,
        *,
        num_speakers: int | None = None,
        min_speakers: int | None = None,
        max_speakers: int | None = None,
        hook: Hook | None = None,
        reference: Sequence | None = None,
        uri: str | None = None,
    ) -> DiarizationResult:
        """Diarize one recording.

        Parameters
        ----------
        audio
            Audio file path (read window by window), binary file-like object, or
            ``(waveform, sample_rate)`` tuple (see :func:`slimdiar.data.load_audio`).
        num_speakers
            Exact number of speakers, if known.
        min_speakers, max_speakers
            Bounds on the number of speakers, if known.
        hook
            ``hook(stage_name, payload, completed=..., total=...)``, called with ``payload=None``
            as a stage progresses and with the stage's output when it ends.
        reference
            Reference turns of this recording (:class:`~slimdiar.data.Turn` records or
            ``(onset_s, offset_s, speaker)`` triples); needed by oracle segmentation/clustering.
        uri
            Recording id of the result (default: the file name without extension, or
            ``"audio"``).

        Returns
        -------
        DiarizationResult

        Raises
        ------
        ConfigError
            Before any work, for impossible speaker counts or a missing reference.
        AudioError
            If the audio cannot be read.
        """
        bounds = SpeakerBounds(num_speakers, min_speakers, max_speakers)
        if (num_speakers, min_speakers, max_speakers) == (None, None, None):
            bounds = self.config.speakers.bounds()
        needs_reference = (
            self.config.segmentation.source == "oracle" or self.clustering.needs_reference
        )
        if needs_reference and reference is None:
            raise ConfigError(
                "oracle segmentation/clustering needs the reference turns of the recording"
            )
        if uri is None:
            uri = Path(audio).stem if isinstance(audio, str | Path) else "audio"
        timings_s: dict[str, float] = {}
        warnings: list[str] = []
        reader = _AudioReader(audio, self.config.channel)

        windows = sliding_windows(
            reader.num_samples, self.config.window_samples, self.config.step_samples
        )
        start_frames = windows.start_frames(self.grid)
        num_frames = min(
            recording_num_frames(self.grid, reader.num_samples),
            int(start_frames[-1]) + self.chunk_num_frames,
        )
        reference_chunks = None
        if needs_reference and reference is not None:  # checked above: both or neither
            ref_activity, ref_labels = reference_frame_activity(
                as_turn_triples(reference), num_frames, self.grid
            )
            reference_chunks = chunk_reference(ref_activity, start_frames, self.chunk_num_frames)
            # (num_chunks, chunk_num_frames, num_reference_speakers)

        # 1-2. segmentation
        tic = time.perf_counter()
        activities = self.segment(reader, windows, reference_chunks, hook)
        # (num_chunks, chunk_num_frames, num_local_speakers) uint8
        timings_s["segmentation"] = time.perf_counter() - tic

        # 3. speaker count
        count = speaker_count(activities, start_frames, num_frames, bounds.max_clusters)
        # (num_frames,) uint8
        _notify(hook, "speaker_counting", count, 1, 1)

        if not count.any():
            message = f"{reader.name}: no speech found; the result is empty"
            logger.warning(message)
            warnings.append(message)
            return self._result(
                uri,
                reader,
                np.zeros((num_frames, 0)),
                np.zeros((num_frames, 0)),
                [],
                bounds,
                timings_s,
                warnings,
                windows,
            )

        # 4. embeddings
        tic = time.perf_counter()
        embeddings = None
        if self.clustering.needs_embeddings:
            embeddings = self.embed(reader, windows, activities, hook)
            # (num_chunks, num_local_speakers, dimension) float32, NaN for silent speakers
        timings_s["embeddings"] = time.perf_counter() - tic

        # 5. clustering
        tic = time.perf_counter()
        hard_clusters = self.clustering(activities, embeddings, reference_chunks, bounds)
        # (num_chunks, num_local_speakers) int64, -1 for silent/unassigned local speakers
        timings_s["clustering"] = time.perf_counter() - tic
        _notify(hook, "clustering", hard_clusters, 1, 1)
        num_clusters = int(hard_clusters.max()) + 1 if hard_clusters.size else 0
        self._check_bounds(num_clusters, bounds, warnings)

        # 6. reconstruction
        tic = time.perf_counter()
        scores = aggregate_clusters(
            activities, hard_clusters, start_frames, num_frames, num_clusters
        )
        # (num_frames, num_clusters) float64
        binary = select_speakers(scores, count)
        # (num_frames, num_clusters) uint8
        timings_s["reconstruction"] = time.perf_counter() - tic
        _notify(hook, "reconstruction", binary, 1, 1)
        labels = ref_labels if self.clustering.needs_reference else None
        return self._result(
            uri, reader, binary, scores, labels, bounds, timings_s, warnings, windows
        )

    # ------------------------------------------------------------------ stages with models
    def segment(
        self,
        reader: _AudioReader,
        windows: Windows,
        reference_chunks: np.ndarray | None,
        hook: Hook | None = None,
    ) -> np.ndarray:
        """Stages 1-2: local speaker activities of every window.

        Returns
        -------
        numpy.ndarray
            ``(num_chunks, chunk_num_frames, num_local_speakers)`` uint8.
        """
        if self.config.segmentation.source == "oracle":
            if reference_chunks is None:
                raise ConfigError("oracle segmentation needs the reference turns of the recording")
            activities, _ = oracle_chunk_activities(reference_chunks, self.num_local_speakers)
            _notify(hook, "segmentation", activities, windows.num_chunks, windows.num_chunks)
            return activities
        if self.segmentation_model is None or self.mapping is None:
            raise ConfigError("model segmentation needs a segmentation model")
        mapping = self.mapping
        model = as_segmentation_model(self.segmentation_model, self.device)
        shape = (windows.num_chunks, self.chunk_num_frames, self.num_local_speakers)
        activities = np.zeros(shape, dtype=np.uint8)
        for part in batches(windows.num_chunks, self.batch_size):
            waveforms = reader.read_windows(windows.start_samples[part], windows.window_samples)
            # (batch, window_samples)
            log_probs = model(waveforms)
            # (batch, chunk_num_frames, num_classes) float32
            if log_probs.shape[1] != self.chunk_num_frames:
                raise RuntimeError(
                    f"the segmentation model gave {log_probs.shape[1]} frames per window, "
                    f"its frame grid says {self.chunk_num_frames}"
                )
            activities[part] = binarize_powerset(
                log_probs, mapping, self.config.segmentation.median_filter_frames
            )
            _notify(hook, "segmentation", None, part.stop, windows.num_chunks)
        _notify(hook, "segmentation", activities, windows.num_chunks, windows.num_chunks)
        return activities

    def embed(
        self,
        reader: _AudioReader,
        windows: Windows,
        activities: np.ndarray,
        hook: Hook | None = None,
    ) -> np.ndarray:
        """Stage 4: an embedding per active (window, local speaker).

        Windows without any active speaker are not read.

        Returns
        -------
        numpy.ndarray
            ``(num_chunks, num_local_speakers, dimension)`` float32, NaN for silent speakers.
        """
        model = self.embedding_model
        min_clean_frames = math.ceil(
            self.chunk_num_frames * getattr(model, "min_num_samples", 0) / windows.window_samples
        )
        shape = (windows.num_chunks, self.num_local_speakers, int(model.dimension))
        embeddings = np.full(shape, np.nan, dtype=np.float32)
        speaking = np.flatnonzero(activities.any(axis=(1, 2)))
        for part in batches(len(speaking), self.batch_size):
            chunks = speaking[part]
            waveforms = reader.read_windows(windows.start_samples[chunks], windows.window_samples)
            # (batch, window_samples)
            masks = embedding_masks(activities[chunks], min_clean_frames)
            # (batch, num_local_speakers, chunk_num_frames)
            embeddings[chunks] = embed_speakers(
                waveforms, masks, model, self.batch_size, int(model.dimension)
            )
            _notify(hook, "embeddings", None, part.stop, len(speaking))
        _notify(hook, "embeddings", embeddings, len(speaking), len(speaking))
        return embeddings

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _check_bounds(num_clusters: int, bounds: SpeakerBounds, warnings: list[str]) -> None:
        low, high = bounds.min_clusters, bounds.max_clusters
        if num_clusters < low or (high is not None and num_clusters > high):
            message = (
                f"found {num_clusters} speakers, outside the requested range "
                f"[{low}, {high if high is not None else 'any'}]"
            )
            logger.warning(message)
            warnings.append(message)

    def _result(
        self,
        uri: str,
        reader: _AudioReader,
        binary: np.ndarray,
        scores: np.ndarray,
        labels: list[str] | None,
        bounds: SpeakerBounds,
        timings_s: dict[str, float],
        warnings: list[str],
        windows: Windows,
    ) -> DiarizationResult:
        duration_s = reader.duration_s
        segments = activity_to_segments(binary, self.grid, duration_s)
        exclusive = activity_to_segments(exclusive_activity(binary, scores), self.grid, duration_s)
        # name the speakers with speech in order of first appearance
        order: list[int] = []
        for _, _, speaker in segments:
            if speaker not in order:
                order.append(speaker)
        names = {
            k: (labels[k] if labels is not None else f"SPEAKER_{i:02d}")
            for i, k in enumerate(order)
        }

        def turns(items) -> list[Turn]:
            return [Turn(uri, on, off - on, names[k]) for on, off, k in items if k in names]

        info = {
            "segmentation_model": self.segmentation_name,
            "embedding_model": self.embedding_name if self.clustering.needs_embeddings else None,
            "config": self.config.to_dict(),
            "speaker_bounds": bounds.to_dict(),
            "num_chunks": windows.num_chunks,
            "frame_step_s": self.grid.frame_step_s,
            "timings_s": {k: round(v, 4) for k, v in timings_s.items()},
            "warnings": warnings,
        }
        return DiarizationResult(
            uri, duration_s, turns(segments), turns(exclusive), [names[k] for k in order], info
        )
