"""Training chunks: fixed-length windows inside UEM regions, labelled on the model's frame grid.

A chunk is ``chunk_duration_s`` of audio that starts inside a UEM region. Consecutive chunks of a
region start ``shift_s`` apart and the last one reaches the end of the region; the part of a chunk
past the end of its region (or a whole region shorter than a chunk) is zero-padded and masked out.
Frames, their counts and their times come from :class:`~slimdiar.frames.FrameGrid`, the grid the
pipeline reads its output turns from: frame ``i`` of a chunk is at the middle of the samples it
sees, and a turn labels the frames from the one nearest to its onset to the one nearest to its
offset, both included.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from slimdiar.data.audio import read_audio
from slimdiar.data.datadir import DataDir, intersect_intervals, merge_intervals
from slimdiar.data.records import Turn, UEMRegion
from slimdiar.errors import ConfigError
from slimdiar.frames import SAMPLE_RATE, FrameGrid

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Chunk:
    """A window of a recording.

    Parameters
    ----------
    uri
        Recording id.
    start_s
        Start of the window in seconds.
    duration_s
        Length of the window in seconds (the chunk length).
    valid_duration_s
        Length of the part of the window that lies inside its UEM region (the rest is padding).
    """

    uri: str
    start_s: float
    duration_s: float
    valid_duration_s: float


def chunk_regions(
    regions: Iterable[UEMRegion],
    chunk_duration_s: float = 8.0,
    shift_s: float = 6.0,
    min_duration_s: float = 0.1,
) -> list[Chunk]:
    """Cut UEM regions into chunks.

    A region of length ``L`` gives ``1 + ceil(max(0, L - chunk_duration_s) / shift_s)`` chunks
    starting at ``start_s + k * shift_s``; the last one reaches the end of the region and may be
    partly padding. A region shorter than a chunk gives one padded chunk.

    Parameters
    ----------
    regions
        Regions to cut (of any recordings).
    chunk_duration_s
        Window length in seconds (8 s for training and validation).
    shift_s
        Distance between window starts in seconds (6 s for training, 8 s for validation).
    min_duration_s
        Chunks whose valid part is shorter than this are skipped (a region this short has too
        few frames to learn from).

    Returns
    -------
    list of Chunk
        In region order, then time order.
    """
    if not chunk_duration_s > 0 or not shift_s > 0:
        raise ConfigError(
            f"chunk_duration_s ({chunk_duration_s}) and shift_s ({shift_s}) must be positive"
        )
    if shift_s > chunk_duration_s:
        raise ConfigError(
            f"shift_s ({shift_s}) larger than chunk_duration_s ({chunk_duration_s}) would skip "
            "audio between chunks"
        )
    chunks = []
    for region in regions:
        length_s = region.end_s - region.start_s
        # A tiny epsilon keeps 20.0 - 8.0 = 12.000000001 from adding a chunk.
        extra = max(0.0, length_s - chunk_duration_s)
        count = 1 + math.ceil(extra / shift_s - 1e-9)
        for k in range(count):
            start_s = region.start_s + k * shift_s
            valid_s = min(chunk_duration_s, region.end_s - start_s)
            if valid_s < min_duration_s:
                logger.debug("skipping %.3f s chunk of %s at %.3f s", valid_s, region.uri, start_s)
                continue
            chunks.append(Chunk(region.uri, start_s, chunk_duration_s, valid_s))
    return chunks


def frame_labels(
    turns: list[Turn],
    start_s: float,
    valid_duration_s: float,
    centers_s: np.ndarray,
    max_speakers: int = 4,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Speaker activity of a chunk on a frame grid.

    A turn (clipped to the valid part of the chunk) makes active the frames from the one whose
    middle is nearest to its onset to the one whose middle is nearest to its offset, both
    included (ties to even, as ``numpy.round``).

    Parameters
    ----------
    turns
        Turns of the chunk's recording (any order; others are ignored by time).
    start_s
        Start of the chunk in seconds.
    valid_duration_s
        Length of the valid (non-padded) part of the chunk in seconds.
    centers_s
        ``(num_frames,)`` frame centres (middles) in seconds from the chunk start, evenly spaced.
    max_speakers
        Columns of the label matrix. When more speakers talk in the valid part, the
        ``max_speakers`` who talk most are kept; fewer are zero-padded.

    Returns
    -------
    labels
        ``(num_frames, max_speakers)`` float32 0/1, columns by decreasing talk time.
    mask
        ``(num_frames,)`` bool, true for frames whose centre lies in the valid part.
    speakers
        Labels of the kept speakers, in column order.
    """
    end_s = start_s + valid_duration_s
    window = np.asarray([[start_s, end_s]])
    by_speaker: dict[str, list[tuple[float, float]]] = {}
    for turn in turns:
        if turn.onset_s < end_s and turn.offset_s > start_s:
            by_speaker.setdefault(turn.speaker, []).append((turn.onset_s, turn.offset_s))
    talk_s = {}
    for speaker, spans in by_speaker.items():
        inside = intersect_intervals(merge_intervals(np.asarray(spans)), window)
        talk_s[speaker] = float((inside[:, 1] - inside[:, 0]).sum())
    ranked = sorted((s for s in talk_s if talk_s[s] > 0), key=lambda s: (-talk_s[s], s))
    kept = ranked[:max_speakers]
    if len(ranked) > max_speakers:
        logger.debug(
            "chunk at %.3f s has %d speakers, keeping the %d who talk most",
            start_s,
            len(ranked),
            max_speakers,
        )
    centers_s = np.asarray(centers_s, dtype=np.float64)
    mask = centers_s < valid_duration_s
    labels = np.zeros((len(centers_s), max_speakers), dtype=np.float32)
    first_s = centers_s[0] if len(centers_s) else 0.0
    step_s = centers_s[1] - centers_s[0] if len(centers_s) > 1 else 1.0
    for column, speaker in enumerate(kept):
        spans = np.clip(np.asarray(by_speaker[speaker]), start_s, end_s) - start_s
        # the frames whose middles are nearest to the onset and to the offset, both included
        first = np.maximum(0, np.round((spans[:, 0] - first_s) / step_s)).astype(int)
        last = np.round((spans[:, 1] - first_s) / step_s).astype(int)
        for a, b in zip(first, last):
            labels[a : b + 1, column] = 1.0
    labels[~mask] = 0.0
    return labels, mask, kept


