import itertools

import pytest
import torch
import torch.nn.functional as F

from slimdiar.models.powerset import (
    ChunkDER,
    Powerset,
    chunk_der,
    pad_or_select_speakers,
    permutation_invariant_powerset_loss,
)

CLASS_SETS = [(), (0,), (1,), (2,), (3,), (0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]


def activity(num_frames: int, speakers: dict[int, list[int]], num_speakers: int) -> torch.Tensor:
    """(1, num_frames, num_speakers) 0/1 tensor with speaker -> active frames."""
    out = torch.zeros(1, num_frames, num_speakers)
    for speaker, frames in speakers.items():
        out[0, frames, speaker] = 1.0
    return out


def favouring(classes: list[int], seed: int = 0, margin: float = 4.0) -> torch.Tensor:
    """(1, num_frames, 11) log-probabilities whose argmax is ``classes`` (not too confident)."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(1, len(classes), 11, generator=generator)
    logits[0, torch.arange(len(classes)), classes] += margin
    return F.log_softmax(logits, dim=-1)


def expected_loss(log_probs: torch.Tensor, classes: list[int]) -> torch.Tensor:
    return -log_probs[0, torch.arange(len(classes)), classes].mean()


# ---------------------------------------------------------------------- encoding


def test_class_order_and_mapping():
    powerset = Powerset(4, 2)
    assert powerset.num_classes == 11
    expected = torch.zeros(11, 4)
    for index, subset in enumerate(CLASS_SETS):
        expected[index, list(subset)] = 1.0
    assert torch.equal(powerset.mapping, expected)
    assert Powerset(3, 3).num_classes == 8
    assert Powerset(4, 1).num_classes == 5


def test_round_trip_every_class_and_random_frames():
    powerset = Powerset()
    classes = torch.arange(11).reshape(1, 11)
    multilabel = powerset.to_multilabel(F.one_hot(classes, 11).float().log())
    assert torch.equal(multilabel[0], powerset.mapping)
    assert torch.equal(powerset.to_powerset(multilabel), classes)

    random_classes = torch.randint(0, 11, (3, 50), generator=torch.Generator().manual_seed(1))
    decoded = powerset.to_multilabel(F.one_hot(random_classes, 11).float())
    assert decoded.shape == (3, 50, 4)
    assert torch.equal(powerset.to_powerset(decoded), random_classes)


def test_soft_decoding_sums_class_probabilities():
    powerset = Powerset()
    probs = torch.zeros(1, 1, 11)
    probs[0, 0, 1] = 0.5  # {0}
    probs[0, 0, 5] = 0.3  # {0, 1}
    probs[0, 0, 0] = 0.2  # {}
    soft = powerset.to_multilabel(probs.log(), soft=True)
    assert torch.allclose(soft, torch.tensor([[[0.8, 0.3, 0.0, 0.0]]]))
    assert torch.equal(powerset.to_multilabel(probs.log()), torch.tensor([[[1.0, 0, 0, 0]]]))


def test_overfull_frame_keeps_most_talkative_speakers():
    powerset = Powerset()
    # speaker 2 talks 4 frames, 0 and 1 talk 2 frames each (tie: lower index wins)
    target = activity(5, {0: [0, 1], 1: [1, 2], 2: [1, 2, 3, 4]}, 4)
    assert powerset.to_powerset(target).tolist() == [[1, 6, 8, 3, 3]]
    # four speakers at once: speaker 3 talks most, then speaker 1
    target = activity(3, {0: [0], 1: [0, 1], 2: [0], 3: [0, 1, 2]}, 4)
    assert powerset.to_powerset(target).tolist() == [[9, 9, 4]]


def test_overfull_frame_ranking_ignores_masked_frames():
    powerset = Powerset()
    target = activity(4, {0: [0, 1, 2], 1: [0], 2: [0, 3]}, 4)
    # all frames valid: speaker 0 (3 frames) and speaker 2 (2 frames) are kept in frame 0
    assert powerset.to_powerset(target)[0, 0].item() == 6
    mask = torch.tensor([[True, False, False, True]])
    # valid frames only: speaker 2 has 2 frames, speakers 0 and 1 one each -> {0, 2} still,
    # but masking frame 3 as well makes it a three-way tie -> {0, 1}
    assert powerset.to_powerset(target, mask)[0, 0].item() == 6
    mask = torch.tensor([[True, False, False, False]])
    assert powerset.to_powerset(target, mask)[0, 0].item() == 5


def test_pad_or_select_speakers():
    five = activity(3, {0: [0], 1: [0, 1, 2], 2: [1, 2], 3: [2], 4: [0, 1]}, 5)
    kept = pad_or_select_speakers(five, 4)
    # speaker 0 and 3 tie with one frame: the lower index (0) is kept; original order kept
    assert torch.equal(kept, five[..., [0, 1, 2, 4]])
    one = activity(3, {0: [1]}, 1)
    padded = pad_or_select_speakers(one, 4)
    assert padded.shape == (1, 3, 4)
    assert torch.equal(padded[..., 0], one[..., 0]) and padded[..., 1:].sum() == 0


def test_bad_shapes_are_reported():
    powerset = Powerset()
    with pytest.raises(ValueError, match="has 3 speakers, the powerset has 4"):
        powerset.to_powerset(torch.zeros(1, 2, 3))
    with pytest.raises(ValueError, match="has 7 classes"):
        powerset.to_multilabel(torch.zeros(1, 2, 7))
    with pytest.raises(ValueError, match=r"mask must have shape"):
        permutation_invariant_powerset_loss(
            torch.zeros(1, 2, 11), torch.zeros(1, 2, 4), torch.ones(1, 3, dtype=torch.bool)
        )
    with pytest.raises(ValueError, match="max_set_size"):
        Powerset(2, 3)


# ---------------------------------------------------------------------- loss


@pytest.mark.parametrize("num_target_speakers", [0, 4])
def test_loss_chunk_without_speakers(num_target_speakers):
    log_probs = favouring([0, 5, 1, 0], seed=3)
    target = torch.zeros(1, 4, num_target_speakers)
    loss, permuted = permutation_invariant_powerset_loss(log_probs, target)
    assert torch.allclose(loss, expected_loss(log_probs, [0, 0, 0, 0]))
    assert permuted.shape == (1, 4, 4) and permuted.sum() == 0


def test_loss_one_speaker_is_matched_to_predicted_slot():
    # the model says speaker 2 talks in frames 1-2; the reference has a single speaker there
    log_probs = favouring([0, 3, 3, 0], seed=4)
    target = activity(4, {0: [1, 2]}, 1)
    loss, permuted = permutation_invariant_powerset_loss(log_probs, target)
    assert torch.allclose(loss, expected_loss(log_probs, [0, 3, 3, 0]))
    assert permuted[0, :, 2].tolist() == [0, 1, 1, 0]
    assert permuted.sum() == 2


def test_loss_three_speakers_with_three_way_overlap():
    # reference: s0 in frames 0-1, s1 in 1-2, s2 in 1-4 (frame 1: all three talk)
    target = activity(5, {0: [0, 1], 1: [1, 2], 2: [1, 2, 3, 4]}, 3)
    # prediction slots: 1 <-> s0, 0 <-> s1, 3 <-> s2, 2 silent (permutation [1, 0, 3, 2])
    log_probs = favouring([2, 7, 7, 4, 4], seed=5)
    loss, permuted = permutation_invariant_powerset_loss(log_probs, target)
    padded = F.pad(target, (0, 1))
    assert torch.equal(permuted, padded[..., [1, 0, 3, 2]])
    assert permuted[0, 1].sum() == 3  # the returned target keeps the three-way overlap
    # in frame 1, slot 3 (4 frames) is kept, then slots 0 and 1 tie (2 frames): slot 0 wins
    assert torch.allclose(loss, expected_loss(log_probs, [2, 7, 7, 4, 4]))


def test_loss_five_speakers_keeps_four_most_talkative():
    # talk frames: s0 1, s1 5, s2 3, s3 2, s4 4 -> s0 is dropped; kept in order s1 s2 s3 s4
    target = activity(6, {0: [0], 1: [1, 2, 3, 4, 5], 2: [2, 3, 4], 3: [4, 5], 4: [0, 1, 3, 5]}, 5)
    # over-full frames (3, 4, 5) keep the two most talkative of slots (s1 > s4 > s2 > s3)
    classes = [4, 7, 5, 7, 5, 7]
    log_probs = favouring(classes, seed=6)
    loss, permuted = permutation_invariant_powerset_loss(log_probs, target)
    assert torch.equal(permuted, target[..., [1, 2, 3, 4]])
    assert torch.allclose(loss, expected_loss(log_probs, classes))


def test_loss_is_invariant_to_target_speaker_order():
    generator = torch.Generator().manual_seed(7)
    log_probs = F.log_softmax(torch.randn(3, 40, 11, generator=generator) * 3, dim=-1)
    target = (torch.rand(3, 40, 4, generator=generator) < 0.35).float()  # some 3-way overlaps
    assert (target.sum(-1) > 2).any()
    mask = torch.rand(3, 40, generator=generator) < 0.9
    reference, reference_permuted = permutation_invariant_powerset_loss(log_probs, target, mask)
    for perm in itertools.permutations(range(4)):
        loss, permuted = permutation_invariant_powerset_loss(log_probs, target[..., perm], mask)
        assert torch.allclose(loss, reference)
        assert torch.equal(permuted, reference_permuted)


def test_loss_is_zero_for_confident_correct_prediction():
    generator = torch.Generator().manual_seed(8)
    powerset = Powerset()
    classes = torch.randint(0, 11, (2, 30), generator=generator)
    target = powerset.to_multilabel(F.one_hot(classes, 11).float())
    shuffled = target[..., [2, 0, 3, 1]]
    log_probs = F.log_softmax(50.0 * F.one_hot(classes, 11).float(), dim=-1)
    loss, permuted = permutation_invariant_powerset_loss(log_probs, shuffled)
    assert loss.item() < 1e-6
    assert torch.equal(permuted, target)
    # an unconfident or wrong prediction costs more
    wrong, _ = permutation_invariant_powerset_loss(log_probs.roll(1, dims=1), shuffled)
    assert wrong.item() > 1.0


def test_loss_ignores_masked_frames_and_backpropagates():
    generator = torch.Generator().manual_seed(9)
    logits = torch.randn(2, 20, 11, generator=generator, requires_grad=True)
    target = (torch.rand(2, 20, 3, generator=generator) < 0.3).float()
    mask = torch.ones(2, 20, dtype=torch.bool)
    mask[1, 12:] = False
    loss, _ = permutation_invariant_powerset_loss(F.log_softmax(logits, -1), target, mask)
    loss.backward()
    assert torch.all(logits.grad[1, 12:] == 0) and logits.grad[1, :12].abs().sum() > 0
    # garbage in padded frames changes nothing
    noisy = logits.detach().clone()
    noisy[1, 12:] = torch.randn(8, 11) * 10
    noisy_target = target.clone()
    noisy_target[1, 12:] = 1.0
    loss2, _ = permutation_invariant_powerset_loss(F.log_softmax(noisy, -1), noisy_target, mask)
    assert torch.allclose(loss.detach(), loss2)
    # the mean runs over valid frames only
    per_chunk = [
        permutation_invariant_powerset_loss(
            F.log_softmax(logits[i : i + 1, :n], -1), target[i : i + 1, :n]
        )[0].detach()
        for i, n in [(0, 20), (1, 12)]
    ]
    assert torch.allclose(loss.detach(), (per_chunk[0] * 20 + per_chunk[1] * 12) / 32)
    nothing_valid = torch.zeros(2, 20, dtype=torch.bool)
    empty, _ = permutation_invariant_powerset_loss(F.log_softmax(logits, -1), target, nothing_valid)
    assert empty.item() == 0.0


# ---------------------------------------------------------------------- chunk DER


def test_chunk_der_hand_computed():
    # reference: s0 in frames 0, 1, 4; s1 in frames 1, 2
    target = activity(5, {0: [0, 1, 4], 1: [1, 2]}, 2)
    # system: slot 1 = s0 in frames 0-1, slot 0 = s1 in frame 2 but also in frame 4 (confusion),
    # slot 2 talks in frame 3 (false alarm); frame 1 misses s1
    pred = activity(5, {0: [2, 4], 1: [0, 1], 2: [3]}, 3)
    result = chunk_der(pred, target)
    assert result == ChunkDER(1.0, 1.0, 1.0, 5.0)
    assert result.der == pytest.approx(3 / 5)
    # masking frame 3 removes the false alarm
    mask = torch.tensor([[True, True, True, False, True]])
    assert chunk_der(pred, target, mask) == ChunkDER(1.0, 0.0, 1.0, 5.0)
    # each chunk gets its own mapping: a second chunk with swapped reference scores the same
    batch = chunk_der(torch.cat([pred, pred]), torch.cat([target, target[..., [1, 0]]]))
    assert batch == result + result
    assert batch.to_dict()["der"] == pytest.approx(3 / 5)


def test_chunk_der_perfect_and_empty():
    target = activity(4, {0: [0, 1], 1: [1, 3], 2: [2]}, 3)
    assert chunk_der(target[..., [2, 0, 1]], target).errors == 0
    silent = torch.zeros(1, 4, 4)
    assert chunk_der(silent, silent).der == 0.0
    assert chunk_der(target, silent[..., :0]).false_alarm_frames == 5.0
