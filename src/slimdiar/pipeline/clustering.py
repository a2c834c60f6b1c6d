"""Stage 5 of the pipeline: cluster the local speakers of all chunks into global speakers.

Every clustering method maps the ``(num_chunks, num_local_speakers)`` local speakers of a
recording to global speaker indices (``hard_clusters``; -1 for silent or unassigned local
speakers) such that two local speakers of one chunk never share a global speaker. Methods are
registered in :data:`CLUSTERING_METHODS` by name and built with :func:`make_clustering`:

``"agglomerative"``
    Agglomerative clustering of speaker embeddings with centroid linkage
    (:class:`AgglomerativeClustering`).
``"vbx"``
    VBx (Bayesian HMM clustering of x-vectors with a PLDA model), initialised by
    agglomerative clustering (:class:`VBxClustering`).
``"oracle"``
    Each local speaker goes to the reference speaker it overlaps most
    (:class:`OracleClustering`),
    which shows how much of the error comes from clustering.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.cluster.vq import kmeans2
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

from slimdiar.config import Range, above, at_least, check_ranges
from slimdiar.errors import ConfigError
from slimdiar.pipeline.segmentation import local_reference_overlap
from slimdiar.pipeline.vbx import PLDA, vbx

logger = logging.getLogger(__name__)

# The options that agglomerative clustering and VBx share, and their allowed values.
SHARED_RANGES: dict[str, Range] = {
    "min_active_ratio": Range(low=0, high=1),
    "max_embeddings": at_least(2),
}


def _check_count(name: str, value: object) -> None:
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
        """The three counts as a JSON-ready dict (``None`` where not given)."""
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


def training_pairs(
    activities: np.ndarray, embeddings: np.ndarray, min_active_ratio: float
) -> tuple[np.ndarray, np.ndarray]:
    """The (chunk, local speaker) pairs whose embeddings shape the clusters.

    A pair takes part when the local speaker is active, its embedding is finite and it is the
    only active speaker on at least ``round(min_active_ratio * num_frames)`` frames of the chunk.
    When fewer than two pairs pass, the last condition is dropped.

    Parameters
    ----------
    activities
        ``(num_chunks, num_frames, num_local_speakers)`` 0/1 activities.
    embeddings
        ``(num_chunks, num_local_speakers, dimension)``, NaN for silent speakers.
    min_active_ratio
        Fraction of a chunk's frames.

    Returns
    -------
    tuple of numpy.ndarray
        ``(chunk_idx, speaker_idx)``, int64, in chunk-major order.
    """
    activities = np.asarray(activities)
    active = activities.sum(axis=1) > 0  # (chunks, speakers)
    valid = active & np.all(np.isfinite(embeddings), axis=-1)
    alone = activities * (activities.sum(axis=-1, keepdims=True) == 1)
    min_frames = round(min_active_ratio * activities.shape[1])
    chunk_idx, speaker_idx = np.nonzero(valid & (alone.sum(axis=1) >= min_frames))
    if len(chunk_idx) < 2:
        chunk_idx, speaker_idx = np.nonzero(valid)
    return chunk_idx.astype(np.int64), speaker_idx.astype(np.int64)


def spread_subset(
    chunk_idx: np.ndarray, speaker_idx: np.ndarray, max_embeddings: int
) -> tuple[np.ndarray, np.ndarray]:
    """At most ``max_embeddings`` of the pairs, evenly spread over the recording."""
    if len(chunk_idx) <= max_embeddings:
        return chunk_idx, speaker_idx
    keep = np.unique(np.linspace(0, len(chunk_idx) - 1, max_embeddings).round().astype(int))
    return chunk_idx[keep], speaker_idx[keep]


def cosine_scores(embeddings: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """``(num_chunks, num_local_speakers, num_clusters)`` cosine similarity to each centroid.

    NaN where the embedding is NaN.
    """
    flat = np.asarray(embeddings, dtype=np.float64).reshape(-1, embeddings.shape[-1])
    with np.errstate(invalid="ignore"):
        similarity = 1.0 - cdist(flat, np.asarray(centroids, dtype=np.float64), "cosine")
    return similarity.reshape(*embeddings.shape[:2], len(centroids))


def compact_labels(hard_clusters: np.ndarray) -> np.ndarray:
    """Renumber the assigned labels (>= 0) to ``0 .. K - 1`` in increasing order; -1 stays."""
    hard = np.asarray(hard_clusters, dtype=np.int64)
    used = np.unique(hard[hard >= 0])
    out = np.full(hard.shape, -1, dtype=np.int64)
    out[hard >= 0] = np.searchsorted(used, hard[hard >= 0])
    return out


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

    1. The embeddings of :func:`training_pairs` (local speakers that talk alone on at least
       ``min_active_ratio`` of a chunk's frames) are clustered: L2-normalised, merged bottom-up
       with centroid linkage (Euclidean), and the dendrogram is cut at ``threshold``.
    2. Clusters with fewer than ``min(min_cluster_size, max(1, round(0.1 * num_embeddings)))``
       members are small; each small cluster joins the large cluster with the closest centroid
       (cosine distance). If no cluster is large, all are kept.
    3. If the number of large clusters is outside the allowed range (``num_speakers``, or
       ``min_speakers``/``max_speakers``), the coarsest cut of the dendrogram with the wanted
       number of large clusters is used instead (or, failing that, the cut into exactly that
       many clusters).
    4. Every active local speaker is assigned to a cluster centroid (the mean of the cluster's
       raw embeddings) by :func:`constrained_assignment` on the cosine similarity, so that two
       local speakers of a chunk never share a global speaker.

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
        steps 1-3, so that memory stays bounded on long recordings: the clustering's peak is
        about 8 n² bytes (measured: 0.5 GiB at 8000 embeddings; see docs/pipeline.md).
    """

    threshold: float = 0.70
    min_cluster_size: int = 30
    min_active_ratio: float = 0.1
    max_embeddings: int = 10000

    needs_embeddings: ClassVar[bool] = True
    needs_reference: ClassVar[bool] = False

    RANGES: ClassVar[dict[str, Range]] = {
        "threshold": above(0),
        "min_cluster_size": at_least(1),
        **SHARED_RANGES,
    }

    def __post_init__(self) -> None:
        check_ranges(self)

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
                "using %d",
                min_clusters,
                num_points,
                num_points,
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
        """Cluster the local speakers of a recording (the :class:`Clustering` call).

        ``embeddings`` are required; ``bounds`` limits the number of speakers;
        ``reference_chunks`` is unused. Global speakers are numbered from 0, -1 for a silent
        or unassigned local speaker.
        """
        if embeddings is None:
            raise ConfigError("agglomerative clustering needs the speaker embeddings")
        bounds = bounds or SpeakerBounds()
        active = np.asarray(activities).sum(axis=1) > 0  # (chunks, speakers)
        chunk_idx, speaker_idx = training_pairs(activities, embeddings, self.min_active_ratio)
        if len(chunk_idx) == 0:
            if active.any():
                logger.warning("no usable speaker embedding: every local speaker is unassigned")
            return np.full(active.shape, -1, dtype=np.int64)
        # The linkage needs memory quadratic in its points: beyond the bound, shape the clusters
        # on an evenly spread subset; step 4 assigns every local speaker to a centroid anyway.
        chunk_idx, speaker_idx = spread_subset(chunk_idx, speaker_idx, self.max_embeddings)
        train = np.asarray(embeddings[chunk_idx, speaker_idx], dtype=np.float64)
        labels = self.cluster_embeddings(train, bounds.min_clusters, bounds.max_clusters)
        centroids = np.stack([train[labels == k].mean(axis=0) for k in range(labels.max() + 1)])
        scores = cosine_scores(embeddings, centroids)
        return constrained_assignment(scores, active)


