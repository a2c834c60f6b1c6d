"""Span masking and utterance mixing, the two input corruptions of WavLM's pretraining.

Both draw from an explicit :class:`torch.Generator`, so a training step's corruption depends on
the seed and the step only (a resumed run redraws exactly what the uninterrupted run drew).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def span_mask(
    valid: torch.Tensor, prob: float, span: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Span masks as in wav2vec 2.0 / HuBERT / WavLM.

    Every valid frame ``t`` with ``t + span <= num_valid`` starts a masked span with probability
    ``prob``, independently; a span covers frames ``[t, t + span)``; spans may overlap.

    Parameters
    ----------
    valid
        ``(batch, num_frames)`` bool, the frames that hold audio (a prefix of each row).
    prob, span
        Start probability and span length in frames.
    generator
        Random source (on ``valid``'s device).

    Returns
    -------
    torch.Tensor
        ``(batch, num_frames)`` bool, true where the frame is masked.
    """
    batch, num_frames = valid.shape
    lengths = valid.sum(-1, keepdim=True)  # (B, 1)
    frames = torch.arange(num_frames, device=valid.device)[None, :]
    draws = torch.rand(batch, num_frames, generator=generator, device=valid.device)
    starts = (draws < prob) & (frames + span <= lengths)  # (B, T)
    # frame t is masked when a start lies in (t - span, t]: a running count over a window
    counts = torch.nn.functional.conv1d(
        starts.float()[:, None, :],
        torch.ones(1, 1, span, device=valid.device),
        padding=span - 1,
    )[:, 0, :num_frames]
    return counts > 0


def expected_mask_fraction(num_frames: int, prob: float, span: int) -> float:
    """Expected fraction of masked frames of :func:`span_mask` on ``num_frames`` valid frames.

    Frame ``t`` is covered by the starts ``s`` with ``max(0, t - span + 1) <= s <=
    min(t, num_frames - span)``; it is masked unless none of them starts:
    ``P = 1 - (1 - prob) ** count``.
    """
    if num_frames < span:
        return 0.0
    total = 0.0
    for t in range(num_frames):
        count = min(t, num_frames - span) - max(0, t - span + 1) + 1
        total += 1.0 - (1.0 - prob) ** max(count, 0)
    return total / num_frames


@dataclass
class MixInfo:
    """What :func:`mix_utterances` did to each item (for tests and logs).

    Attributes
    ----------
    mixed
        ``(batch,)`` bool, whether an interference was added.
    source
        ``(batch,)`` index of the batch item mixed in, ``-1`` for noise or none.
    start, length
        ``(batch,)`` first sample and number of samples of the added segment.
    source_start
        ``(batch,)`` first sample of the segment in the source item (0 for noise).
    ratio_db
        ``(batch,)`` drawn energy ratio (primary over interference, dB).
    """

    mixed: torch.Tensor
    source: torch.Tensor
    start: torch.Tensor
    length: torch.Tensor
    ratio_db: torch.Tensor
    source_start: torch.Tensor


def mix_utterances(
    waveforms: torch.Tensor,
    num_samples: torch.Tensor,
    prob: float,
    noise_fraction: float,
    min_ratio_db: float,
    max_ratio_db: float,
    max_fraction: float,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, MixInfo]:
    """WavLM's denoising input: add a segment of another utterance (or noise) to some items.

    Each item is chosen with probability ``prob``. Its interference is, with probability
    ``noise_fraction``, Gaussian noise, otherwise a segment of another item of the batch (taken
    from that item's audio before any mixing). The segment lasts a uniform number of samples in
    ``[1, max_fraction * num_samples]``, starts at a uniform position of the primary, and is
    scaled so that the mean power of the primary (over its audio) over the mean power of the
    segment equals a ratio drawn uniformly in ``[min_ratio_db, max_ratio_db]`` dB.

    Parameters
    ----------
    waveforms
        ``(batch, samples)`` primary audio (zero-padded past ``num_samples``).
    num_samples
        ``(batch,)`` audio samples of each item.
    prob, noise_fraction, min_ratio_db, max_ratio_db, max_fraction
        See above.
    generator
        Random source (on ``waveforms``' device).

    Returns
    -------
    tuple
        ``(mixed_waveforms, info)``; items not chosen are unchanged.
    """
    batch = waveforms.shape[0]
    device = waveforms.device
    out = waveforms.clone()

    def uniform(n: int = batch) -> torch.Tensor:
        return torch.rand(n, generator=generator, device=device)

    mixed = uniform() < prob
    use_noise = uniform() < noise_fraction
    if batch < 2:
        use_noise = torch.ones_like(use_noise)
    ratio_db = min_ratio_db + (max_ratio_db - min_ratio_db) * uniform()
    offset = (uniform() * max(batch - 1, 1)).long().clamp(max=max(batch - 2, 0)) + 1
    source = torch.where(use_noise, -1, (torch.arange(batch, device=device) + offset) % batch)
    lengths = num_samples.to(device).long()
    max_len = (lengths.double() * max_fraction).floor().long().clamp(min=1)
    seg_len = (uniform() * max_len).long().clamp(min=0) + 1
    seg_len = torch.minimum(seg_len, max_len)
    start = (uniform() * (lengths - seg_len + 1)).long()
    source_start_draw = uniform()
    noise = torch.randn(waveforms.shape, generator=generator, device=device)
    source_start = torch.zeros(batch, dtype=torch.long, device=device)
    for i in torch.nonzero(mixed).flatten().tolist():
        n, first = int(seg_len[i]), int(start[i])
        if source[i] >= 0:
            j = int(source[i])
            available = int(lengths[j])
            n = min(n, available)
            seg_len[i] = n
            j_first = int(source_start_draw[i] * (available - n + 1))
            source_start[i] = j_first
            segment = waveforms[j, j_first : j_first + n]
        else:
            segment = noise[i, :n]
        primary_power = waveforms[i, : int(lengths[i])].double().square().mean()
        segment_power = segment.double().square().mean()
        if segment_power <= 0 or primary_power <= 0:
            mixed[i] = False
            continue
        scale = torch.sqrt(primary_power / (segment_power * 10 ** (ratio_db[i].double() / 10)))
        out[i, first : first + n] += (segment.double() * scale).to(out.dtype)
    info = MixInfo(mixed, torch.where(mixed, source, -1), start, seg_len, ratio_db, source_start)
    return out, info
