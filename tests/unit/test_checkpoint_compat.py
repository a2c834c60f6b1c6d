"""Checkpoints written by slimdiar 0.1.0 load with today's code and compute the same outputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from slimdiar.models.checkpoint import load_checkpoint
from slimdiar.models.eend import EEND
from slimdiar.models.wavlm import WavLM
from slimdiar.stages.prune import GATED_KIND, PruneSection, SparsityController, load_gated_student

OLD = Path(__file__).resolve().parents[1] / "data" / "checkpoints" / "v0.1.0"
# The expected outputs were computed with 2 torch threads; another thread count sums in another
# order (measured: 1.4e-6 on log-probabilities of magnitude ~3 with 1 thread). A wrong weight
# or layer would be off by orders of magnitude more.
ATOL = 1e-5


@pytest.fixture(scope="module")
def expected() -> dict[str, torch.Tensor]:
    return load_file(str(OLD / "expected.safetensors"))


def test_a_diarization_model_of_0_1_0_gives_the_same_log_probabilities(expected):
    model = EEND.from_pretrained(OLD / "eend-tiny").eval()
    with torch.no_grad():
        log_probs = model(expected["waveforms"])
    torch.testing.assert_close(log_probs, expected["eend_log_probs"], rtol=0, atol=ATOL)


def test_a_pruned_wavlm_of_0_1_0_gives_the_same_hidden_states(expected):
    model = WavLM.from_pretrained(OLD / "wavlm-tiny-pruned").eval()
    assert model.config.ffn_dim == [97, 93]
    assert model.config.remaining_heads == [[1, 2, 3], [0, 1, 2]]
    with torch.no_grad():
        hidden = model(expected["waveforms"])[-1]
    torch.testing.assert_close(hidden, expected["pruned_last_hidden"], rtol=0, atol=ATOL)


def test_a_stage_1_checkpoint_of_0_1_0_rebuilds_its_gated_student(expected):
    student = load_gated_student(OLD / "stage1-gated", PruneSection(sparsity=0.5))
    with torch.no_grad():
        gated = student(expected["waveforms"])[-1]
        pruned = student.prune().eval()(expected["waveforms"])[-1]
    torch.testing.assert_close(gated, expected["stage1_gated_last_hidden"], rtol=0, atol=ATOL)
    torch.testing.assert_close(pruned, expected["stage1_pruned_last_hidden"], rtol=0, atol=ATOL)


def test_the_multipliers_of_a_0_1_0_stage_1_checkpoint_load_into_the_controller():
    state, config, _ = load_checkpoint(OLD / "stage1-gated", kind=GATED_KIND)
    controller = SparsityController(0.5, 2.0)
    controller.load_state_dict(
        {k[len("controller.") :]: v for k, v in state.items() if k.startswith("controller.")}
    )
    assert controller.lambda1.item() == 0.25 and controller.lambda2.item() == -0.5
    assert config["layers"] == [1, 2]
