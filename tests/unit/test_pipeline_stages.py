"""Stages of the diarization pipeline, each on its own: hand-computed cases and invariants."""

import itertools

import numpy as np
import pytest

from slimdiar.errors import ConfigError
from slimdiar.pipeline import (
    AgglomerativeClustering,
    FrameGrid,
    OracleClustering,
    SpeakerBounds,
    VBxClustering,
    activity_to_segments,
    aggregate_clusters,
    binarize_powerset,
    chunk_reference,
    constrained_assignment,
    embed_speakers,
    embedding_masks,
    exclusive_activity,
    make_clustering,
    oracle_chunk_activities,
    overlap_add,
    recording_num_frames,
    reference_frame_activity,
    select_speakers,
    sliding_windows,
    speaker_count,
)

WAVLM_GRID = FrameGrid(320, 400, 16000)


def powerset_mapping(num_speakers, max_set_size):
    speakers = range(num_speakers)
    sets = [s for size in range(max_set_size + 1) for s in itertools.combinations(speakers, size)]
    mapping = np.zeros((len(sets), num_speakers))
    for row, subset in enumerate(sets):
        mapping[row, list(subset)] = 1
    return mapping, sets


# ---------------------------------------------------------------------- 1. windows
@pytest.mark.parametrize(
    "num_samples, expected",
    [
        (100, [0, 15, 30, 45, 60]),  # the last full window ends exactly at the end
        (101, [0, 15, 30, 45, 60, 75]),  # one sample left: a padded window on the step grid
        (30, [0]),  # shorter than a window: one padded window
        (40, [0]),
    ],
)
def test_window_positions_hand_cases(num_samples, expected):
    windows = sliding_windows(num_samples, window_samples=40, step_samples=15)
    assert windows.start_samples.tolist() == expected
    assert windows.num_chunks == len(expected)


@pytest.mark.parametrize("num_samples", [1, 399, 128000, 128001, 140800, 200123, 1_000_003])
def test_windows_cover_every_sample(num_samples):
    window, step = 128000, 12800
    windows = sliding_windows(num_samples, window, step)
    starts = windows.start_samples
    assert starts[0] == 0
    assert np.all(starts % step == 0)
    assert np.all(np.diff(starts) == step)
    assert starts[-1] < num_samples  # no window starts after the end
    assert starts[-1] + window >= num_samples  # the last one reaches the end
    if len(starts) > 1:  # and it is the first that does
        assert starts[-2] + window < num_samples


def test_window_start_frames_on_wavlm_grid():
    windows = sliding_windows(16000 * 20, 128000, 12800)
    assert windows.start_frames(WAVLM_GRID).tolist() == [40 * i for i in range(windows.num_chunks)]
    assert WAVLM_GRID.num_frames(128000) == 399


def test_window_errors():
    with pytest.raises(ConfigError, match="must not exceed the window"):
        sliding_windows(1000, 100, 200)
    with pytest.raises(ConfigError, match="empty recording"):
        sliding_windows(0, 100, 10)