def _kmeans(features: np.ndarray, num_clusters: int, num_starts: int = 3) -> np.ndarray:
    """``(num_points,)`` labels ``0 .. num_clusters - 1`` of the best of ``num_starts`` k-means.

    Deterministic: start ``i`` uses k-means++ seeded with ``i``; starts that leave a cluster
    empty lose to those that do not.
    """
    starts: list[tuple[int, float, np.ndarray]] = []  # (empty clusters, inertia, labels)
    for seed in range(num_starts):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an empty cluster: that start is ranked last
            centres, labels = kmeans2(features, num_clusters, minit="++", seed=seed)
        empty = num_clusters - len(np.unique(labels))
        inertia = float(np.sum((features - centres[labels]) ** 2))
        starts.append((empty, inertia, labels))
    best = min(starts, key=lambda start: start[:2])  # the first of equals
    return np.unique(best[2], return_inverse=True)[1].astype(np.int64)


@dataclass(frozen=True)
class VBxDetails:
    """Every intermediate result of one :class:`VBxClustering` run (for inspection and tests).

    Attributes
    ----------
    chunk_idx, speaker_idx
        ``(num_train,)`` the (chunk, local speaker) pairs whose embeddings were clustered.
    ahc_labels
        ``(num_train,)`` the agglomerative initialisation.
    features
        ``(num_train, lda_dim)`` the embeddings in the PLDA space.
    phi
        ``(lda_dim,)`` across-speaker variances.
    gamma, pi
        VBx posteriors ``(num_train, num_init_clusters)`` and priors ``(num_init_clusters,)``
        (``None`` when VBx did not run: fewer than two embeddings).
    labels
        ``(num_train,)`` final cluster of each clustered embedding (the most likely speaker, or
        the fallback clustering's label).
    centroids
        ``(num_clusters, dimension)``: posterior-weighted sums of the raw embeddings.
    soft_clusters
        ``(num_chunks, num_local_speakers, num_clusters)`` cosine similarity to each centroid
        (NaN where the embedding is NaN).
    hard_clusters
        ``(num_chunks, num_local_speakers)`` global speaker, -1 if silent or unassigned.
    fallback
        Whether VBx's number of speakers was outside the bounds and k-means with the nearest
        allowed number of clusters was used instead.
    """

    chunk_idx: np.ndarray
    speaker_idx: np.ndarray
    ahc_labels: np.ndarray
    features: np.ndarray | None
    phi: np.ndarray | None
    gamma: np.ndarray | None
    pi: np.ndarray | None
    labels: np.ndarray
    centroids: np.ndarray
    soft_clusters: np.ndarray
    hard_clusters: np.ndarray
    fallback: bool


