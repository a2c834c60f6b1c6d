"""Powerset encoding of speaker activities and the permutation-invariant powerset loss.

A chunk holds at most ``num_speakers`` local speakers, of whom at most ``max_set_size`` talk in any
one frame. Each frame is then one of ``sum_{k <= max_set_size} C(num_speakers, k)`` classes: the
empty set, every single speaker, every pair, ... (for 4 speakers and pairs: 1 + 4 + 6 = 11). The
classes are ordered by set size, then lexicographically::

    0: {}   1: {0}   2: {1}   3: {2}   4: {3}
    5: {0,1}  6: {0,2}  7: {0,3}  8: {1,2}  9: {1,3}  10: {2,3}

Two policies are fixed here and used everywhere:

* **Too many speakers in a chunk.** A target with more than ``num_speakers`` speakers keeps the
  ``num_speakers`` who talk most (over the valid frames; ties go to the lower index), in their
  original order; a target with fewer is zero-padded (:meth:`Powerset.fit_speakers`).
* **Too many speakers in a frame.** A frame where more than ``max_set_size`` speakers talk keeps
  the ``max_set_size`` of them who talk most in the chunk (ties go to the lower index); the others
  are dropped from that frame only (:meth:`Powerset.to_powerset`).

Masks are boolean tensors of shape ``(batch, num_frames)`` that are ``True`` on valid frames and
``False`` on padding; padded frames count neither in the speaker matching nor in the loss.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

MAX_EXHAUSTIVE_SPEAKERS = 8


@functools.lru_cache(maxsize=32)
def _permutations(num_speakers: int, device: torch.device) -> torch.Tensor:
    """Every permutation of ``range(num_speakers)``, identity first: ``(num_perms, speakers)``."""
    if num_speakers > MAX_EXHAUSTIVE_SPEAKERS:
        raise ValueError(
            f"speaker matching enumerates all permutations and supports at most "
            f"{MAX_EXHAUSTIVE_SPEAKERS} speakers, got {num_speakers}"
        )
    perms = list(itertools.permutations(range(num_speakers)))
    return torch.tensor(perms, dtype=torch.long, device=device).reshape(len(perms), num_speakers)


def _check_frames(name: str, tensor: torch.Tensor) -> None:
    if tensor.dim() != 3:
        raise ValueError(
            f"{name} must have shape (batch, num_frames, num_speakers or num_classes), "
            f"got {tuple(tensor.shape)}"
        )


def _valid_mask(mask: torch.Tensor | None, reference: torch.Tensor) -> torch.Tensor:
    """``mask`` as a float ``(batch, num_frames, 1)`` tensor (all ones when ``None``)."""
    batch_size, num_frames = reference.shape[:2]
    if mask is None:
        return reference.new_ones(batch_size, num_frames, 1, dtype=torch.float32)
    if tuple(mask.shape) != (batch_size, num_frames):
        raise ValueError(
            f"mask must have shape (batch, num_frames) = {(batch_size, num_frames)}, "
            f"got {tuple(mask.shape)}"
        )
    return mask.to(device=reference.device, dtype=torch.float32).unsqueeze(-1)


def pad_or_select_speakers(
    multilabel: torch.Tensor, num_speakers: int, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Bring a multilabel tensor to exactly ``num_speakers`` speakers.

    With more speakers, keep the ``num_speakers`` who are active on the most valid frames of each
    chunk (ties go to the lower index), in their original order; with fewer, append silent ones.

    Parameters
    ----------
    multilabel
        ``(batch, num_frames, any_num_speakers)`` 0/1 activities.
    num_speakers
        Number of speakers wanted.
    mask
        ``(batch, num_frames)``, ``True`` on valid frames; ``None`` means all frames are valid.

    Returns
    -------
    torch.Tensor
        ``(batch, num_frames, num_speakers)``, same dtype as ``multilabel``.
    """
    _check_frames("multilabel", multilabel)
    have = multilabel.shape[-1]
    if have == num_speakers:
        return multilabel
    if have < num_speakers:
        return F.pad(multilabel, (0, num_speakers - have))
    valid = _valid_mask(mask, multilabel)
    talk_frames = (multilabel.float() * valid).sum(dim=1)  # (batch, have)
    # stable sort on -talk time: ties keep the lower index first
    order = torch.sort(-talk_frames, dim=-1, stable=True).indices[:, :num_speakers]
    kept = torch.sort(order, dim=-1).values  # (batch, num_speakers), in original order
    index = kept.unsqueeze(1).expand(-1, multilabel.shape[1], -1)
    return torch.gather(multilabel, 2, index)


