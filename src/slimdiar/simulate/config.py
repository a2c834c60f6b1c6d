"""Configuration of the conversation simulator.

Three dataclasses describe a simulation:

- :class:`GapDistribution`: how long a pause or an overlap between two consecutive turns lasts,
  either a truncated, shifted exponential given by its mean, or an empirical distribution given
  by observed values (estimated from a real RTTM file).
- :class:`TurnTakingConfig`: who speaks next and how turns are spaced (same-speaker pauses,
  pauses and overlaps between different speakers, and how often speakers overlap: either a
  target overlap ratio or a fixed overlap probability).
- :class:`SimulationConfig`: one recording: length, number of speakers, levels, noise and
  reverberation, sample rate.

The defaults describe meeting-like conversations: about 12 % of the speech is overlapped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from slimdiar.errors import ConfigError
from slimdiar.frames import SAMPLE_RATE

NOISE_TYPES = ("white", "pink", "babble")


@lru_cache(maxsize=256)
def _exponential_scale_s(mean_s: float, min_s: float, max_s: float) -> float:
    """Scale of an exponential that, shifted by ``min_s`` and cut at ``max_s``, has mean ``mean_s``.

    The mean of a truncated exponential grows monotonically with its scale, from 0 (scale -> 0)
    to half the interval (scale -> infinity), so bisection finds it.
    """
    width_s = max_s - min_s
    target_s = mean_s - min_s

    def truncated_mean(scale_s: float) -> float:
        ratio = width_s / scale_s
        if ratio > 700:
            return scale_s
        return scale_s - width_s / math.expm1(ratio)

    low, high = 1e-9, 1.0
    while truncated_mean(high) < target_s:
        high *= 2.0
    for _ in range(100):
        middle = 0.5 * (low + high)
        if truncated_mean(middle) < target_s:
            low = middle
        else:
            high = middle
    return 0.5 * (low + high)


@dataclass(frozen=True)
class GapDistribution:
    """Distribution of the length of a pause or an overlap, in seconds.

    With no ``samples_s`` it is an exponential distribution shifted to start at ``min_s`` and
    truncated at ``max_s``, whose scale is chosen so that its mean is exactly ``mean_s``. With
    ``samples_s`` it is the empirical distribution of those values (each drawn with equal
    probability); ``mean_s``, ``min_s`` and ``max_s`` are then ignored.

    Parameters
    ----------
    mean_s
        Mean length in seconds (``min_s < mean_s < (min_s + max_s) / 2``).
    min_s
        Shortest length in seconds (>= 0).
    max_s
        Longest length in seconds.
    samples_s
        Observed lengths in seconds (all >= 0) for an empirical distribution.
    """

    mean_s: float = 0.5
    min_s: float = 0.0
    max_s: float = 4.0
    samples_s: tuple[float, ...] = ()

    def validate(self, name: str) -> None:
        """Raise :class:`ConfigError` (naming the distribution ``name``) if it is unusable."""
        if self.samples_s:
            values = np.asarray(self.samples_s, dtype=float)
            if not np.all(np.isfinite(values)) or np.any(values < 0):
                raise ConfigError(f"{name}: observed lengths must be finite and >= 0 seconds")
            return
        if not (0.0 <= self.min_s < self.mean_s < self.max_s):
            raise ConfigError(
                f"{name}: need 0 <= min_s < mean_s < max_s, got min_s={self.min_s}, "
                f"mean_s={self.mean_s}, max_s={self.max_s}"
            )
        if self.mean_s >= 0.5 * (self.min_s + self.max_s):
            raise ConfigError(
                f"{name}: an exponential between {self.min_s} s and {self.max_s} s cannot have "
                f"mean {self.mean_s} s; raise max_s above {2 * self.mean_s - self.min_s:g} s"
            )

    @property
    def is_empirical(self) -> bool:
        """Whether the distribution is given by observed values."""
        return bool(self.samples_s)

    def expected_s(self) -> float:
        """Mean length in seconds."""
        if self.samples_s:
            return float(np.mean(self.samples_s))
        return float(self.mean_s)

    def sample_s(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """Draw ``size`` lengths in seconds, shape (size,), from ``size`` uniform numbers."""
        uniform = rng.random(size)
        if self.samples_s:
            values = np.asarray(self.samples_s, dtype=float)
            return values[np.minimum((uniform * values.size).astype(np.int64), values.size - 1)]
        scale_s = _exponential_scale_s(self.mean_s, self.min_s, self.max_s)
        # Inverse CDF of the exponential restricted to [0, max_s - min_s].
        cut = -math.expm1(-(self.max_s - self.min_s) / scale_s)
        return self.min_s - scale_s * np.log1p(-uniform * cut)

    def to_dict(self) -> dict:
        """The distribution as JSON-friendly data (empirical ones summarised, not listed)."""
        if self.samples_s:
            values = np.asarray(self.samples_s)
            return {
                "kind": "empirical",
                "count": int(values.size),
                "mean_s": round(float(values.mean()), 4),
                "median_s": round(float(np.median(values)), 4),
                "max_s": round(float(values.max()), 4),
            }
        return {
            "kind": "exponential",
            "mean_s": self.mean_s,
            "min_s": self.min_s,
            "max_s": self.max_s,
        }


@dataclass(frozen=True)
class TurnTakingConfig:
    """How the turns of a simulated conversation follow each other.

    After each turn the next speaker is the speaker of the turn that ends last with probability
    ``same_speaker_probability`` (a continuation after a same-speaker pause), otherwise one of the
    other speakers chosen uniformly. A change of speaker is an overlap with probability
    ``overlap_probability`` (the new turn starts before the current one ends), otherwise a pause.

    Exactly one of ``overlap_ratio`` and ``overlap_probability`` is set. With ``overlap_ratio``
    the overlap probability is calibrated, by simulating the turn layout with the actual
    utterance lengths of the speech source, so that this fraction of the speech time holds two
    speakers.

    Parameters
    ----------
    same_speaker_probability
        Probability that a turn is followed by another turn of the same speaker, in [0, 1).
        In a recording with a single speaker every turn is a continuation.
    pause_same_speaker
        Pause between two turns of one speaker, in seconds.
    pause_other_speaker
        Pause before a turn of another speaker, in seconds.
    overlap
        Overlap with the current turn when another speaker starts early, in seconds. The overlap
        is cut so that it never exceeds the current turn and never involves a third speaker.
    overlap_ratio
        Target fraction of the speech time (time with at least one speaker) during which two
        speakers talk, in [0, 1).
    overlap_probability
        Fixed probability, in [0, 1], that a change of speaker is an overlap.
    """

    same_speaker_probability: float = 0.1
    pause_same_speaker: GapDistribution = field(
        default_factory=lambda: GapDistribution(mean_s=0.6, min_s=0.1, max_s=4.0)
    )
    pause_other_speaker: GapDistribution = field(
        default_factory=lambda: GapDistribution(mean_s=0.5, min_s=0.0, max_s=4.0)
    )
    overlap: GapDistribution = field(
        default_factory=lambda: GapDistribution(mean_s=0.7, min_s=0.0, max_s=4.0)
    )
    overlap_ratio: float | None = 0.12
    overlap_probability: float | None = None

    def validate(self) -> None:
        """Raise :class:`ConfigError` if the configuration is unusable."""
        if not 0.0 <= self.same_speaker_probability < 1.0:
            raise ConfigError(
                f"same_speaker_probability must be in [0, 1), got {self.same_speaker_probability}"
            )
        self.pause_same_speaker.validate("pause_same_speaker")
        self.pause_other_speaker.validate("pause_other_speaker")
        self.overlap.validate("overlap")
        if (self.overlap_ratio is None) == (self.overlap_probability is None):
            raise ConfigError(
                "give exactly one of overlap_ratio (a target, calibrated) and "
                "overlap_probability (used as is)"
            )
        if self.overlap_ratio is not None and not 0.0 <= self.overlap_ratio < 1.0:
            raise ConfigError(f"overlap_ratio must be in [0, 1), got {self.overlap_ratio}")
        if self.overlap_probability is not None and not 0.0 <= self.overlap_probability <= 1.0:
            raise ConfigError(
                f"overlap_probability must be in [0, 1], got {self.overlap_probability}"
            )

    def to_dict(self) -> dict:
        """The configuration as JSON-friendly data."""
        return {
            "same_speaker_probability": self.same_speaker_probability,
            "pause_same_speaker": self.pause_same_speaker.to_dict(),
            "pause_other_speaker": self.pause_other_speaker.to_dict(),
            "overlap": self.overlap.to_dict(),
            "overlap_ratio": self.overlap_ratio,
            "overlap_probability": self.overlap_probability,
        }


@dataclass(frozen=True)
class SimulationConfig:
    """One simulated recording: its length, speakers, levels and acoustics.

    Parameters
    ----------
    duration_s
        Target length of a recording in seconds: turns are added until the conversation reaches
        it, so a recording is at most one turn (plus ``edge_silence_s``) longer.
    min_speakers, max_speakers
        Range of the number of speakers per recording (drawn uniformly, inclusive).
    turns
        Turn-taking statistics.
    sample_rate
        Sample rate of the written audio in Hz.
    edge_silence_s
        Silence before the first and after the last turn, in seconds.
    speaker_gain_db
        Range of a random gain in dB applied to each speaker of a recording (utterances are first
        brought to the same level).
    level_dbfs
        Level of the mixed speech (RMS over the samples where someone speaks), in dB full scale;
        the mixture is scaled down further if it would clip.
    noise_snr_db
        Range of the signal-to-noise ratio in dB of the added noise, or ``None`` for no noise.
    noise_types
        Kinds of noise drawn from (uniformly) when noise is added: ``"white"``, ``"pink"`` and
        ``"babble"`` (other speakers of the same split, not in the conversation).
    reverb
        Whether each speaker is convolved with its own synthetic room impulse response.
    rt60_s
        Range of the reverberation time (60 dB decay) in seconds of the synthetic responses.
    """

    duration_s: float = 60.0
    min_speakers: int = 2
    max_speakers: int = 4
    turns: TurnTakingConfig = field(default_factory=TurnTakingConfig)
    sample_rate: int = SAMPLE_RATE
    edge_silence_s: float = 0.5
    speaker_gain_db: tuple[float, float] = (-3.0, 3.0)
    level_dbfs: float = -26.0
    noise_snr_db: tuple[float, float] | None = None
    noise_types: tuple[str, ...] = NOISE_TYPES
    reverb: bool = False
    rt60_s: tuple[float, float] = (0.2, 0.6)

    def validate(self) -> None:
        """Raise :class:`ConfigError` if the configuration is unusable."""
        if not self.duration_s > 0:
            raise ConfigError(f"duration_s must be > 0, got {self.duration_s}")
        if not 1 <= self.min_speakers <= self.max_speakers:
            raise ConfigError(
                f"need 1 <= min_speakers <= max_speakers, got {self.min_speakers}-"
                f"{self.max_speakers}"
            )
        if self.sample_rate < 1000:
            raise ConfigError(f"sample_rate must be >= 1000 Hz, got {self.sample_rate}")
        if self.edge_silence_s < 0:
            raise ConfigError(f"edge_silence_s must be >= 0, got {self.edge_silence_s}")
        _check_range("speaker_gain_db", self.speaker_gain_db)
        if self.level_dbfs >= 0:
            raise ConfigError(f"level_dbfs must be below 0 dB full scale, got {self.level_dbfs}")
        if self.noise_snr_db is not None:
            _check_range("noise_snr_db", self.noise_snr_db)
            if not self.noise_types:
                raise ConfigError(
                    "noise_types is empty: give at least one of " + ", ".join(NOISE_TYPES)
                )
            for kind in self.noise_types:
                if kind not in NOISE_TYPES:
                    raise ConfigError(
                        f"unknown noise type {kind!r}; choose from {', '.join(NOISE_TYPES)}"
                    )
        if self.reverb:
            _check_range("rt60_s", self.rt60_s)
            if self.rt60_s[0] <= 0:
                raise ConfigError(f"rt60_s must be > 0 seconds, got {self.rt60_s}")
        self.turns.validate()

    def to_dict(self) -> dict:
        """The configuration as JSON-friendly data."""
        return {
            "duration_s": self.duration_s,
            "min_speakers": self.min_speakers,
            "max_speakers": self.max_speakers,
            "turns": self.turns.to_dict(),
            "sample_rate": self.sample_rate,
            "edge_silence_s": self.edge_silence_s,
            "speaker_gain_db": list(self.speaker_gain_db),
            "level_dbfs": self.level_dbfs,
            "noise_snr_db": None if self.noise_snr_db is None else list(self.noise_snr_db),
            "noise_types": list(self.noise_types),
            "reverb": self.reverb,
            "rt60_s": list(self.rt60_s),
        }


def _check_range(name: str, bounds: tuple[float, float]) -> None:
    if len(bounds) != 2 or not all(math.isfinite(b) for b in bounds) or bounds[0] > bounds[1]:
        raise ConfigError(f"{name} must be a (low, high) pair with low <= high, got {bounds}")
