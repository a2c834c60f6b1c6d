"""VBx clustering against oracle outputs of the reference implementation (DiariZen's VBx).

``tests/data/diarizen/vbx/`` holds inputs and every intermediate result of DiariZen's
``VBxClustering`` (see that folder's README section): the kept embeddings, the AHC
initialisation, the PLDA-space features, VBx's posteriors and priors, the centroids, the soft
and hard clusters, for two cases.
"""

from __future__ import annotations

import itertools
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from slimdiar.errors import CheckpointError, ConfigError
from slimdiar.pipeline import SpeakerBounds, make_clustering
from slimdiar.pipeline.clustering import VBxClustering
from slimdiar.pipeline.vbx import PLDA, _forward_backward, vbx

DATA = Path(__file__).resolve().parents[1] / "data" / "diarizen" / "vbx"
CASES = ["", "case2_"]


def load(prefix: str, name: str) -> np.ndarray:
    return np.load(DATA / f"{prefix}{name}.npy")


def run(prefix: str, bounds: SpeakerBounds | None = None, **options):
    clustering = VBxClustering(plda_dir=str(DATA / "plda"), **options)
    activities = load(prefix, "input_segmentations")
    embeddings = load(prefix, "input_embeddings")
    return clustering.details(activities, embeddings, bounds), activities


@pytest.mark.parametrize("prefix", CASES)
def test_vbx_matches_the_reference_step_by_step(prefix):
    found, activities = run(prefix)
    # the same kept embeddings, AHC initialisation and hard clusters: exactly
    np.testing.assert_array_equal(found.chunk_idx, load(prefix, "expected_train_chunk_idx"))
    np.testing.assert_array_equal(found.speaker_idx, load(prefix, "expected_train_speaker_idx"))
    np.testing.assert_array_equal(found.ahc_labels, load(prefix, "expected_ahc_labels"))
    # float64 throughout: differences are summation order only
    np.testing.assert_allclose(found.phi, load(prefix, "expected_plda_psi"), rtol=1e-10)
    expected_fea = load(prefix, "expected_fea")
    signs = np.sign(np.sum(found.features * expected_fea, axis=0))  # eigenvector signs
    np.testing.assert_allclose(found.features * signs, expected_fea, atol=1e-8)
    np.testing.assert_allclose(found.gamma, load(prefix, "expected_vbx_gamma"), atol=1e-5)
    np.testing.assert_allclose(found.pi, load(prefix, "expected_vbx_pi"), atol=1e-5)
    np.testing.assert_allclose(found.centroids, load(prefix, "expected_centroids"), atol=1e-10)
    # the reference's soft clusters are 2 - cosine distance, ours the cosine similarity
    np.testing.assert_allclose(
        found.soft_clusters, load(prefix, "expected_soft_clusters") - 1.0, atol=1e-10
    )
    assert not found.fallback

    reference = load(prefix, "expected_hard_clusters_pipeline")
    active = activities.sum(axis=1) > 0
    assert np.all(reference[~active] == -2) and np.all(found.hard_clusters[~active] == -1)
    if prefix == "case2_":
        # fewer clusters than local speakers: the reference's final renumbering counts its
        # "unassigned" marker as a label and shifts every cluster up by one; ours does not
        np.testing.assert_array_equal(found.hard_clusters[active], reference[active] - 1)
    else:
        np.testing.assert_array_equal(found.hard_clusters[active], reference[active])


def test_vbx_is_registered_with_the_reference_defaults():
    clustering = make_clustering("vbx")
    assert isinstance(clustering, VBxClustering)
    assert (
        clustering.ahc_threshold,
        clustering.fa,
        clustering.fb,
        clustering.lda_dim,
        clustering.max_iters,
        clustering.loop_probability,
        clustering.init_smoothing,
        clustering.plda_dir,
    ) == (0.6, 0.07, 0.8, 128, 20, 0.0, 7.0, "plda")
    with pytest.raises(ConfigError, match="loop_probability"):
        VBxClustering(loop_probability=1.0)


