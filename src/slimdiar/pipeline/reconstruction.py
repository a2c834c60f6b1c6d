"""Stage 6 of the pipeline: from clustered chunks back to one activity per global speaker.

Per chunk, a global speaker's activity is the maximum over the local speakers assigned to it
(0 where none is); these are averaged over all chunks that cover a global frame. In each frame the
``count`` global speakers with the highest averaged activity are active (only those with a
positive activity). Frames are then turned into ``(onset_s, offset_s, speaker)`` segments.
"""

from __future__ import annotations

import numpy as np

from slimdiar.frames import FrameGrid


def aggregate_clusters(
    activities: np.ndarray,
    hard_clusters: np.ndarray,
    start_frames: np.ndarray,
    num_frames: int,
    num_clusters: int,
) -> np.ndarray:
    """Average, over overlapping chunks, each global speaker's per-chunk activity.

    Parameters
    ----------
    activities
        ``(num_chunks, chunk_num_frames, num_local_speakers)`` 0/1 (or soft) activities.
    hard_clusters
        ``(num_chunks, num_local_speakers)`` global speaker of each local speaker, -1 for none.
    start_frames
        ``(num_chunks,)`` global index of each chunk's first frame.
    num_frames
        Number of global frames.
    num_clusters
        Number of global speakers.

    Returns
    -------
    numpy.ndarray
        ``(num_frames, num_clusters)`` float64 scores in ``[0, 1]``: the mean over the chunks that
        cover a frame of the maximum activity of the local speakers assigned to each cluster.
    """
    activities = np.asarray(activities)
    num_chunks, chunk_num_frames, _ = activities.shape
    total = np.zeros((num_frames, num_clusters), dtype=np.float64)
    coverage = np.zeros(num_frames, dtype=np.int64)
    for c in range(num_chunks):
        start = int(start_frames[c])
        stop = min(start + chunk_num_frames, num_frames)
        if stop <= start:
            continue
        coverage[start:stop] += 1
        for k in np.unique(hard_clusters[c]):
            if k < 0:
                continue
            local = activities[c, : stop - start][:, hard_clusters[c] == k].max(axis=1)
            total[start:stop, k] += local
    return total / np.maximum(coverage, 1)[:, None]


def select_speakers(scores: np.ndarray, count: np.ndarray) -> np.ndarray:
    """In each frame, mark active the ``count`` speakers with the highest positive score.

    Parameters
    ----------
    scores
        ``(num_frames, num_speakers)`` aggregated activities.
    count
        ``(num_frames,)`` number of speakers to keep per frame.

    Returns
    -------
    numpy.ndarray
        ``(num_frames, num_speakers)`` uint8 0/1; ties go to the lower speaker index.
    """
    scores = np.asarray(scores, dtype=np.float64)
    num_frames, num_speakers = scores.shape
    order = np.argsort(-scores, axis=1, kind="stable")  # (frames, speakers), best first
    keep = np.arange(num_speakers)[None, :] < np.asarray(count)[:, None]
    binary = np.zeros((num_frames, num_speakers), dtype=np.uint8)
    np.put_along_axis(binary, order, keep.astype(np.uint8), axis=1)
    return binary * (scores > 0)


def exclusive_activity(binary: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Keep, in every frame, only the active speaker with the highest score.

    Parameters
    ----------
    binary
        ``(num_frames, num_speakers)`` 0/1 activities.
    scores
        ``(num_frames, num_speakers)`` aggregated activities.

    Returns
    -------
    numpy.ndarray
        ``(num_frames, num_speakers)`` uint8 with at most one active speaker per frame.
    """
    num_frames, num_speakers = binary.shape
    exclusive = np.zeros((num_frames, num_speakers), dtype=np.uint8)
    if num_speakers == 0:
        return exclusive
    masked = np.where(binary > 0, scores, -np.inf)
    best = np.argmax(masked, axis=1)
    speaking = binary.any(axis=1)
    exclusive[np.flatnonzero(speaking), best[speaking]] = 1
    return exclusive


def activity_to_segments(
    binary: np.ndarray, grid: FrameGrid, duration_s: float
) -> list[tuple[float, float, int]]:
    """Turn frame activities into time segments.

    A run of active frames ``a .. b - 1`` becomes ``[middle of frame a, middle of frame b)``
    (:meth:`FrameGrid.frame_bounds_s`), clipped to ``[0, duration_s]``.

    Parameters
    ----------
    binary
        ``(num_frames, num_speakers)`` 0/1 activities on the global frame grid.
    grid
        The frame grid.
    duration_s
        Recording duration in seconds.

    Returns
    -------
    list of (float, float, int)
        ``(onset_s, offset_s, speaker_index)`` sorted by onset, then speaker.
    """
    segments = []
    padded = np.pad(np.asarray(binary, dtype=np.int8), ((1, 1), (0, 0)))
    changes = np.diff(padded, axis=0)  # (num_frames + 1, speakers)
    for speaker in range(binary.shape[1]):
        first = np.flatnonzero(changes[:, speaker] == 1)
        after = np.flatnonzero(changes[:, speaker] == -1)
        onsets_s, _ = grid.frame_bounds_s(first)
        _, offsets_s = grid.frame_bounds_s(after - 1)
        for onset_s, offset_s in zip(onsets_s, offsets_s):
            onset_s, offset_s = max(0.0, float(onset_s)), min(float(duration_s), float(offset_s))
            if offset_s > onset_s:
                segments.append((onset_s, offset_s, speaker))
    segments.sort(key=lambda seg: (seg[0], seg[2]))
    return segments