@dataclass
class VBxClustering:
    """VBx clustering (Bayesian HMM on x-vectors with a PLDA model), initialised by AHC.

    1. The embeddings of :func:`training_pairs` (``min_active_ratio`` 0.1) are clustered.
    2. Initialisation: centroid linkage on the L2-normalised embeddings, dendrogram cut at
       ``ahc_threshold``.
    3. The raw embeddings go through the x-vector transform and the PLDA
       (:class:`~slimdiar.pipeline.vbx.PLDA`, read from ``plda_dir``), truncated to
       ``lda_dim`` dimensions, and :func:`~slimdiar.pipeline.vbx.vbx` refines the
       initialisation; the speakers whose prior stays above ``min_prior`` are kept.
    4. Centroids are the posterior-weighted sums of the raw embeddings of the kept speakers;
       every active local speaker is assigned to one by :func:`constrained_assignment` on the
       cosine similarity, and the labels used are renumbered ``0 .. K - 1``.

    When the number of kept speakers is outside the allowed range (``num_speakers``, or
    ``min_speakers``/``max_speakers``, capped at the number of clustered embeddings), a warning
    is logged and k-means (k-means++ starts, best of three, fixed seeds) on the same PLDA-space
    features finds the nearest allowed number of clusters instead; their centroids are the means
    of their raw embeddings.

    Parameters
    ----------
    ahc_threshold
        Distance at which the initial dendrogram is cut.
    fa, fb
        VBx's statistics scale and speaker regularisation.
    lda_dim
        Dimensions of the PLDA space used.
    max_iters
        Most VBx iterations.
    loop_probability
        Probability of staying with the same speaker between consecutive embeddings (0: a
        mixture model).
    init_smoothing
        Sharpness of the initial posteriors (``softmax(init_smoothing * one_hot)``).
    plda_dir
        Directory of ``xvec_transform.npz`` and ``plda.npz`` (a model's pipeline settings give
        it relative to the model directory).
    min_active_ratio
        Fraction of a chunk's frames a local speaker must talk alone to take part in step 1.
    min_prior
        Speakers with a larger VBx prior are kept.
    max_embeddings
        At most this many embeddings (evenly spread over the recording) are clustered, as in
        :class:`AgglomerativeClustering` (the initialisation's linkage is quadratic in memory).
    """

    ahc_threshold: float = 0.6
    fa: float = 0.07
    fb: float = 0.8
    lda_dim: int = 128
    max_iters: int = 20
    loop_probability: float = 0.0
    init_smoothing: float = 7.0
    plda_dir: str = "plda"
    min_active_ratio: float = 0.1
    min_prior: float = 1e-7
    max_embeddings: int = 10000

    needs_embeddings: ClassVar[bool] = True
    needs_reference: ClassVar[bool] = False

    RANGES: ClassVar[dict[str, Range]] = {
        "ahc_threshold": above(0),
        "fa": above(0),
        "fb": above(0),
        "lda_dim": at_least(1),
        "max_iters": at_least(1),
        "loop_probability": Range(low=0, high=1, high_open=True),
        **SHARED_RANGES,
    }

    def __post_init__(self) -> None:
        check_ranges(self)
        self._plda: PLDA | None = None

    def prepare(self) -> PLDA:
        """Read the PLDA model (once) and return it.

        Raises :class:`~slimdiar.errors.CheckpointError`.
        """
        if self._plda is None:
            self._plda = PLDA.load(self.plda_dir)
        return self._plda

    def details(
        self,
        activities: np.ndarray,
        embeddings: np.ndarray,
        bounds: SpeakerBounds | None = None,
    ) -> VBxDetails | None:
        """Run the clustering and return every intermediate result.

        ``None`` when no local speaker has a usable embedding.
        """
        bounds = bounds or SpeakerBounds()
        plda = self.prepare()
        active = np.asarray(activities).sum(axis=1) > 0  # (chunks, speakers)
        chunk_idx, speaker_idx = training_pairs(activities, embeddings, self.min_active_ratio)
        chunk_idx, speaker_idx = spread_subset(chunk_idx, speaker_idx, self.max_embeddings)
        num_train = len(chunk_idx)
        if num_train == 0:
            return None
        train = np.asarray(embeddings[chunk_idx, speaker_idx], dtype=np.float64)
        # (num_train, dimension)
        features = phi = gamma = pi = None
        if num_train < 2:
            ahc_labels = labels = np.zeros(num_train, dtype=np.int64)
            weights = np.ones((num_train, 1))
        else:
            merges = linkage(_normalize(train), method="centroid", metric="euclidean")
            ahc_labels = np.unique(
                fcluster(merges, self.ahc_threshold, criterion="distance"), return_inverse=True
            )[1].astype(np.int64)
            features, phi = plda.features(train, self.lda_dim)
            result = vbx(
                features,
                phi,
                ahc_labels,
                fa=self.fa,
                fb=self.fb,
                loop_probability=self.loop_probability,
                max_iters=self.max_iters,
                init_smoothing=self.init_smoothing,
            )
            gamma, pi = result.gamma, result.pi
            kept = pi > self.min_prior
            weights = gamma[:, kept]  # (num_train, num_speakers)
            labels = np.argmax(weights, axis=1)

        high = num_train if bounds.max_clusters is None else min(bounds.max_clusters, num_train)
        low = min(bounds.min_clusters, high)
        if bounds.min_clusters > num_train:
            logger.warning(
                "asked for at least %d speakers but only %d speaker embeddings are usable; "
                "using %d",
                bounds.min_clusters,
                num_train,
                num_train,
            )
        found = weights.shape[1]
        fallback = not low <= found <= high
        if fallback:
            wanted = int(np.clip(found, low, high))
            logger.warning(
                "VBx found %d speakers, outside the allowed range [%d, %d]; using k-means "
                "with %d clusters on the same features instead",
                found,
                low,
                high,
                wanted,
            )
            # One embedding always fits the bounds, so VBx ran and gave the features.
            assert features is not None
            labels = _kmeans(features, wanted)
            weights = np.eye(wanted)[labels] / np.bincount(labels, minlength=wanted)
        centroids = weights.T @ train  # (num_clusters, dimension)
        soft = cosine_scores(embeddings, centroids)
        hard = compact_labels(constrained_assignment(soft, active))
        return VBxDetails(
            chunk_idx,
            speaker_idx,
            ahc_labels,
            features,
            phi,
            gamma,
            pi,
            labels,
            centroids,
            soft,
            hard,
            fallback,
        )

    def __call__(
        self,
        activities: np.ndarray,
        embeddings: np.ndarray | None,
        reference_chunks: np.ndarray | None = None,
        bounds: SpeakerBounds | None = None,
    ) -> np.ndarray:
        """Cluster the local speakers of a recording.

        Arguments and result as :meth:`Clustering.__call__` (``embeddings`` are required).
        """
        if embeddings is None:
            raise ConfigError("VBx clustering needs the speaker embeddings")
        found = self.details(activities, embeddings, bounds)
        if found is None:
            active = np.asarray(activities).sum(axis=1) > 0
            if active.any():
                logger.warning("no usable speaker embedding: every local speaker is unassigned")
            return np.full(active.shape, -1, dtype=np.int64)
        return found.hard_clusters


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
        """Assign local speakers to reference speakers (the :class:`Clustering` call).

        ``reference_chunks`` (the reference activities on the same frames) are required;
        ``embeddings`` and ``bounds`` are unused. Global speakers are reference speaker
        indices, -1 for a silent or unassigned local speaker.
        """
        if reference_chunks is None:
            raise ConfigError("oracle clustering needs the reference turns of the recording")
        overlap = local_reference_overlap(activities, reference_chunks)
        active = np.asarray(activities).sum(axis=1) > 0
        return constrained_assignment(overlap, active)