# ---------------------------------------------------------------------- 2. binarization
def test_binarize_powerset_decodes_argmax():
    mapping, sets = powerset_mapping(3, 2)
    classes = [sets.index(s) for s in [(), (0,), (0, 1), (1, 2), (2,)]]
    log_probs = np.full((1, 5, len(sets)), -5.0)
    log_probs[0, np.arange(5), classes] = -0.1
    activities = binarize_powerset(log_probs, mapping, median_filter_frames=1)
    expected = [[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert activities.dtype == np.uint8
    assert activities[0].tolist() == expected


def test_binarize_median_filter_hand_case():
    mapping, _ = powerset_mapping(1, 1)  # classes: {}, {0}
    pattern = np.array([0, 1, 0, 0, 1, 1, 1, 0, 1, 1])
    log_probs = np.stack([1.0 - pattern, pattern], axis=-1)[None].astype(float)
    activities = binarize_powerset(log_probs, mapping, median_filter_frames=3)
    assert activities[0, :, 0].tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 1, 1]


def test_median_filter_of_11_removes_islands_of_5_frames_keeps_6():
    mapping, _ = powerset_mapping(2, 2)
    num_frames = 60
    speaker0 = np.zeros(num_frames, dtype=int)
    speaker0[10:15] = 1  # 5 frames: removed
    speaker0[30:36] = 1  # 6 frames: kept
    speaker1 = np.ones(num_frames, dtype=int)
    speaker1[20:25] = 0  # a 5-frame gap: filled
    classes = np.select(
        [(speaker0 == 1) & (speaker1 == 1), speaker0 == 1, speaker1 == 1], [3, 1, 2], default=0
    )
    log_probs = np.eye(4)[classes][None]
    activities = binarize_powerset(log_probs, mapping)
    assert activities[0, :, 0].tolist() == [1 if 30 <= i < 36 else 0 for i in range(num_frames)]
    assert activities[0, :, 1].tolist() == [1] * num_frames


# ---------------------------------------------------------------------- 3. speaker count
def test_overlap_add_and_speaker_count_hand_case():
    activities = np.zeros((2, 4, 2), dtype=np.uint8)
    activities[0, :, 0] = [1, 1, 1, 0]
    activities[0, :, 1] = [0, 1, 0, 0]  # chunk 0 counts: 1 2 1 0
    activities[1, :, 0] = [1, 1, 1, 1]
    activities[1, :, 1] = [0, 0, 1, 1]  # chunk 1 counts: 1 1 2 2
    start_frames = np.array([0, 2])
    total, coverage = overlap_add(activities.sum(-1, keepdims=True), start_frames, 6)
    assert total[:, 0].tolist() == [1, 2, 2, 1, 2, 2]
    assert coverage.tolist() == [1, 1, 2, 2, 1, 1]
    count = speaker_count(activities, start_frames, 6)
    # frame 2: (1 + 1) / 2 = 1; frame 3: (0 + 1) / 2 = 0.5 rounds to even (0)
    assert count.tolist() == [1, 2, 1, 0, 2, 2]
    assert speaker_count(activities, start_frames, 6, max_speakers=1).tolist() == [1, 1, 1, 0, 1, 1]
    # a grid longer than the chunks: uncovered frames count 0
    assert speaker_count(activities, start_frames, 8).tolist()[6:] == [0, 0]


def test_recording_num_frames():
    assert recording_num_frames(WAVLM_GRID, 0) == 0
    assert recording_num_frames(WAVLM_GRID, 40) == 0  # the first frame starts at sample 40
    assert recording_num_frames(WAVLM_GRID, 41) == 1
    assert recording_num_frames(WAVLM_GRID, 16000) == 50


def test_reference_frame_activity_uses_frame_middles():
    # frame i has its middle at 0.02 i + 0.0125 s
    turns = [(0.0, 0.05, "B"), (0.03, 0.0925, "A"), (0.5, 0.6, "B")]
    activity, labels = reference_frame_activity(turns, 6, WAVLM_GRID)
    assert labels == ["B", "A"]
    assert activity[:, 0].tolist() == [1, 1, 0, 0, 0, 0]  # middles 0.0125, 0.0325 < 0.05
    assert activity[:, 1].tolist() == [0, 1, 1, 1, 0, 0]  # 0.0325 .. 0.0725 < 0.0925


def test_oracle_chunk_activities_keep_most_talkative_in_order():
    reference = np.zeros((2, 6, 3), dtype=np.uint8)
    reference[0, :1, 0] = 1
    reference[0, :4, 1] = 1
    reference[0, :2, 2] = 1
    reference[1, :, 2] = 1
    activities, local_to_reference = oracle_chunk_activities(reference, num_local_speakers=2)
    assert local_to_reference.tolist() == [[1, 2], [2, -1]]
    assert activities[0, :, 0].tolist() == reference[0, :, 1].tolist()
    assert activities[0, :, 1].tolist() == reference[0, :, 2].tolist()
    assert activities[1, :, 1].tolist() == [0] * 6


def test_chunk_reference_pads_past_the_end():
    activity = np.arange(10, dtype=np.uint8)[:, None]
    chunks = chunk_reference(activity, np.array([0, 4, 8]), 4)
    assert chunks[..., 0].tolist() == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 0, 0]]


# ---------------------------------------------------------------------- 4. embeddings
def test_embedding_masks_prefer_solo_frames():
    activities = np.zeros((1, 8, 3), dtype=np.uint8)
    activities[0, :5, 0] = 1  # alone on frames 0-2, with speaker 1 on 3-4
    activities[0, 3:5, 1] = 1  # never alone: falls back to all its frames
    masks = embedding_masks(activities, min_clean_frames=2)
    assert masks.shape == (1, 3, 8)
    assert masks[0, 0].tolist() == [1, 1, 1, 0, 0, 0, 0, 0]
    assert masks[0, 1].tolist() == [0, 0, 0, 1, 1, 0, 0, 0]
    assert masks[0, 2].tolist() == [0] * 8
    # with a larger minimum, speaker 0 also falls back to all its frames
    assert embedding_masks(activities, min_clean_frames=4)[0, 0].tolist() == [1] * 5 + [0] * 3


