"""Stages 2 and 3 of the pipeline: per-chunk speaker activities and the frame-level speaker count.

Everything here works on numpy arrays. The per-chunk activities of a recording are a
``(num_chunks, num_frames, num_local_speakers)`` array of 0/1 values (uint8): either decoded from
the segmentation model's powerset scores (:func:`binarize_powerset`) or taken from a reference
(:func:`oracle_chunk_activities`). Chunks are placed on the global frame grid by the index of
their first frame (``start_frames``), and values of overlapping chunks are combined by
:func:`overlap_add`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from scipy.ndimage import median_filter

from slimdiar.errors import ConfigError
from slimdiar.frames import FrameGrid


def binarize_powerset(
    log_probs: np.ndarray, mapping: np.ndarray, median_filter_frames: int = 11
) -> np.ndarray:
    """Hard powerset decisions turned into per-speaker activities, then median-filtered.

    Each frame takes its most likely powerset class; the class's speakers are active. Each local
    speaker's 0/1 activity is then smoothed by a median filter of ``median_filter_frames`` frames
    along time (borders reflected), which removes islands and gaps shorter than half the filter.

    Parameters
    ----------
    log_probs
        ``(num_chunks, num_frames, num_classes)`` powerset scores (log-probabilities, or anything
        whose argmax is the decision).
    mapping
        ``(num_classes, num_local_speakers)`` 0/1 matrix: row ``c`` marks the speakers of class
        ``c`` (``Powerset.mapping``).
    median_filter_frames
        Median filter length in frames; 1 disables the filter.

    Returns
    -------
    numpy.ndarray
        ``(num_chunks, num_frames, num_local_speakers)`` uint8 activities.
    """
    log_probs = np.asarray(log_probs)
    mapping = np.asarray(mapping)
    if log_probs.ndim != 3 or mapping.ndim != 2 or log_probs.shape[-1] != mapping.shape[0]:
        raise ValueError(
            f"log_probs (num_chunks, num_frames, num_classes) {log_probs.shape} does not match "
            f"mapping (num_classes, num_speakers) {mapping.shape}"
        )
    if median_filter_frames < 1:
        raise ConfigError(f"median_filter_frames must be >= 1, got {median_filter_frames}")
    activities = (mapping[np.argmax(log_probs, axis=-1)] > 0.5).astype(np.uint8)
    if median_filter_frames > 1:
        activities = median_filter(activities, size=(1, median_filter_frames, 1), mode="reflect")
    return activities


def overlap_add(
    chunk_values: np.ndarray, start_frames: np.ndarray, num_frames: int
) -> tuple[np.ndarray, np.ndarray]:
    """Sum per-chunk values on the global frame grid.

    Parameters
    ----------
    chunk_values
        ``(num_chunks, chunk_num_frames, dim)`` values; frame ``f`` of chunk ``c`` lands on global
        frame ``start_frames[c] + f``. Frames past ``num_frames`` are dropped.
    start_frames
        ``(num_chunks,)`` global index of each chunk's first frame (>= 0).
    num_frames
        Number of global frames.

    Returns
    -------
    total
        ``(num_frames, dim)`` float64 sum over the chunks that cover each frame.
    coverage
        ``(num_frames,)`` int64 number of chunks that cover each frame.
    """
    chunk_values = np.asarray(chunk_values)
    if chunk_values.ndim != 3 or len(chunk_values) != len(start_frames):
        raise ValueError(
            f"chunk_values must be (num_chunks, num_frames, dim) with one row per start frame; "
            f"got {chunk_values.shape} and {len(start_frames)} start frames"
        )
    chunk_num_frames, dim = chunk_values.shape[1:]
    total = np.zeros((num_frames, dim), dtype=np.float64)
    coverage = np.zeros(num_frames, dtype=np.int64)
    for values, start in zip(chunk_values, np.asarray(start_frames, dtype=np.int64)):
        stop = min(int(start) + chunk_num_frames, num_frames)
        if stop <= start:
            continue
        total[start:stop] += values[: stop - start]
        coverage[start:stop] += 1
    return total, coverage


def speaker_count(
    activities: np.ndarray,
    start_frames: np.ndarray,
    num_frames: int,
    max_speakers: int | None = None,
) -> np.ndarray:
    """Number of simultaneous speakers in every global frame.

    Each chunk says how many of its local speakers are active in each of its frames; the counts
    of the chunks that cover a global frame are averaged and rounded to the nearest integer
    (halves to even, as :func:`numpy.rint`), then clipped to ``max_speakers``. Frames no chunk
    covers count 0.

    Parameters
    ----------
    activities
        ``(num_chunks, chunk_num_frames, num_local_speakers)`` 0/1 activities.
    start_frames
        ``(num_chunks,)`` global index of each chunk's first frame.
    num_frames
        Number of global frames.
    max_speakers
        Upper bound of the count (``None``: no bound).

    Returns
    -------
    numpy.ndarray
        ``(num_frames,)`` uint8 speaker count.
    """
    activities = np.asarray(activities)
    if activities.ndim != 3:
        raise ValueError(
            f"activities must be (num_chunks, num_frames, num_speakers), got {activities.shape}"
        )
    per_chunk = activities.sum(axis=-1, dtype=np.float64)[..., None]  # (chunks, frames, 1)
    total, coverage = overlap_add(per_chunk, start_frames, num_frames)
    average = total[:, 0] / np.maximum(coverage, 1)
    count = np.rint(average)
    if max_speakers is not None:
        count = np.minimum(count, max_speakers)
    return count.astype(np.uint8)


def recording_num_frames(grid: FrameGrid, num_samples: int) -> int:
    """Number of global frames whose interval starts inside a recording of ``num_samples``."""
    offset = (grid.receptive_field_samples - grid.frame_step_samples) / 2
    return max(0, int(np.ceil((num_samples - offset) / grid.frame_step_samples)))


def reference_frame_activity(
    turns: Iterable[tuple[float, float, str]], num_frames: int, grid: FrameGrid
) -> tuple[np.ndarray, list[str]]:
    """Reference turns as 0/1 activities on the global frame grid.

    A frame is active for a speaker when the middle of the frame lies in one of the speaker's
    turns (``onset_s <= middle < offset_s``).

    Parameters
    ----------
    turns
        ``(onset_s, offset_s, speaker)`` triples.
    num_frames
        Number of global frames.
    grid
        The frame grid.

    Returns
    -------
    activity
        ``(num_frames, num_reference_speakers)`` uint8, speakers in order of first onset.
    labels
        The reference speaker labels, in the column order of ``activity``.
    """
    turns = sorted((float(on), float(off), str(spk)) for on, off, spk in turns)
    labels: list[str] = []
    for _, _, speaker in turns:
        if speaker not in labels:
            labels.append(speaker)
    activity = np.zeros((num_frames, len(labels)), dtype=np.uint8)
    centers_s = grid.frame_center_s(np.arange(num_frames))
    for onset_s, offset_s, speaker in turns:
        first, last = np.searchsorted(centers_s, [onset_s, offset_s], side="left")
        activity[first:last, labels.index(speaker)] = 1
    return activity, labels


def chunk_reference(
    activity: np.ndarray, start_frames: np.ndarray, chunk_num_frames: int
) -> np.ndarray:
    """Cut a global ``(num_frames, num_speakers)`` activity into chunks.

    Parameters
    ----------
    activity
        ``(num_frames, num_speakers)`` global activities.
    start_frames
        ``(num_chunks,)`` global index of each chunk's first frame.
    chunk_num_frames
        Frames per chunk; frames past the end of ``activity`` are zero.

    Returns
    -------
    numpy.ndarray
        ``(num_chunks, chunk_num_frames, num_speakers)``, same dtype as ``activity``.
    """
    num_frames, num_speakers = activity.shape
    chunks = np.zeros((len(start_frames), chunk_num_frames, num_speakers), dtype=activity.dtype)
    for c, start in enumerate(np.asarray(start_frames, dtype=np.int64)):
        stop = min(int(start) + chunk_num_frames, num_frames)
        if stop > start:
            chunks[c, : stop - start] = activity[start:stop]
    return chunks


def oracle_chunk_activities(
    reference_chunks: np.ndarray, num_local_speakers: int
) -> tuple[np.ndarray, np.ndarray]:
    """Local speaker activities of each chunk taken from the reference.

    Each chunk keeps the ``num_local_speakers`` reference speakers who talk most in it (ties go to
    the earlier speaker), in reference order, and pads with silent local speakers.

    Parameters
    ----------
    reference_chunks
        ``(num_chunks, chunk_num_frames, num_reference_speakers)`` 0/1 reference activities.
    num_local_speakers
        Local speakers per chunk (4 for the EEND model).

    Returns
    -------
    activities
        ``(num_chunks, chunk_num_frames, num_local_speakers)`` uint8.
    local_to_reference
        ``(num_chunks, num_local_speakers)`` int64 reference speaker of each local speaker, -1 for
        a silent padding speaker.
    """
    num_chunks, chunk_num_frames, num_reference = reference_chunks.shape
    activities = np.zeros((num_chunks, chunk_num_frames, num_local_speakers), dtype=np.uint8)
    local_to_reference = np.full((num_chunks, num_local_speakers), -1, dtype=np.int64)
    talk_frames = reference_chunks.sum(axis=1)  # (chunks, reference speakers)
    for c in range(num_chunks):
        talking = np.flatnonzero(talk_frames[c] > 0)
        order = talking[np.argsort(-talk_frames[c, talking], kind="stable")]
        kept = np.sort(order[:num_local_speakers])
        activities[c, :, : len(kept)] = reference_chunks[c][:, kept] > 0
        local_to_reference[c, : len(kept)] = kept
    return activities, local_to_reference


def local_reference_overlap(activities: np.ndarray, reference_chunks: np.ndarray) -> np.ndarray:
    """Frames each local speaker shares with each reference speaker, per chunk.

    Parameters
    ----------
    activities
        ``(num_chunks, chunk_num_frames, num_local_speakers)`` 0/1 activities.
    reference_chunks
        ``(num_chunks, chunk_num_frames, num_reference_speakers)`` 0/1 reference activities.

    Returns
    -------
    numpy.ndarray
        ``(num_chunks, num_local_speakers, num_reference_speakers)`` float64 overlap in frames.
    """
    return np.einsum(
        "cfk,cfr->ckr", activities.astype(np.float64), reference_chunks.astype(np.float64)
    )


def as_turn_triples(turns: Sequence) -> list[tuple[float, float, str]]:
    """Normalise reference turns to ``(onset_s, offset_s, speaker)`` triples.

    Accepts triples, or records with ``onset_s``/``duration_s`` (or ``offset_s``) and
    ``speaker`` attributes.
    """
    triples = []
    for turn in turns:
        if isinstance(turn, tuple | list):
            onset_s, offset_s, speaker = turn
        else:
            onset_s = float(turn.onset_s)
            offset_s = (
                float(turn.offset_s) if hasattr(turn, "offset_s") else onset_s + turn.duration_s
            )
            speaker = turn.speaker
        triples.append((float(onset_s), float(offset_s), str(speaker)))
    return triples
