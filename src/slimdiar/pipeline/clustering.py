"""Stage 5 of the pipeline: cluster the local speakers of all chunks into global speakers.

Every clustering method maps the ``(num_chunks, num_local_speakers)`` local speakers of a
recording to global speaker indices (``hard_clusters``; -1 for silent or unassigned local
speakers) such that two local speakers of one chunk never share a global speaker. Methods are
registered in :data:`CLUSTERING_METHODS` by name and built with :func:`make_clustering`:

``"agglomerative"``
    Agglomerative clustering of speaker embeddings with centroid linkage
    (:class:`AgglomerativeClustering`).
``"oracle"``
    Each local speaker goes to the reference speaker it overlaps most
    (:class:`OracleClustering`),
    which shows how much of the error comes from clustering.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

from slimdiar.errors import ConfigError
from slimdiar.pipeline.segmentation import local_reference_overlap

logger = logging.getLogger(__name__)


def _check_count(name: str, value) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ConfigError(f"{name} must be a whole number, got {value!r}")
    if value < 1:
        raise ConfigError(f"{name} must be at least 1, got {value}")


@dataclass(frozen=True)
class SpeakerBounds:
    """What the caller knows about the number of speakers of a recording.

    Parameters
    ----------
    num_speakers
        Exact number of speakers, if known.
    min_speakers, max_speakers
        Bounds on the number of speakers, if known.

    Raises
    ------
    ConfigError
        If a value is not a whole number >= 1, ``min_speakers > max_speakers``, or
        ``num_speakers`` lies outside ``[min_speakers, max_speakers]``.
    """

    num_speakers: int | None = None
    min_speakers: int | None = None
    max_speakers: int | None = None

    def __post_init__(self) -> None:
        _check_count("num_speakers", self.num_speakers)
        _check_count("min_speakers", self.min_speakers)
        _check_count("max_speakers", self.max_speakers)
        low, high = self.min_speakers, self.max_speakers
        if low is not None and high is not None and low > high:
            raise ConfigError(f"min_speakers ({low}) is larger than max_speakers ({high})")
        num = self.num_speakers
        below = num is not None and low is not None and num < low
        above = num is not None and high is not None and num > high
        if below or above:
            raise ConfigError(
                f"num_speakers ({num}) conflicts with min_speakers ({low}) / max_speakers "
                f"({high}); give num_speakers alone, or only bounds"
            )

    @property
    def min_clusters(self) -> int:
        """Fewest global speakers allowed."""
        if self.num_speakers is not None:
            return self.num_speakers
        return self.min_speakers or 1

    @property
    def max_clusters(self) -> int | None:
        """Most global speakers allowed (``None``: no bound)."""
        if self.num_speakers is not None:
            return self.num_speakers
        return self.max_speakers

    def to_dict(self) -> dict:
        return {
            "num_speakers": self.num_speakers,
            "min_speakers": self.min_speakers,
            "max_speakers": self.max_speakers,
        }


def constrained_assignment(scores: np.ndarray, active: np.ndarray) -> np.ndarray:
    """Give each active local speaker a cluster, never the same one twice within a chunk.

    Per chunk, the assignment maximises the summed score (Hungarian algorithm). When a chunk
    has more active local speakers than there are clusters, the ones left over stay unassigned.

    Parameters
    ----------
    scores
        ``(num_chunks, num_local_speakers, num_clusters)`` affinity of each local speaker to each
        cluster (higher is better); non-finite values count as lower than every finite one.
    active
        ``(num_chunks, num_local_speakers)`` bool, the local speakers to assign.

    Returns
    -------
    numpy.ndarray
        ``(num_chunks, num_local_speakers)`` int64 cluster index, -1 for inactive or unassigned
        local speakers.
    """
    scores = np.array(scores, dtype=np.float64)
    finite = np.isfinite(scores)
    floor = scores[finite].min() - 1.0 if finite.any() else 0.0
    scores[~finite] = floor
    num_chunks, num_speakers, num_clusters = scores.shape
    hard = np.full((num_chunks, num_speakers), -1, dtype=np.int64)
    if num_clusters == 0:
        return hard
    for c in range(num_chunks):
        rows = np.flatnonzero(active[c])
        if rows.size == 0:
            continue
        row, col = linear_sum_assignment(scores[c, rows], maximize=True)
        hard[c, rows[row]] = col
    return hard


def _normalize(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def _clusters_after_merges(merges: np.ndarray, num_points: int, num_merges: int) -> np.ndarray:
    """Cluster of each point after the first ``num_merges`` rows of a linkage matrix."""
    members: dict[int, list[int]] = {i: [i] for i in range(num_points)}
    for row in range(num_merges):
        a, b = int(merges[row, 0]), int(merges[row, 1])
        members[num_points + row] = members.pop(a) + members.pop(b)
    labels = np.empty(num_points, dtype=np.int64)
    for label, points in enumerate(members.values()):
        labels[points] = label
    return labels


def _cut_with_large_clusters(
    merges: np.ndarray, num_points: int, num_large: int, min_size: int
) -> np.ndarray | None:
    """Coarsest cut of the dendrogram with exactly ``num_large`` clusters of >= ``min_size``.

    Returns the cluster of each point, or ``None`` when no cut with at least ``num_large``
    clusters has exactly that many large ones.
    """
    sizes = np.ones(2 * num_points - 1, dtype=np.int64)
    large = int(min_size <= 1) * num_points
    best = 0 if large == num_large else None
    for row in range(num_points - num_large):
        a, b = int(merges[row, 0]), int(merges[row, 1])
        size = sizes[a] + sizes[b]
        sizes[num_points + row] = size
        large += int(size >= min_size) - int(sizes[a] >= min_size) - int(sizes[b] >= min_size)
        if large == num_large:
            best = row + 1
    if best is None:
        return None
    return _clusters_after_merges(merges, num_points, best)


@dataclass
class AgglomerativeClustering:
    """Agglomerative clustering of speaker embeddings with centroid linkage.

    1. Local speakers that talk alone on at least ``min_active_ratio`` of a chunk's frames (all
       active ones if there are none such) and have a finite embedding are clustered: embeddings
       are L2-normalised, merged bottom-up with centroid linkage (Euclidean), and the dendrogram
       is cut at ``threshold``.
    2. Clusters with fewer than ``min(min_cluster_size, max(1, round(0.1 * num_embeddings)))``
       members are small; each small cluster joins the large cluster with the closest centroid
       (cosine distance). If no cluster is large, all are kept.
    3. If the number of large clusters is outside the allowed range (``num_speakers``, or
       ``min_speakers``/``max_speakers``), the coarsest cut of the dendrogram with the wanted
       number of large clusters is used instead (or, failing that, the cut into exactly that
       many clusters).
    4. Every active local speaker is assigned to a cluster centroid by
       :func:`constrained_assignment` on the cosine similarity, so that two local speakers of a
       chunk never share a global speaker.

    Parameters
    ----------
    threshold
        Distance at which the dendrogram is cut (between L2-normalised embeddings).
    min_cluster_size
        Clusters with fewer members are merged into the closest large one.
    min_active_ratio
        Fraction of a chunk's frames a local speaker must talk alone to take part in step 1.
    max_embeddings
        At most this many embeddings (evenly spread over the recording) shape the clusters in
        steps 1-3, so that memory stays bounded on long recordings (the linkage holds all
        pairwise distances: about 8 n² bytes, twice).
    """

    threshold: float = 0.70
    min_cluster_size: int = 30
    min_active_ratio: float = 0.2
    max_embeddings: int = 4000

    needs_embeddings: ClassVar[bool] = True
    needs_reference: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if not self.threshold > 0:
            raise ConfigError(f"threshold must be positive, got {self.threshold}")
        if self.min_cluster_size < 1:
            raise ConfigError(f"min_cluster_size must be >= 1, got {self.min_cluster_size}")
        if not 0 <= self.min_active_ratio <= 1:
            raise ConfigError(f"min_active_ratio must be in [0, 1], got {self.min_active_ratio}")
        if self.max_embeddings < 2:
            raise ConfigError(f"max_embeddings must be >= 2, got {self.max_embeddings}")

    def cluster_embeddings(
        self, embeddings: np.ndarray, min_clusters: int = 1, max_clusters: int | None = None
    ) -> np.ndarray:
        """Steps 1-3 on a set of embeddings.

        Parameters
        ----------
        embeddings
            ``(num_embeddings, dimension)`` finite embeddings.
        min_clusters, max_clusters
            Allowed number of clusters (``max_clusters=None``: no upper bound).

        Returns
        -------
        numpy.ndarray
            ``(num_embeddings,)`` int64 cluster indices ``0 .. num_clusters - 1``.
        """
        num_points = len(embeddings)
        if min_clusters > num_points:
            logger.warning(
                "asked for at least %d speakers but only %d speaker embeddings are usable; "
                "using %d", min_clusters, num_points, num_points
            )
        if num_points <= 1:
            return np.zeros(num_points, dtype=np.int64)
        points = _normalize(np.asarray(embeddings, dtype=np.float64))
        merges = linkage(points, method="centroid", metric="euclidean")
        min_size = min(self.min_cluster_size, max(1, round(0.1 * num_points)))
        labels = fcluster(merges, self.threshold, criterion="distance") - 1
        sizes = np.bincount(labels)
        num_large = int(np.sum(sizes >= min_size)) or len(sizes)

        high = num_points if max_clusters is None else min(max_clusters, num_points)
        wanted = int(np.clip(num_large, min(min_clusters, high), high))
        if wanted != num_large:
            labels = _cut_with_large_clusters(merges, num_points, wanted, min_size)
            if labels is None:  # keep exactly `wanted` clusters, however small
                labels = _clusters_after_merges(merges, num_points, num_points - wanted)
                min_size = 1
            sizes = np.bincount(labels)
        large = np.flatnonzero(sizes >= min_size)
        if large.size == 0:
            large = np.arange(len(sizes))
        small = np.setdiff1d(np.arange(len(sizes)), large)
        if small.size:
            centroids = np.stack([points[labels == k].mean(axis=0) for k in range(len(sizes))])
            nearest = large[np.argmin(cdist(centroids[small], centroids[large], "cosine"), axis=1)]
            for cluster, target in zip(small, nearest):
                labels[labels == cluster] = target
        return np.searchsorted(large, labels).astype(np.int64)

    def __call__(
        self,
        activities: np.ndarray,
        embeddings: np.ndarray | None,
        reference_chunks: np.ndarray | None = None,
        bounds: SpeakerBounds | None = None,
    ) -> np.ndarray:
        """Cluster the local speakers of a recording.

        Parameters
        ----------
        activities
            ``(num_chunks, num_frames, num_local_speakers)`` 0/1 activities.
        embeddings
            ``(num_chunks, num_local_speakers, dimension)`` embeddings, NaN for silent speakers.
        reference_chunks
            Unused.
        bounds
            Allowed number of speakers.

        Returns
        -------
        numpy.ndarray
            ``(num_chunks, num_local_speakers)`` int64 global speaker, -1 if silent/unassigned.
        """
        bounds = bounds or SpeakerBounds()
        activities = np.asarray(activities)
        num_frames = activities.shape[1]
        active = activities.sum(axis=1) > 0  # (chunks, speakers)
        valid = active & np.all(np.isfinite(embeddings), axis=-1)
        alone = activities * (activities.sum(axis=-1, keepdims=True) == 1)
        long_enough = alone.sum(axis=1) >= self.min_active_ratio * num_frames
        train = valid & long_enough
        if not train.any():
            train = valid
        if not train.any():
            if active.any():
                logger.warning("no usable speaker embedding: every local speaker is unassigned")
            return np.full(active.shape, -1, dtype=np.int64)
        points = _normalize(np.asarray(embeddings[train], dtype=np.float64))
        if len(points) > self.max_embeddings:
            # The linkage needs memory quadratic in its points: shape the clusters on an evenly
            # spread subset; step 4 assigns every local speaker to their centroids anyway.
            keep = np.linspace(0, len(points) - 1, self.max_embeddings).round().astype(int)
            points = points[np.unique(keep)]
        labels = self.cluster_embeddings(points, bounds.min_clusters, bounds.max_clusters)
        centroids = np.stack([points[labels == k].mean(axis=0) for k in range(labels.max() + 1)])
        flat = np.asarray(embeddings, dtype=np.float64).reshape(-1, embeddings.shape[-1])
        with np.errstate(invalid="ignore"):
            similarity = 1.0 - cdist(_normalize(flat), centroids, "cosine")
        scores = similarity.reshape(*active.shape, len(centroids))
        return constrained_assignment(scores, active)


@dataclass
class OracleClustering:
    """Each local speaker goes to the reference speaker it overlaps most.

    Per chunk, local speakers are matched to reference speakers by maximising the overlap in
    frames (Hungarian algorithm), so two local speakers of one chunk never share a reference
    speaker; a local speaker that overlaps no reference speaker still takes a free one. The
    speaker-count bounds are ignored: the reference decides.
    """

    needs_embeddings: ClassVar[bool] = False
    needs_reference: ClassVar[bool] = True

    def __call__(
        self,
        activities: np.ndarray,
        embeddings: np.ndarray | None,
        reference_chunks: np.ndarray | None = None,
        bounds: SpeakerBounds | None = None,
    ) -> np.ndarray:
        """Assign local speakers to reference speakers.

        Parameters
        ----------
        activities
            ``(num_chunks, num_frames, num_local_speakers)`` 0/1 activities.
        embeddings
            Unused.
        reference_chunks
            ``(num_chunks, num_frames, num_reference_speakers)`` 0/1 reference activities on the
            same frames.
        bounds
            Unused.

        Returns
        -------
        numpy.ndarray
            ``(num_chunks, num_local_speakers)`` int64 reference speaker index, -1 if silent or
            unassigned.
        """
        if reference_chunks is None:
            raise ConfigError("oracle clustering needs the reference turns of the recording")
        overlap = local_reference_overlap(activities, reference_chunks)
        active = np.asarray(activities).sum(axis=1) > 0
        return constrained_assignment(overlap, active)


CLUSTERING_METHODS: dict[str, type] = {
    "agglomerative": AgglomerativeClustering,
    "oracle": OracleClustering,
}


def make_clustering(name: str, **options):
    """Build the clustering method registered as ``name`` with its options.

    Raises
    ------
    ConfigError
        If ``name`` is not registered (the message lists the known methods) or an option is
        unknown.
    """
    try:
        factory = CLUSTERING_METHODS[name]
    except KeyError:
        raise ConfigError(
            f"unknown clustering method {name!r}; known: {', '.join(sorted(CLUSTERING_METHODS))}"
        ) from None
    try:
        return factory(**options)
    except TypeError as error:
        raise ConfigError(f"bad options for clustering {name!r}: {error}") from None
