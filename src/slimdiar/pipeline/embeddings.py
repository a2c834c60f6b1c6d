"""Stage 4 of the pipeline: one speaker embedding per (chunk, local speaker).

A local speaker's embedding is computed on the whole chunk waveform, weighted by a frame mask:
the frames where that speaker talks alone, or all of its frames when it talks alone on fewer
than ``min_clean_frames`` frames. Silent local speakers get no embedding (NaN).

When the mask weights only the statistics pooling (the ResNet: the embedding model's
``shares_windows`` is true), the filterbank and the network run once per window and the pooling
once per active local speaker, which gives the same numbers with up to
``num_local_speakers`` times less work; otherwise every (window, speaker) pair is embedded on
its own.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from slimdiar.pipeline.windows import batches

#: ``embed(waveforms (n, num_samples), weights (n, num_frames)) -> (n, dimension)`` embeddings.
EmbedFunction = Callable[[np.ndarray, np.ndarray], np.ndarray]


def embedding_masks(activities: np.ndarray, min_clean_frames: int) -> np.ndarray:
    """Frame weights of each local speaker's embedding.

    Parameters
    ----------
    activities
        ``(num_chunks, num_frames, num_local_speakers)`` 0/1 activities.
    min_clean_frames
        Fewest frames of solo speech for which the overlap-free frames are used; below this, all
        of the speaker's frames are used.

    Returns
    -------
    numpy.ndarray
        ``(num_chunks, num_local_speakers, num_frames)`` float32 0/1 masks; all zero for a silent
        local speaker.
    """
    activities = np.asarray(activities, dtype=np.float32)
    if activities.ndim != 3:
        raise ValueError(
            f"activities must be (num_chunks, num_frames, num_speakers), got {activities.shape}"
        )
    alone = (activities.sum(axis=-1, keepdims=True) == 1).astype(np.float32)
    clean = activities * alone  # (chunks, frames, speakers)
    enough = clean.sum(axis=1, keepdims=True) >= max(int(min_clean_frames), 1)
    masks = np.where(enough, clean, activities)
    return np.ascontiguousarray(masks.transpose(0, 2, 1))


def embed_speakers(
    waveforms: np.ndarray,
    masks: np.ndarray,
    embed: EmbedFunction,
    batch_size: int,
    dimension: int,
) -> np.ndarray:
    """Embed every active local speaker of a batch of chunks.

    Parameters
    ----------
    waveforms
        ``(num_chunks, num_samples)`` chunk waveforms.
    masks
        ``(num_chunks, num_local_speakers, num_frames)`` frame weights from
        :func:`embedding_masks`.
    embed
        The embedding function, called on at most ``batch_size`` (chunk, speaker) pairs at a
        time; or, when it has a true ``shares_windows`` attribute, its ``embed_windows(waveforms
        (n, num_samples), masks (n, num_local_speakers, num_frames)) -> (n, num_local_speakers,
        dimension)`` is called on at most ``batch_size`` chunks at a time instead.
    batch_size
        Pairs (or, with ``embed_windows``, chunks) per call.
    dimension
        Embedding dimension (the width of what ``embed`` returns).

    Returns
    -------
    numpy.ndarray
        ``(num_chunks, num_local_speakers, dimension)`` float32; NaN rows for silent speakers.
    """
    num_chunks, num_speakers, _ = masks.shape
    if len(waveforms) != num_chunks:
        raise ValueError(f"{len(waveforms)} waveforms for {num_chunks} chunks of masks")
    if getattr(embed, "shares_windows", False):
        return _embed_windows(waveforms, masks, embed, batch_size, dimension)
    chunk_index, speaker_index = np.nonzero(masks.sum(axis=-1) > 0)
    rows: list[np.ndarray] = []
    for part in batches(len(chunk_index), batch_size):
        c, k = chunk_index[part], speaker_index[part]
        rows.append(np.asarray(embed(waveforms[c], masks[c, k]), dtype=np.float32))
        if rows[-1].shape != (len(c), dimension):
            raise ValueError(
                f"the embedding function returned shape {rows[-1].shape} for {len(c)} inputs, "
                f"expected {(len(c), dimension)}"
            )
    embeddings = np.full((num_chunks, num_speakers, dimension), np.nan, dtype=np.float32)
    if rows:
        embeddings[chunk_index, speaker_index] = np.concatenate(rows)
    return embeddings


def _embed_windows(
    waveforms: np.ndarray, masks: np.ndarray, embed, batch_size: int, dimension: int
) -> np.ndarray:
    """:func:`embed_speakers` with one network pass per chunk that has an active speaker."""
    num_chunks, num_speakers, _ = masks.shape
    active = masks.sum(axis=-1) > 0
    # (num_chunks, num_local_speakers)
    chunks = np.flatnonzero(active.any(axis=-1))
    embeddings = np.full((num_chunks, num_speakers, dimension), np.nan, dtype=np.float32)
    expected = (num_speakers, dimension)
    for part in batches(len(chunks), batch_size):
        c = chunks[part]
        rows = np.asarray(embed.embed_windows(waveforms[c], masks[c]), dtype=np.float32)
        if rows.shape != (len(c), *expected):
            raise ValueError(
                f"the embedding model returned shape {rows.shape} for {len(c)} chunks, "
                f"expected {(len(c), *expected)}"
            )
        embeddings[c] = rows
    embeddings[~active] = np.nan
    return embeddings
