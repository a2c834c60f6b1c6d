"""Turn layout of a simulated conversation and turn-taking statistics of real or simulated ones.

The layout follows Landini et al. (2022), "From simulated mixtures to simulated conversations as
training data for end-to-end neural diarization": utterances of the speakers of a recording are
laid out one after the other; before each one the next speaker is chosen and the gap to the
conversation so far is drawn from a distribution of same-speaker pauses, of pauses between
different speakers, or of overlaps between different speakers.

:func:`measure_turn_taking` is the exact inverse of :func:`layout_conversation`: walking the
turns of an RTTM in onset order it classifies every transition the same way and collects the
pauses and overlaps, so that statistics can be estimated from a real RTTM file
(``--stats-from``) and checked on simulated output.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from slimdiar.simulate.config import GapDistribution, TurnTakingConfig

logger = logging.getLogger(__name__)

#: Shortest gap between two turns of one speaker when an overlap is cut, in seconds.
MIN_SELF_GAP_S = 0.1


@dataclass(frozen=True)
class Placement:
    """One utterance placed in a conversation.

    Parameters
    ----------
    speaker_index
        Index of the speaker among the speakers of the recording.
    utterance_index
        Index of the utterance in that speaker's list of utterances.
    onset_sample
        First sample of the utterance in the recording.
    """

    speaker_index: int
    utterance_index: int
    onset_sample: int


def layout_conversation(
    speaker_segments: Sequence[Sequence[np.ndarray]],
    turns: TurnTakingConfig,
    overlap_probability: float,
    sample_rate: int,
    rng: np.random.Generator,
    *,
    start_sample: int = 0,
    target_end_sample: int | None = None,
    max_turns: int | None = None,
) -> list[Placement]:
    """Lay out the utterances of a conversation in time.

    Each speaker's utterances are used in the given order (cycling when exhausted). The random
    numbers drawn do not depend on ``overlap_probability``, so two layouts with the same ``rng``
    state differ only in which speaker changes become overlaps.

    Parameters
    ----------
    speaker_segments
        ``speaker_segments[k][j]`` holds the speech segments of utterance ``j`` of speaker ``k``
        as an int array of shape (num_segments, 2): ``[start_sample, end_sample)`` relative to the
        utterance start, sorted, the first starting at 0 and the last ending at the utterance's
        length.
    turns
        Turn-taking statistics (the overlap probability in it is ignored).
    overlap_probability
        Probability that a change of speaker is an overlap.
    sample_rate
        Samples per second of the segment arrays.
    rng
        Random generator.
    start_sample
        Onset of the first utterance.
    target_end_sample
        Stop once the conversation reaches this sample.
    max_turns
        Stop after this many utterances.

    Returns
    -------
    list of Placement
        In the order the utterances were placed.
    """
    if target_end_sample is None and max_turns is None:
        raise ValueError("give target_end_sample or max_turns")
    num_speakers = len(speaker_segments)
    lengths = [[int(s[-1, 1]) for s in segments] for segments in speaker_segments]
    used = [0] * num_speakers
    last_end = [-sample_rate] * num_speakers  # end of each speaker's latest turn
    self_gap = round(MIN_SELF_GAP_S * sample_rate)
    placements: list[Placement] = []
    draws = _TransitionDraws(turns, sample_rate, rng)

    max_end = 0  # end of the turn that ends last
    current_speaker = -1  # speaker of that turn
    current_onset = 0  # onset of that turn
    previous_end = 0  # latest end among all other turns (never overlapped by a new turn)

    while True:
        if max_turns is not None and len(placements) >= max_turns:
            break
        if target_end_sample is not None and placements and max_end >= target_end_sample:
            break
        if not placements:
            speaker = int(rng.integers(num_speakers))
            onset = start_sample
        else:
            same, other, overlap_uniform, overlap, pause_other, pause_same = draws.next()
            if num_speakers == 1 or same:
                speaker = current_speaker
                onset = max_end + pause_same
            else:
                other = int(other * (num_speakers - 1))
                speaker = other if other < current_speaker else other + 1
                if overlap_uniform < overlap_probability:
                    # Never start before the current turn, never overlap a third speaker, never
                    # touch one's own previous turn.
                    onset = max(
                        max_end - overlap, current_onset, previous_end, last_end[speaker] + self_gap
                    )
                else:
                    onset = max_end + pause_other
        utterance = used[speaker] % len(lengths[speaker])
        used[speaker] += 1
        placements.append(Placement(speaker, utterance, onset))
        end = onset + lengths[speaker][utterance]
        last_end[speaker] = end
        if end >= max_end:
            previous_end = max_end
            max_end, current_speaker, current_onset = end, speaker, onset
        else:
            previous_end = max(previous_end, end)
    return placements


class _TransitionDraws:
    """Random numbers of the transitions between turns, drawn in blocks.

    Every transition consumes the same numbers whatever happens at it, so layouts that differ
    only in the overlap probability share all their draws.
    """

    BLOCK = 256

    def __init__(self, turns: TurnTakingConfig, sample_rate: int, rng: np.random.Generator):
        self.turns = turns
        self.sample_rate = sample_rate
        self.rng = rng
        self.rows: list = []
        self.position = 0

    def next(self) -> tuple[bool, float, float, int, int, int]:
        """``(same speaker, other-speaker uniform, overlap uniform, overlap, pauses)``."""
        if self.position == len(self.rows):
            size, rng, turns = self.BLOCK, self.rng, self.turns
            same = rng.random(size) < turns.same_speaker_probability
            other = rng.random(size)
            overlap_uniform = rng.random(size)

            def samples(distribution: GapDistribution) -> np.ndarray:
                values = distribution.sample_s(rng, size) * self.sample_rate
                return np.round(values).astype(np.int64)

            self.rows = list(
                zip(
                    same.tolist(),
                    other.tolist(),
                    overlap_uniform.tolist(),
                    samples(turns.overlap).tolist(),
                    samples(turns.pause_other_speaker).tolist(),
                    samples(turns.pause_same_speaker).tolist(),
                )
            )
            self.position = 0
        row = self.rows[self.position]
        self.position += 1
        return row


def placed_segments(
    placements: Iterable[Placement], speaker_segments: Sequence[Sequence[np.ndarray]]
) -> list[tuple[int, int, int]]:
    """Speech segments of a layout as ``(speaker_index, start_sample, end_sample)``."""
    result = []
    for placement in placements:
        segments = speaker_segments[placement.speaker_index][placement.utterance_index]
        for start, end in segments:
            result.append(
                (
                    placement.speaker_index,
                    placement.onset_sample + int(start),
                    placement.onset_sample + int(end),
                )
            )
    return result


@dataclass
class TurnTakingStats:
    """Turn-taking statistics of one or more conversations.

    Parameters
    ----------
    num_turns
        Number of turns (same-speaker segments merged when they touch or overlap).
    same_speaker_transitions
        Transitions where the next turn belongs to the speaker of the turn that ends last.
    pause_same_speaker_s
        Pauses of those transitions, in seconds.
    pause_other_speaker_s
        Pauses before turns of another speaker, in seconds.
    overlap_s
        Overlaps of turns of another speaker that start before the current turn ends, in seconds.
    speech_s
        Time during which at least one speaker talks, in seconds.
    overlapped_speech_s
        Time during which at least two speakers talk, in seconds.
    """

    num_turns: int = 0
    same_speaker_transitions: int = 0
    pause_same_speaker_s: list[float] = field(default_factory=list)
    pause_other_speaker_s: list[float] = field(default_factory=list)
    overlap_s: list[float] = field(default_factory=list)
    speech_s: float = 0.0
    overlapped_speech_s: float = 0.0

    @property
    def other_speaker_transitions(self) -> int:
        """Transitions to another speaker (pauses and overlaps)."""
        return len(self.pause_other_speaker_s) + len(self.overlap_s)

    @property
    def same_speaker_probability(self) -> float:
        """Fraction of transitions that stay with the same speaker."""
        total = self.same_speaker_transitions + self.other_speaker_transitions
        return self.same_speaker_transitions / total if total else 0.0

    @property
    def overlap_probability(self) -> float:
        """Fraction of speaker changes that are overlaps."""
        total = self.other_speaker_transitions
        return len(self.overlap_s) / total if total else 0.0

    @property
    def overlap_ratio(self) -> float:
        """Fraction of the speech time during which at least two speakers talk."""
        return self.overlapped_speech_s / self.speech_s if self.speech_s > 0 else 0.0

    def __add__(self, other: TurnTakingStats) -> TurnTakingStats:
        return TurnTakingStats(
            num_turns=self.num_turns + other.num_turns,
            same_speaker_transitions=self.same_speaker_transitions + other.same_speaker_transitions,
            pause_same_speaker_s=self.pause_same_speaker_s + other.pause_same_speaker_s,
            pause_other_speaker_s=self.pause_other_speaker_s + other.pause_other_speaker_s,
            overlap_s=self.overlap_s + other.overlap_s,
            speech_s=self.speech_s + other.speech_s,
            overlapped_speech_s=self.overlapped_speech_s + other.overlapped_speech_s,
        )

    def summary(self) -> dict:
        """Headline numbers as JSON-friendly data (means in seconds, ``None`` when unobserved)."""

        def mean(values: list[float]) -> float | None:
            return round(float(np.mean(values)), 4) if values else None

        return {
            "num_turns": self.num_turns,
            "speech_s": round(self.speech_s, 3),
            "overlap_ratio": round(self.overlap_ratio, 4),
            "same_speaker_probability": round(self.same_speaker_probability, 4),
            "overlap_probability": round(self.overlap_probability, 4),
            "pause_same_speaker_mean_s": mean(self.pause_same_speaker_s),
            "pause_other_speaker_mean_s": mean(self.pause_other_speaker_s),
            "overlap_mean_s": mean(self.overlap_s),
        }

    def to_turn_taking_config(self, *, min_count: int = 5) -> TurnTakingConfig:
        """Turn-taking configuration that reproduces these statistics.

        Pauses and overlaps become empirical distributions and the overlap ratio the target;
        a distribution observed fewer than ``min_count`` times keeps its default.

        Parameters
        ----------
        min_count
            Fewest observations needed to replace a default distribution.
        """
        defaults = TurnTakingConfig()

        def distribution(values: list[float], default: GapDistribution) -> GapDistribution:
            if len(values) < min_count:
                logger.warning(
                    "only %d observations of a gap, keeping the default distribution",
                    len(values),
                )
                return default
            return GapDistribution(samples_s=tuple(float(v) for v in values))

        return TurnTakingConfig(
            same_speaker_probability=min(self.same_speaker_probability, 0.95),
            pause_same_speaker=distribution(self.pause_same_speaker_s, defaults.pause_same_speaker),
            pause_other_speaker=distribution(
                self.pause_other_speaker_s, defaults.pause_other_speaker
            ),
            overlap=distribution(self.overlap_s, defaults.overlap),
            overlap_ratio=self.overlap_ratio,
            overlap_probability=None,
        )


def _placed_speech_and_overlap(
    placements: list[Placement], speaker_segments: Sequence[Sequence[np.ndarray]]
) -> tuple[float, float]:
    """Speech and overlapped speech, in samples, of a layout."""
    arrays = [speaker_segments[p.speaker_index][p.utterance_index] for p in placements]
    counts = np.array([a.shape[0] for a in arrays])
    segments = np.concatenate(arrays).astype(float)
    onsets = np.repeat([float(p.onset_sample) for p in placements], counts)
    speakers = np.repeat([float(p.speaker_index) for p in placements], counts)
    return _speech_and_overlap(speakers, segments[:, 0] + onsets, segments[:, 1] + onsets)


def merge_speaker_segments(
    segments: Iterable[tuple[str | int, float, float]],
) -> list[tuple[str | int, float, float]]:
    """Merge the touching or overlapping segments of each speaker.

    Parameters
    ----------
    segments
        ``(speaker, start, end)`` in any time unit; empty segments are dropped.

    Returns
    -------
    list of tuple
        ``(speaker, start, end)`` sorted by start, then end.
    """
    by_speaker: dict = {}
    for speaker, start, end in segments:
        if end > start:
            by_speaker.setdefault(speaker, []).append((start, end))
    merged = []
    for speaker, spans in by_speaker.items():
        spans.sort()
        current_start, current_end = spans[0]
        for start, end in spans[1:]:
            if start <= current_end:
                current_end = max(current_end, end)
            else:
                merged.append((speaker, current_start, current_end))
                current_start, current_end = start, end
        merged.append((speaker, current_start, current_end))
    merged.sort(key=lambda item: (item[1], item[2], str(item[0])))
    return merged


def _speech_and_overlap(
    speakers: np.ndarray, starts: np.ndarray, ends: np.ndarray
) -> tuple[float, float]:
    """Time with at least one and at least two speakers (vectorised; integer speaker ids)."""
    keep = ends > starts
    speakers, starts, ends = speakers[keep], starts[keep], ends[keep]
    if starts.size == 0:
        return 0.0, 0.0
    # Union of each speaker's segments: sort by (speaker, start); a segment opens a new run when
    # it starts after every earlier end of its speaker. Shifting each speaker by more than the
    # whole time span keeps the running maximum inside one speaker.
    order = np.lexsort((starts, speakers))
    speakers, starts, ends = speakers[order], starts[order], ends[order]
    span = float(ends.max() - min(starts.min(), 0)) + 1.0
    shift = speakers * span
    running_end = np.maximum.accumulate(ends + shift)
    opens = np.ones(starts.size, dtype=bool)
    opens[1:] = (starts[1:] + shift[1:]) > running_end[:-1]
    run = np.cumsum(opens) - 1
    run_starts = starts[opens]
    run_ends = np.zeros(run_starts.size)
    np.maximum.at(run_ends, run, running_end - shift)
    # Sweep over the run boundaries: ends before starts at equal times.
    times = np.concatenate([run_starts, run_ends])
    steps = np.concatenate([np.ones(run_starts.size), -np.ones(run_ends.size)])
    order = np.lexsort((steps, times))
    times, steps = times[order], steps[order]
    active = np.cumsum(steps)[:-1]
    spans = np.diff(times)
    return float(spans[active >= 1].sum()), float(spans[active >= 2].sum())


def speech_and_overlap_s(segments: Iterable[tuple[str | int, float, float]]) -> tuple[float, float]:
    """Time with at least one and with at least two speakers talking.

    Parameters
    ----------
    segments
        ``(speaker, start_s, end_s)`` of one recording.

    Returns
    -------
    tuple of float
        ``(speech_s, overlapped_speech_s)``.
    """
    segments = list(segments)
    if not segments:
        return 0.0, 0.0
    labels = [str(speaker) for speaker, _, _ in segments]
    _, speaker_ids = np.unique(labels, return_inverse=True)
    starts = np.array([start for _, start, _ in segments], dtype=float)
    ends = np.array([end for _, _, end in segments], dtype=float)
    return _speech_and_overlap(speaker_ids.astype(float), starts, ends)


def measure_turn_taking(segments: Iterable[tuple[str | int, float, float]]) -> TurnTakingStats:
    """Turn-taking statistics of one recording.

    Walking the turns in onset order, each turn after the first is compared with the turn that
    ends last so far: the same speaker is a same-speaker transition (a pause), another speaker
    starting after that end a pause, before it an overlap (of length ``end - onset``).

    Parameters
    ----------
    segments
        ``(speaker, start_s, end_s)`` of one recording, in any order.

    Returns
    -------
    TurnTakingStats
    """
    segments = list(segments)
    merged = merge_speaker_segments(segments)
    stats = TurnTakingStats(num_turns=len(merged))
    stats.speech_s, stats.overlapped_speech_s = speech_and_overlap_s(merged)
    if not merged:
        return stats
    current_speaker, _, max_end = merged[0]
    for speaker, start, end in merged[1:]:
        gap_s = start - max_end
        if speaker == current_speaker:
            stats.same_speaker_transitions += 1
            stats.pause_same_speaker_s.append(max(gap_s, 0.0))
        elif gap_s >= 0:
            stats.pause_other_speaker_s.append(gap_s)
        else:
            stats.overlap_s.append(-gap_s)
        if end >= max_end:
            current_speaker, max_end = speaker, end
    return stats


def calibrate_overlap_probability(
    utterance_segments: Sequence[np.ndarray],
    turns: TurnTakingConfig,
    target_ratio: float,
    sample_rate: int,
    *,
    speakers: tuple[int, int] = (2, 4),
    num_turns: int = 10000,
    seed: int = 0,
) -> float:
    """Probability of overlapping at a change of speaker that gives ``target_ratio`` of overlap.

    Long conversations are laid out (without audio) from utterances drawn from
    ``utterance_segments`` and the probability is found by bisection; the same random numbers
    are used for every candidate probability.

    Parameters
    ----------
    utterance_segments
        Speech segments of typical utterances of the source, each an int array of shape
        (num_segments, 2) as in :func:`layout_conversation`.
    turns
        Turn-taking statistics (its overlap settings are ignored).
    target_ratio
        Wanted fraction of overlapped speech, in [0, 1).
    sample_rate
        Samples per second of the segment arrays.
    speakers
        Range of the number of speakers per conversation (inclusive).
    num_turns
        Total number of utterances laid out per evaluation.
    seed
        Seed of the random numbers.

    Returns
    -------
    float
        Overlap probability in [0, 1]; 1 (with a warning) when even that gives less overlap.
    """
    if target_ratio <= 0:
        return 0.0
    rng = np.random.default_rng(seed)
    counts = list(range(speakers[0], speakers[1] + 1))
    conversations = []
    per_conversation = 250
    for index in range(max(1, num_turns // per_conversation)):
        count = max(2, counts[index % len(counts)])
        pools = [
            [utterance_segments[i] for i in rng.integers(len(utterance_segments), size=64)]
            for _ in range(count)
        ]
        conversations.append((pools, int(rng.integers(2**32))))

    def ratio(probability: float) -> float:
        speech_s = overlapped_s = 0.0
        for pools, layout_seed in conversations:
            placements = layout_conversation(
                pools,
                turns,
                probability,
                sample_rate,
                np.random.default_rng(layout_seed),
                max_turns=per_conversation,
            )
            speech, overlapped = _placed_speech_and_overlap(placements, pools)
            speech_s += speech
            overlapped_s += overlapped
        return overlapped_s / speech_s

    highest = ratio(1.0)
    if highest < target_ratio:
        logger.warning(
            "an overlap ratio of %.3f is out of reach with these utterances and overlap lengths "
            "(at most %.3f); overlapping at every change of speaker",
            target_ratio,
            highest,
        )
        return 1.0
    low, high = 0.0, 1.0
    for _ in range(11):
        middle = 0.5 * (low + high)
        if ratio(middle) < target_ratio:
            low = middle
        else:
            high = middle
    probability = 0.5 * (low + high)
    logger.info(
        "overlap probability %.4f gives an overlap ratio of %.3f", probability, target_ratio
    )
    return probability