@pytest.mark.parametrize(
    "bounds, expected",
    [
        (SpeakerBounds(num_speakers=2), 2),
        (SpeakerBounds(max_speakers=3), 3),
        (SpeakerBounds(min_speakers=6), 6),
        (SpeakerBounds(min_speakers=2, max_speakers=5), 4),  # VBx's own answer is allowed
    ],
)
def test_out_of_bounds_vbx_falls_back_to_a_constrained_cut(bounds, expected, caplog):
    with caplog.at_level(logging.WARNING):
        found, activities = run("", bounds)
    assert found.fallback == (expected != 4)
    assert ("outside the allowed range" in caplog.text) == found.fallback
    active = activities.sum(axis=1) > 0
    assigned = found.hard_clusters[active]
    assert len(np.unique(assigned[assigned >= 0])) == expected
    assert found.centroids.shape == (expected, 256)
    # never two local speakers of one chunk in the same cluster
    for row in found.hard_clusters:
        used = row[row >= 0]
        assert len(used) == len(set(used))
    if expected == 4:
        np.testing.assert_array_equal(found.hard_clusters, run("")[0].hard_clusters)


@pytest.mark.parametrize("prefix, num_speakers", [("", 2), ("", 3), ("case2_", 2)])
def test_fewer_speakers_than_vbx_found_merges_whole_speakers(prefix, num_speakers):
    found, _ = run(prefix, SpeakerBounds(num_speakers=num_speakers))
    vbx_labels = run(prefix)[0].labels
    # each of VBx's speakers (here the generating speakers) ends up in one cluster: k-means on
    # the PLDA features merges speakers, it does not split one by recording condition
    for speaker in np.unique(vbx_labels):
        assert len(np.unique(found.labels[vbx_labels == speaker])) == 1


def test_forward_backward_equals_enumerating_every_path():
    rng = np.random.default_rng(0)
    log_lik = rng.normal(size=(4, 3))
    transitions = rng.dirichlet(np.ones(3), size=3)
    initial = rng.dirichlet(np.ones(3))
    gamma, log_total, _, _ = _forward_backward(log_lik, transitions, initial)
    joint = np.zeros((4, 3))
    total = 0.0
    for path in itertools.product(range(3), repeat=4):
        p = initial[path[0]] * np.exp(log_lik[0, path[0]])
        for t in range(1, 4):
            p *= transitions[path[t - 1], path[t]] * np.exp(log_lik[t, path[t]])
        total += p
        joint[np.arange(4), path] += p
    np.testing.assert_allclose(log_total, np.log(total), rtol=1e-12)
    np.testing.assert_allclose(gamma, joint / total, atol=1e-12)


def test_vbx_with_loop_probability_separates_two_clear_speakers():
    rng = np.random.default_rng(1)
    centres = rng.normal(scale=3.0, size=(2, 8))
    truth = np.repeat([0, 1, 0], 10)
    features = centres[truth] + rng.normal(size=(30, 8))
    init = np.arange(30) % 5  # a bad start: five interleaved clusters
    for loop in (0.0, 0.5, 0.9):
        result = vbx(features, np.full(8, 9.0), init, fa=0.3, fb=1.0, loop_probability=loop)
        kept = result.pi > 1e-7
        labels = np.argmax(result.gamma[:, kept], axis=1)
        assert kept.sum() == 2
        assert len({(a, b) for a, b in zip(truth, labels)}) == 2
        assert np.all(np.diff(result.elbo) > -1e-6)  # VB never lowers its bound
        np.testing.assert_allclose(result.gamma.sum(axis=1), 1.0)


def test_plda_files_are_checked(tmp_path):
    with pytest.raises(CheckpointError, match="no such PLDA directory"):
        PLDA.load(tmp_path / "absent")
    shutil.copy(DATA / "plda" / "xvec_transform.npz", tmp_path / "xvec_transform.npz")
    with pytest.raises(CheckpointError, match="plda.npz: no such file"):
        PLDA.load(tmp_path)
    np.savez(tmp_path / "plda.npz", mu=np.zeros(128), tr=np.eye(128))
    with pytest.raises(CheckpointError, match="missing array psi"):
        PLDA.load(tmp_path)
    np.savez(tmp_path / "plda.npz", mu=np.zeros(100), tr=np.eye(128), psi=np.ones(128))
    with pytest.raises(CheckpointError, match="mu has shape"):
        PLDA.load(tmp_path)
    plda = PLDA.load(DATA / "plda")
    with pytest.raises(ConfigError, match="lda_dim 200 exceeds"):
        plda.features(np.ones((2, 256)), 200)
    with pytest.raises(ConfigError, match="have 192 dimensions, the PLDA model expects 256"):
        plda.features(np.ones((2, 192)), 128)
    with pytest.raises(CheckpointError, match="no such PLDA directory"):
        VBxClustering(plda_dir=str(tmp_path / "absent")).prepare()