def test_embed_speakers_batches_and_skips_silent_speakers():
    masks = np.zeros((3, 2, 4), dtype=np.float32)
    masks[0, 0, :2] = 1
    masks[1, 1, 2:] = 1
    masks[2, 0, 1] = 1
    masks[2, 1, 3] = 1
    waveforms = np.arange(3 * 8, dtype=np.float32).reshape(3, 8)
    calls = []

    def embed(w, weights):  # "embedding": the mean of the selected samples, and the batch size
        calls.append(len(w))
        keep = np.repeat(weights, 2, axis=1) > 0.5
        return np.stack([[x[k].mean(), len(w)] for x, k in zip(w, keep)])

    embeddings = embed_speakers(waveforms, masks, embed, batch_size=3, dimension=2)
    assert calls == [3, 1]
    assert np.isnan(embeddings[0, 1]).all() and np.isnan(embeddings[1, 0]).all()
    assert embeddings[0, 0, 0] == pytest.approx(np.mean([0, 1, 2, 3]))
    assert embeddings[1, 1, 0] == pytest.approx(np.mean([12, 13, 14, 15]))
    assert embeddings[2, 1, 0] == pytest.approx(np.mean([22, 23]))


# ---------------------------------------------------------------------- 5. clustering
def synthetic_recording(seed=0, num_chunks=60, num_frames=50, dim=16, noise=0.05):
    """3 speakers with distinct embedding directions; 2 of them talk in each chunk."""
    rng = np.random.default_rng(seed)
    directions = np.linalg.qr(rng.normal(size=(dim, dim)))[0][:3]
    pairs = [(0, 1), (1, 2), (0, 2)]
    activities = np.zeros((num_chunks, num_frames, 4), dtype=np.uint8)
    embeddings = np.full((num_chunks, 4, dim), np.nan, dtype=np.float32)
    truth = np.full((num_chunks, 4), -1)
    for c in range(num_chunks):
        speakers = pairs[c % 3]
        slots = rng.permutation(4)[:2]
        for slot, speaker, span in zip(slots, speakers, [(0, 30), (25, 50)]):
            activities[c, span[0] : span[1], slot] = 1
            embeddings[c, slot] = directions[speaker] + noise * rng.normal(size=dim)
            truth[c, slot] = speaker
    return activities, embeddings, truth


def assert_valid_assignment(hard, activities):
    active = activities.sum(axis=1) > 0
    assert np.all(hard[~active] == -1)
    for row in hard:
        labels = row[row >= 0]
        assert len(labels) == len(set(labels.tolist())), row


def same_partition(hard, truth):
    mapping = {}
    for h, t in zip(hard.ravel(), truth.ravel()):
        if t < 0:
            continue
        if mapping.setdefault(t, h) != h:
            return False
    return len(set(mapping.values())) == len(mapping)


def test_agglomerative_separates_well_separated_speakers():
    activities, embeddings, truth = synthetic_recording()
    hard = AgglomerativeClustering(min_cluster_size=5)(activities, embeddings)
    assert_valid_assignment(hard, activities)
    assert hard.max() + 1 == 3
    assert same_partition(hard, truth)


@pytest.mark.parametrize(
    "bounds, expected",
    [
        (SpeakerBounds(num_speakers=2), 2),
        (SpeakerBounds(num_speakers=4), 4),
        (SpeakerBounds(max_speakers=2), 2),
        (SpeakerBounds(min_speakers=5), 5),
        (SpeakerBounds(min_speakers=2, max_speakers=4), 3),
    ],
)
def test_agglomerative_honours_speaker_bounds(bounds, expected):
    activities, embeddings, truth = synthetic_recording(seed=1)
    hard = AgglomerativeClustering(min_cluster_size=5)(activities, embeddings, bounds=bounds)
    assert_valid_assignment(hard, activities)
    assert len(np.unique(hard[hard >= 0])) == expected


def test_forcing_one_speaker_never_gives_two_local_speakers_one_label():
    activities, embeddings, _ = synthetic_recording(seed=2)
    hard = AgglomerativeClustering()(activities, embeddings, bounds=SpeakerBounds(num_speakers=1))
    assert_valid_assignment(hard, activities)
    assert np.all((hard >= 0).sum(axis=1) == 1)  # one local speaker per chunk is left out