class Powerset(torch.nn.Module):
    """Conversion between multilabel speaker activities and powerset classes.

    Parameters
    ----------
    num_speakers
        Maximum number of speakers per chunk.
    max_set_size
        Maximum number of speakers active in one frame.

    Attributes
    ----------
    mapping
        ``(num_classes, num_speakers)`` 0/1 float buffer: row ``c`` marks the speakers of class
        ``c``.
    """

    mapping: torch.Tensor
    _class_of_bitmask: torch.Tensor
    _bit_values: torch.Tensor

    def __init__(self, num_speakers: int = 4, max_set_size: int = 2):
        super().__init__()
        if num_speakers < 1:
            raise ValueError(f"num_speakers must be >= 1, got {num_speakers}")
        if not 1 <= max_set_size <= num_speakers:
            raise ValueError(
                f"max_set_size must be in [1, num_speakers={num_speakers}], got {max_set_size}"
            )
        self.num_speakers = num_speakers
        self.max_set_size = max_set_size
        sets = [
            subset
            for size in range(max_set_size + 1)
            for subset in itertools.combinations(range(num_speakers), size)
        ]
        mapping = torch.zeros(len(sets), num_speakers)
        for index, subset in enumerate(sets):
            mapping[index, list(subset)] = 1.0
        self.register_buffer("mapping", mapping, persistent=False)
        # class index of each speaker bitmask (sum of 2**speaker), -1 for sets that are too large
        lookup = torch.full((2**num_speakers,), -1, dtype=torch.long)
        for index, subset in enumerate(sets):
            lookup[sum(2**s for s in subset)] = index
        self.register_buffer("_class_of_bitmask", lookup, persistent=False)
        self.register_buffer(
            "_bit_values", 2 ** torch.arange(num_speakers, dtype=torch.long), persistent=False
        )

    @property
    def num_classes(self) -> int:
        """Number of powerset classes (11 for 4 speakers and pairs)."""
        return int(self.mapping.shape[0])

    def extra_repr(self) -> str:
        """The speaker count, set size and class count, for ``repr``."""
        return (
            f"num_speakers={self.num_speakers}, max_set_size={self.max_set_size}, "
            f"num_classes={self.num_classes}"
        )

    # ------------------------------------------------------------------ conversions
    def to_multilabel(self, log_probs: torch.Tensor, soft: bool = False) -> torch.Tensor:
        """Decode powerset scores into per-speaker activities.

        Parameters
        ----------
        log_probs
            ``(batch, num_frames, num_classes)`` log-probabilities (the model output). Hard
            decoding only takes the argmax, so probabilities or logits work as well.
        soft
            If ``True``, return each speaker's probability of being active (the sum of the
            probabilities of the classes that contain it); ``log_probs`` must then be
            log-probabilities. If ``False``, return the speakers of the most likely class.

        Returns
        -------
        torch.Tensor
            ``(batch, num_frames, num_speakers)`` float activities (0/1 when ``soft`` is False).
        """
        _check_frames("log_probs", log_probs)
        if log_probs.shape[-1] != self.num_classes:
            raise ValueError(
                f"log_probs has {log_probs.shape[-1]} classes, the powerset has {self.num_classes}"
            )
        mapping = self.mapping.to(device=log_probs.device, dtype=torch.float32)
        if soft:
            return torch.exp(log_probs.float()) @ mapping
        return mapping[torch.argmax(log_probs, dim=-1)]

    def to_powerset(
        self, multilabel: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Encode per-speaker activities as powerset class indices.

        A frame with more than ``max_set_size`` active speakers keeps the ``max_set_size`` of them
        who are active on the most valid frames of the chunk (ties go to the lower speaker index).

        Parameters
        ----------
        multilabel
            ``(batch, num_frames, num_speakers)`` activities; values > 0.5 count as active.
        mask
            ``(batch, num_frames)``, ``True`` on valid frames; only used to rank speakers by
            talk time. ``None`` means all frames are valid.

        Returns
        -------
        torch.Tensor
            ``(batch, num_frames)`` long class indices.
        """
        _check_frames("multilabel", multilabel)
        if multilabel.shape[-1] != self.num_speakers:
            raise ValueError(
                f"multilabel has {multilabel.shape[-1]} speakers, the powerset has "
                f"{self.num_speakers}; use pad_or_select_speakers first"
            )
        active = (multilabel > 0.5).long()
        active = self._limit_overlap(active, mask)
        bitmask = (active * self._bit_values.to(active.device)).sum(dim=-1)
        return self._class_of_bitmask.to(active.device)[bitmask]

    def _limit_overlap(self, active: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Drop, in over-full frames, the active speakers who talk least in the chunk."""
        if self.max_set_size >= self.num_speakers:
            return active
        if not bool((active.sum(dim=-1) > self.max_set_size).any()):
            return active
        valid = _valid_mask(mask, active)
        talk_frames = (active.float() * valid).sum(dim=1)  # (batch, speakers)
        order = torch.sort(-talk_frames, dim=-1, stable=True).indices
        rank = torch.argsort(order, dim=-1)  # rank[b, s]: 0 for the most talkative speaker
        # ahead[b, s, k] = 1 if speaker k has a better rank than speaker s
        ahead = (rank.unsqueeze(-1) > rank.unsqueeze(-2)).long()
        num_ahead_active = torch.einsum("btk,bsk->bts", active, ahead)
        return active * (num_ahead_active < self.max_set_size).long()

    # ------------------------------------------------------------------ speaker matching
    def match_speakers(
        self,
        pred_multilabel: torch.Tensor,
        target_multilabel: torch.Tensor,
        mask: torch.Tensor | None = None,
        soft_pred_multilabel: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Permute the target speakers of each chunk to best agree with the prediction.

        The permutation minimises the number of valid (frame, speaker) cells where prediction and
        permuted target disagree. Among equally good permutations, the one closest to the soft
        prediction (sum of absolute differences) wins when ``soft_pred_multilabel`` is given,
        then the first in lexicographic order (the identity first). The target is first brought
        to ``num_speakers`` speakers with :func:`pad_or_select_speakers`.

        Parameters
        ----------
        pred_multilabel
            ``(batch, num_frames, num_speakers)`` 0/1 predicted activities.
        target_multilabel
            ``(batch, num_frames, any_num_speakers)`` 0/1 reference activities.
        mask
            ``(batch, num_frames)``, ``True`` on valid frames; ``None`` means all are valid.
        soft_pred_multilabel
            ``(batch, num_frames, num_speakers)`` speaker probabilities, used to break ties.

        Returns
        -------
        permuted_target
            ``(batch, num_frames, num_speakers)``: ``permuted_target[..., i]`` is the reference
            speaker matched with predicted speaker ``i``.
        permutation
            ``(batch, num_speakers)`` long: predicted speaker ``i`` is matched with (padded)
            reference speaker ``permutation[b, i]``.
        """
        _check_frames("pred_multilabel", pred_multilabel)
        target = pad_or_select_speakers(target_multilabel, self.num_speakers, mask)
        if pred_multilabel.shape != target.shape:
            raise ValueError(
                f"prediction {tuple(pred_multilabel.shape)} and target {tuple(target.shape)} "
                "differ in shape"
            )
        permutation = _best_permutation(pred_multilabel, target, mask, soft_pred_multilabel)
        index = permutation.unsqueeze(1).expand(-1, target.shape[1], -1)
        return torch.gather(target, 2, index), permutation


def _disagreement(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``(batch, speakers, speakers)``: sum over valid frames of ``|pred_i - target_j|``.

    ``target`` is 0/1, ``pred`` in [0, 1]; both are already zero on invalid frames.
    """
    pred_total = pred.sum(dim=1).unsqueeze(2)  # (batch, speakers, 1)
    target_total = target.sum(dim=1).unsqueeze(1)  # (batch, 1, speakers)
    return pred_total + target_total - 2.0 * (pred.transpose(1, 2) @ target)


def _best_permutation(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None,
    soft_pred: torch.Tensor | None = None,
) -> torch.Tensor:
    """``(batch, speakers)`` permutation of ``target`` speakers minimising disagreement.

    The cost is the number of (valid frame, speaker) cells where the hard prediction ``pred``
    and the permuted target differ. Ties are broken by the same distance measured on
    ``soft_pred`` (speaker probabilities) when given, then by the order of enumeration (identity
    first).
    """
    valid = _valid_mask(mask, pred)
    target = target.float() * valid
    num_speakers = pred.shape[-1]
    perms = _permutations(num_speakers, pred.device)  # (num_perms, speakers)
    rows = torch.arange(num_speakers, device=pred.device)
    hard = _disagreement(pred.float() * valid, target)
    cost = hard[:, rows, perms].sum(dim=-1)  # (batch, num_perms), integer valued
    if soft_pred is not None:
        soft = _disagreement(soft_pred.float() * valid, target)
        soft_cost = soft[:, rows, perms].sum(dim=-1)
        best = cost == cost.min(dim=-1, keepdim=True).values
        cost = torch.where(best, soft_cost, torch.full_like(soft_cost, math.inf))
    # argmin returns the first minimum: the identity wins remaining ties
    return perms[torch.argmin(cost, dim=-1)]


def permutation_invariant_powerset_loss(
    log_probs: torch.Tensor,
    target_multilabel: torch.Tensor,
    mask: torch.Tensor | None = None,
    powerset: Powerset | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Permutation-invariant powerset cross-entropy.

    The prediction is decoded to hard multilabel activities, the target speakers are permuted to
    best match it (:meth:`Powerset.match_speakers`; ties between equally good permutations go to
    the one closest to the soft speaker probabilities), the permuted target is encoded as powerset
    classes (:meth:`Powerset.to_powerset`, which resolves frames with too many speakers) and the
    cross-entropy is averaged over the valid frames.

    Parameters
    ----------
    log_probs
        ``(batch, num_frames, num_classes)`` log-probabilities.
    target_multilabel
        ``(batch, num_frames, any_num_speakers)`` 0/1 reference activities; more speakers than
        the powerset holds are reduced to the most talkative ones, fewer are zero-padded.
    mask
        ``(batch, num_frames)``, ``True`` on valid frames; ``None`` means all are valid.
    powerset
        The powerset of ``log_probs``; by default 4 speakers and pairs (11 classes).

    Returns
    -------
    loss
        Scalar mean cross-entropy over valid frames (0 when no frame is valid).
    permuted_target
        ``(batch, num_frames, num_speakers)`` permuted reference activities (before frames with
        too many speakers are reduced), aligned with the prediction's speakers.
    """
    if powerset is None:
        powerset = Powerset().to(log_probs.device)
    with torch.no_grad():
        pred = powerset.to_multilabel(log_probs)
        soft_pred = powerset.to_multilabel(log_probs, soft=True)
        permuted, _ = powerset.match_speakers(pred, target_multilabel, mask, soft_pred)
        classes = powerset.to_powerset(permuted, mask)
    nll = F.nll_loss(log_probs.transpose(1, 2), classes, reduction="none")  # (batch, frames)
    if mask is None:
        loss = nll.mean()
    else:
        weights = _valid_mask(mask, log_probs).squeeze(-1)
        loss = (nll * weights).sum() / weights.sum().clamp(min=1.0)
    return loss, permuted.to(target_multilabel.dtype)


@dataclass
class ChunkDER:
    """Frame-level diarization error counts summed over chunks.

    Parameters
    ----------
    missed_frames
        Speaker-frames of reference speech the system missed.
    false_alarm_frames
        Speaker-frames the system produced beyond the reference.
    confusion_frames
        Speaker-frames attributed to the wrong speaker.
    speech_frames
        Speaker-frames of reference speech (the denominator).
    """

    missed_frames: float = 0.0
    false_alarm_frames: float = 0.0
    confusion_frames: float = 0.0
    speech_frames: float = 0.0

    def __add__(self, other: ChunkDER) -> ChunkDER:
        return ChunkDER(
            self.missed_frames + other.missed_frames,
            self.false_alarm_frames + other.false_alarm_frames,
            self.confusion_frames + other.confusion_frames,
            self.speech_frames + other.speech_frames,
        )

    @property
    def der(self) -> float:
        """(missed + false alarm + confusion) / reference speech.

        Without reference speech: 0 if there is no error either, infinity otherwise.
        """
        if self.speech_frames == 0:
            return 0.0 if self.errors == 0 else math.inf
        return self.errors / self.speech_frames

    @property
    def errors(self) -> float:
        """Total erroneous speaker-frames."""
        return self.missed_frames + self.false_alarm_frames + self.confusion_frames

    def to_dict(self) -> dict:
        """Plain-JSON form: the four frame counts and the DER."""
        return {
            "missed_frames": self.missed_frames,
            "false_alarm_frames": self.false_alarm_frames,
            "confusion_frames": self.confusion_frames,
            "speech_frames": self.speech_frames,
            "der": self.der,
        }


def chunk_der(
    pred_multilabel: torch.Tensor,
    target_multilabel: torch.Tensor,
    mask: torch.Tensor | None = None,
) -> ChunkDER:
    """Frame-level DER of a batch of chunks, under the best speaker mapping of each chunk.

    Per valid frame with ``n_ref`` reference and ``n_sys`` system speakers, of whom ``n_correct``
    are matched: missed = max(0, n_ref - n_sys), false alarm = max(0, n_sys - n_ref),
    confusion = min(n_ref, n_sys) - n_correct. The mapping of each chunk maximises the matched
    speaker-frames (this minimises the chunk's error).

    Parameters
    ----------
    pred_multilabel
        ``(batch, num_frames, pred_speakers)`` 0/1 system activities.
    target_multilabel
        ``(batch, num_frames, ref_speakers)`` 0/1 reference activities.
    mask
        ``(batch, num_frames)``, ``True`` on valid frames; ``None`` means all are valid.

    Returns
    -------
    ChunkDER
        Error counts summed over the batch.
    """
    _check_frames("pred_multilabel", pred_multilabel)
    _check_frames("target_multilabel", target_multilabel)
    if pred_multilabel.shape[:2] != target_multilabel.shape[:2]:
        raise ValueError(
            f"prediction {tuple(pred_multilabel.shape)} and target "
            f"{tuple(target_multilabel.shape)} differ in (batch, num_frames)"
        )
    num_speakers = max(pred_multilabel.shape[-1], target_multilabel.shape[-1])
    pred = F.pad((pred_multilabel > 0.5).float(), (0, num_speakers - pred_multilabel.shape[-1]))
    target = F.pad(
        (target_multilabel > 0.5).float(), (0, num_speakers - target_multilabel.shape[-1])
    )
    valid = _valid_mask(mask, pred)
    pred, target = pred * valid, target * valid
    with torch.no_grad():
        if num_speakers == 0:
            return ChunkDER()
        # a mapping that maximises matched speech is one that minimises disagreement
        permutation = _best_permutation(pred, target, mask)
        index = permutation.unsqueeze(1).expand(-1, target.shape[1], -1)
        target = torch.gather(target, 2, index)
        n_ref = target.sum(dim=-1)
        n_sys = pred.sum(dim=-1)
        n_correct = (pred * target).sum(dim=-1)
        return ChunkDER(
            missed_frames=float((n_ref - n_sys).clamp(min=0).sum()),
            false_alarm_frames=float((n_sys - n_ref).clamp(min=0).sum()),
            confusion_frames=float((torch.minimum(n_ref, n_sys) - n_correct).sum()),
            speech_frames=float(n_ref.sum()),
        )