class ChunkDataset(Dataset):
    """Labelled chunks of a data directory, read lazily by offset.

    Parameters
    ----------
    datadir
        A loaded :class:`DataDir`.
    frame_grid
        The model's :class:`~slimdiar.frames.FrameGrid`, or anything it is built from
        (``FrameGrid.from_config``: a WavLM config, a diarization model).
    chunk_duration_s
        Chunk length in seconds.
    shift_s
        Distance between chunk starts in seconds (use ``chunk_duration_s`` for validation).
    max_speakers
        Speakers per chunk (label columns).
    channel
        Channel to read (0-based), or ``None`` to downmix to mono.

    Notes
    -----
    Each item is a dict with ``"waveform"`` ``(num_samples,)`` float32, ``"labels"``
    ``(num_frames, max_speakers)`` float32 0/1, ``"mask"`` ``(num_frames,)`` bool, ``"uri"`` and
    ``"start_s"``, where ``num_samples = round(chunk_duration_s * SAMPLE_RATE)`` and
    ``num_frames = frame_grid.num_frames(num_samples)``.
    """

    def __init__(
        self,
        datadir: DataDir,
        frame_grid: FrameGrid | object,
        chunk_duration_s: float = 8.0,
        shift_s: float = 6.0,
        max_speakers: int = 4,
        channel: int | None = None,
    ):
        if max_speakers < 1:
            raise ConfigError(f"max_speakers must be >= 1, got {max_speakers}")
        if channel is not None:
            lacking = [
                uri
                for uri, rec in datadir.recordings.items()
                if rec.num_channels is not None and not 0 <= channel < rec.num_channels
            ]
            if lacking:
                raise ConfigError(
                    f"channel {channel} requested but {len(lacking)} recording(s) lack it "
                    f"(e.g. {lacking[0]!r}); run 'slimdiar data check {datadir.path} "
                    f"--channel {channel}'"
                )
        self.datadir = datadir
        self.max_speakers = int(max_speakers)
        self.channel = channel
        self.grid = FrameGrid.from_config(frame_grid)
        if self.grid.sample_rate != SAMPLE_RATE:
            raise ConfigError(
                f"the frame grid is at {self.grid.sample_rate} Hz but audio is read at "
                f"{SAMPLE_RATE} Hz"
            )
        self.num_samples = int(round(chunk_duration_s * SAMPLE_RATE))
        self.num_frames = self.grid.num_frames(self.num_samples)
        if self.num_frames < 1:
            raise ConfigError(
                f"a {chunk_duration_s} s chunk is shorter than one frame of the model"
            )
        self.centers_s = self.grid.frame_centers_s(self.num_frames)
        self.chunks = chunk_regions(
            datadir.all_regions(),
            chunk_duration_s=chunk_duration_s,
            shift_s=shift_s,
        )
        logger.info(
            "%s: %d chunks of %.1f s (shift %.1f s), %d frames each",
            datadir.path,
            len(self.chunks),
            chunk_duration_s,
            shift_s,
            self.num_frames,
        )

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, index: int) -> dict:
        chunk = self.chunks[index]
        recording = self.datadir.recordings[chunk.uri]
        audio = read_audio(
            recording.path, chunk.start_s, chunk.valid_duration_s, channel=self.channel
        )
        waveform = np.zeros(self.num_samples, dtype=np.float32)
        valid = min(len(audio), self.num_samples)
        waveform[:valid] = audio[:valid]
        labels, mask, _ = frame_labels(
            self.datadir.turns[chunk.uri],
            chunk.start_s,
            chunk.valid_duration_s,
            self.centers_s,
            self.max_speakers,
        )
        return {
            "waveform": torch.from_numpy(waveform),
            "labels": torch.from_numpy(labels),
            "mask": torch.from_numpy(mask),
            "uri": chunk.uri,
            "start_s": chunk.start_s,
        }