def test_small_clusters_join_the_nearest_large_one():
    rng = np.random.default_rng(3)
    a, b = np.eye(8)[0], np.eye(8)[1]
    c = 0.6 * a + 0.8 * np.eye(8)[2]  # far from both (distance > 0.7), closer to a
    points = np.concatenate(
        [
            a + 0.02 * rng.normal(size=(20, 8)),
            b + 0.02 * rng.normal(size=(20, 8)),
            c + 0.02 * rng.normal(size=(2, 8)),
        ]
    )
    clustering = AgglomerativeClustering(min_cluster_size=5)
    labels = clustering.cluster_embeddings(points)
    assert len(np.unique(labels)) == 2
    assert len(set(labels[40:]) | set(labels[:20])) == 1  # the pair joined cluster "a"
    # with a small enough minimum size, the pair stays a cluster of its own
    labels = AgglomerativeClustering(min_cluster_size=2).cluster_embeddings(points)
    assert len(np.unique(labels)) == 3


def test_min_cluster_size_is_scaled_down_for_few_embeddings():
    points = np.eye(3)  # three far-apart embeddings, far fewer than 30 per cluster
    labels = AgglomerativeClustering(min_cluster_size=30).cluster_embeddings(points)
    assert sorted(labels.tolist()) == [0, 1, 2]


def test_constrained_assignment_hand_case():
    scores = np.array([[[0.9, 0.8], [0.95, 0.1], [0.0, 0.0]]])
    active = np.array([[True, True, False]])
    # greedy would give both speakers cluster 0; the best joint assignment is 0->1, 1->0
    assert constrained_assignment(scores, active).tolist() == [[1, 0, -1]]
    # more active speakers than clusters: the left-over one is unassigned
    scores = np.array([[[0.9], [0.2]]])
    assert constrained_assignment(scores, np.array([[True, True]])).tolist() == [[0, -1]]


def test_oracle_clustering_follows_the_reference():
    activities, _, truth = synthetic_recording(seed=4, num_chunks=9)
    reference = np.zeros(activities.shape[:2] + (3,), dtype=np.uint8)
    for c, k in zip(*np.nonzero(truth >= 0)):
        reference[c, :, truth[c, k]] = activities[c, :, k]
    hard = OracleClustering()(activities, None, reference)
    assert np.array_equal(hard, truth)
    with pytest.raises(ConfigError, match="reference"):
        OracleClustering()(activities, None, None)


