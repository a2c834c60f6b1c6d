"""Fixtures shared by several test modules, over :mod:`slimdiar.testing`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from slimdiar import testing


@pytest.fixture
def one_thread():
    """Run the test with one torch thread (the pipeline's per-process setting), then restore."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tone_train_dev(tmp_path_factory) -> tuple[Path, Path]:
    """Training and development data directories of tone speakers (read-only: shared)."""
    return testing.write_tone_train_dev(tmp_path_factory.mktemp("tones"))


@pytest.fixture
def tone_datadir(tmp_path) -> Path:
    """A data directory of two 10 s tone conversations, in this test's own directory."""
    return testing.write_tone_datadir(tmp_path / "tones")


@pytest.fixture
def tone_embedding() -> testing.ToneEmbedding:
    """A speaker embedding that tells tone speakers apart."""
    return testing.ToneEmbedding()


@pytest.fixture
def tiny_eend_model() -> torch.nn.Module:
    """A random-init tiny diarization model (seed 0, eval mode)."""
    return testing.tiny_eend()


@pytest.fixture(scope="session")
def pretrain_corpus(tmp_path_factory) -> tuple[Path, Path]:
    """Train (6 x 4 s) and dev (2 x 2 s) audio trees of tone sequences (read-only: shared)."""
    root = tmp_path_factory.mktemp("audio")
    return (
        testing.write_tone_sequence_tree(root / "train", 6, 4.0, 0),
        testing.write_tone_sequence_tree(root / "dev", 2, 2.0, 1),
    )