class Clustering(Protocol):
    """What every clustering method is: flags saying what it needs, and the call."""

    #: Whether the method reads speaker embeddings (the pipeline computes them only then).
    needs_embeddings: ClassVar[bool]
    #: Whether the method reads the reference turns (an oracle).
    needs_reference: ClassVar[bool]

    def __call__(
        self,
        activities: np.ndarray,
        embeddings: np.ndarray | None,
        reference_chunks: np.ndarray | None = None,
        bounds: SpeakerBounds | None = None,
    ) -> np.ndarray:
        """Assign every local speaker of every chunk to a global speaker.

        Parameters
        ----------
        activities
            ``(num_chunks, num_frames, num_local_speakers)`` 0/1 activities.
        embeddings
            ``(num_chunks, num_local_speakers, dimension)`` embeddings, NaN for silent speakers
            (``None`` for a method that needs none).
        reference_chunks
            ``(num_chunks, num_frames, num_reference_speakers)`` 0/1 reference activities on the
            same frames (for an oracle).
        bounds
            Allowed number of speakers.

        Returns
        -------
        numpy.ndarray
            ``(num_chunks, num_local_speakers)`` int64 global speakers, -1 if silent or
            unassigned.
        """
        ...


CLUSTERING_METHODS: dict[str, type[Clustering]] = {
    "agglomerative": AgglomerativeClustering,
    "oracle": OracleClustering,
    "vbx": VBxClustering,
}


def make_clustering(name: str, **options: object) -> Clustering:
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