@pytest.mark.parametrize("clustering", [AgglomerativeClustering(), VBxClustering()])
def test_embedding_clustering_without_embeddings_is_a_config_error(clustering):
    # checked before the PLDA model is read: the default plda_dir need not exist
    activities, _, _ = synthetic_recording(seed=4, num_chunks=3)
    with pytest.raises(ConfigError, match="needs the speaker embeddings"):
        clustering(activities, None)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"min_speakers": 3, "max_speakers": 2}, "larger than max_speakers"),
        ({"num_speakers": 0}, "at least 1"),
        ({"num_speakers": 3, "max_speakers": 2}, "conflicts"),
        ({"num_speakers": 1, "min_speakers": 2}, "conflicts"),
        ({"max_speakers": 2.5}, "whole number"),
        ({"min_speakers": True}, "whole number"),
    ],
)
def test_impossible_speaker_bounds(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        SpeakerBounds(**kwargs)


def test_clustering_registry():
    assert isinstance(make_clustering("oracle"), OracleClustering)
    assert make_clustering("agglomerative", threshold=0.5).threshold == 0.5
    with pytest.raises(ConfigError, match="known: agglomerative, oracle"):
        make_clustering("kmeans")
    with pytest.raises(ConfigError, match="bad options"):
        make_clustering("agglomerative", bogus=1)


# ---------------------------------------------------------------------- 6. reconstruction
def test_reconstruction_hand_case():
    activities = np.zeros((2, 4, 2), dtype=np.uint8)
    activities[0, :, 0] = [1, 1, 0, 0]  # -> global 0
    activities[0, :, 1] = [0, 1, 1, 1]  # -> global 1
    activities[1, :, 0] = [1, 1, 1, 0]  # -> global 1
    activities[1, :, 1] = [0, 0, 0, 1]  # -> global 0
    hard = np.array([[0, 1], [1, 0]])
    start_frames = np.array([0, 2])
    scores = aggregate_clusters(activities, hard, start_frames, 6, 2)
    assert scores[:, 0].tolist() == [1, 1, 0, 0, 0, 1]
    assert scores[:, 1].tolist() == [0, 1, 1, 1, 1, 0]
    count = speaker_count(activities, start_frames, 6)
    assert count.tolist() == [1, 2, 1, 1, 1, 1]
    binary = select_speakers(scores, count)
    assert binary.T.tolist() == [[1, 1, 0, 0, 0, 1], [0, 1, 1, 1, 1, 0]]


def test_reconstruction_reproduces_global_activity_from_chunks():
    rng = np.random.default_rng(5)
    num_frames, chunk_frames, step = 300, 60, 15
    truth = np.zeros((num_frames, 3), dtype=np.uint8)
    for speaker in range(3):
        for onset in rng.integers(0, num_frames - 20, size=4):
            truth[onset : onset + rng.integers(5, 20), speaker] = 1
    truth[truth.sum(1) > 2, 2] = 0  # at most two at a time
    start_frames = np.arange(0, num_frames - chunk_frames + 1, step)
    chunks = chunk_reference(truth, start_frames, chunk_frames)
    activities = np.zeros(chunks.shape[:2] + (4,), dtype=np.uint8)
    hard = np.full((len(chunks), 4), -1)
    for c in range(len(chunks)):  # local speakers in a shuffled order per chunk
        slots = rng.permutation(4)[:3]
        activities[c][:, slots] = chunks[c]
        hard[c, slots] = [0, 1, 2]
    hard[activities.sum(axis=1) == 0] = -1
    count = speaker_count(activities, start_frames, num_frames)
    scores = aggregate_clusters(activities, hard, start_frames, num_frames, 3)
    binary = select_speakers(scores, count)
    assert np.array_equal(binary, truth)


def test_select_speakers_needs_positive_scores_and_breaks_ties_low():
    scores = np.array([[0.5, 0.5, 0.0], [0.0, 0.0, 0.0], [0.2, 0.9, 0.4]])
    count = np.array([1, 1, 3])
    assert select_speakers(scores, count).tolist() == [[1, 0, 0], [0, 0, 0], [1, 1, 1]]


def test_exclusive_activity_keeps_the_most_likely_speaker():
    binary = np.array([[1, 1], [0, 1], [0, 0], [1, 1]], dtype=np.uint8)
    scores = np.array([[0.6, 0.9], [0.1, 0.2], [0.3, 0.3], [0.8, 0.5]])
    assert exclusive_activity(binary, scores).tolist() == [[0, 1], [0, 1], [0, 0], [1, 0]]


def test_activity_to_segments_frame_intervals():
    # frame i stands for [0.02 i + 0.0125, 0.02 (i + 1) + 0.0125) s (middle to next middle)
    binary = np.zeros((8, 2), dtype=np.uint8)
    binary[2:5, 0] = 1
    binary[0:2, 1] = 1
    binary[6:8, 1] = 1
    segments = activity_to_segments(binary, WAVLM_GRID, duration_s=0.16)
    expected = [(0.0125, 0.0525, 1), (0.0525, 0.1125, 0), (0.1325, 0.16, 1)]
    assert [s[2] for s in segments] == [e[2] for e in expected]
    np.testing.assert_allclose([s[:2] for s in segments], [e[:2] for e in expected])


def test_more_speakers_asked_than_embeddings_gives_all_and_warns(caplog):
    with caplog.at_level("WARNING"):
        labels = AgglomerativeClustering().cluster_embeddings(np.eye(2), min_clusters=3)
    assert sorted(labels.tolist()) == [0, 1]
    assert "only 2 speaker embeddings" in caplog.text


def test_clusters_shaped_on_a_subset_when_there_are_many_embeddings():
    """Bounded memory on long recordings: the same speakers come out of a capped linkage."""
    activities, embeddings, _ = synthetic_recording(seed=1)
    full = AgglomerativeClustering(min_cluster_size=5)(activities, embeddings)
    capped = AgglomerativeClustering(min_cluster_size=5, max_embeddings=12)(activities, embeddings)
    assert_valid_assignment(capped, activities)
    # identical partitions of the local speakers, up to the names of the clusters
    pairs = {(a, b) for a, b in zip(full.ravel(), capped.ravel())}
    assert len(pairs) == len({a for a, _ in pairs}) == len({b for _, b in pairs})
    with pytest.raises(ConfigError, match="max_embeddings"):
        AgglomerativeClustering(max_embeddings=1)
