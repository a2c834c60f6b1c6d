"""Sources of single-speaker utterances for the conversation simulator.

A :class:`SpeakerSource` lists speakers and their utterances and loads one utterance as a
:class:`Utterance`: mono float audio at the simulation's sample rate, trimmed to its speech, with
the speech segments found by a simple energy detector. Three sources exist:

- :class:`CorpusSource`: a corpus of single-speaker recordings, either a directory tree whose
  first level names the speakers (LibriSpeech: ``SPEAKER/CHAPTER/*.flac``) or a list file of
  ``<speaker> <path>`` lines;
- :class:`ToneSource`: synthetic voiced buzz with a speaker-specific pitch and timbre, for tests
  and for trying the simulator without any speech data;
- :class:`~slimdiar.simulate.tts.TTSVoicePool`: the built-in offline voice pool.
"""

from __future__ import annotations

import hashlib
import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from scipy.signal import lfilter

from slimdiar.errors import AudioError, ConfigError, DataFormatError
from slimdiar.frames import SAMPLE_RATE

logger = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".flac", ".wav", ".ogg", ".opus", ".mp3")
FRAME_S = 0.01


@dataclass(frozen=True)
class Utterance:
    """One single-speaker utterance, trimmed to its speech.

    Parameters
    ----------
    speaker
        Speaker label.
    utterance_id
        Identifier of the utterance within its source.
    audio
        Samples, float32, shape (num_samples,).
    segments
        Speech segments, int array of shape (num_segments, 2) of ``[start_sample, end_sample)``;
        the first starts at 0, the last ends at ``num_samples``.
    """

    speaker: str
    utterance_id: str
    audio: np.ndarray
    segments: np.ndarray

    @property
    def num_samples(self) -> int:
        """Length of the utterance in samples."""
        return int(self.audio.shape[0])


def speech_segments(
    audio: np.ndarray,
    sample_rate: int,
    *,
    threshold_db: float = -40.0,
    min_silence_s: float = 0.3,
    min_speech_s: float = 0.05,
) -> np.ndarray:
    """Speech segments of a clean single-speaker recording by frame energy.

    A 10 ms frame is speech when its energy is within ``threshold_db`` of the loudest frame.
    Silences shorter than ``min_silence_s`` are bridged; speech runs shorter than
    ``min_speech_s`` dropped.

    Parameters
    ----------
    audio
        Samples, shape (num_samples,).
    sample_rate
        Samples per second.
    threshold_db
        Energy threshold relative to the loudest frame, in dB.
    min_silence_s
        Shortest silence that splits two segments, in seconds.
    min_speech_s
        Shortest segment kept, in seconds.

    Returns
    -------
    numpy.ndarray
        Int array of shape (num_segments, 2) of ``[start_sample, end_sample)``, possibly empty.
    """
    frame = max(1, round(FRAME_S * sample_rate))
    num_frames = audio.shape[0] // frame
    if num_frames == 0:
        return np.zeros((0, 2), dtype=np.int64)
    frames = audio[: num_frames * frame].astype(np.float64).reshape(num_frames, frame)
    energy_db = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    active = energy_db > energy_db.max() + threshold_db
    if energy_db.max() < -100:
        active[:] = False
    # Runs of active frames.
    padded = np.concatenate([[False], active, [False]])
    changes = np.flatnonzero(padded[1:] != padded[:-1])
    runs = changes.reshape(-1, 2)
    if runs.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    min_silence = max(1, round(min_silence_s / FRAME_S))
    merged = [list(runs[0])]
    for start, end in runs[1:]:
        if start - merged[-1][1] < min_silence:
            merged[-1][1] = end
        else:
            merged.append([start, end])
    min_speech = max(1, round(min_speech_s / FRAME_S))
    kept = [(start, end) for start, end in merged if end - start >= min_speech]
    if not kept:
        return np.zeros((0, 2), dtype=np.int64)
    return np.asarray(kept, dtype=np.int64) * frame


def trim_to_speech(
    speaker: str, utterance_id: str, audio: np.ndarray, sample_rate: int
) -> Utterance | None:
    """Cut ``audio`` to its first and last speech sample; ``None`` when it holds no speech.

    Parameters
    ----------
    speaker, utterance_id
        Labels of the utterance.
    audio
        Samples, shape (num_samples,).
    sample_rate
        Samples per second.
    """
    segments = speech_segments(audio, sample_rate)
    if segments.shape[0] == 0:
        return None
    start, end = int(segments[0, 0]), int(min(segments[-1, 1], audio.shape[0]))
    segments = segments - start
    segments[-1, 1] = end - start
    return Utterance(
        speaker, utterance_id, np.ascontiguousarray(audio[start:end], dtype=np.float32), segments
    )


def read_mono(path: Path, sample_rate: int) -> np.ndarray:
    """Read an audio file as mono float32 at ``sample_rate`` (averaging channels, resampling).

    Raises
    ------
    AudioError
        When the file cannot be read or is empty.
    """
    try:
        audio, file_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError) as error:
        raise AudioError(f"{path}: cannot read audio ({error})") from None
    if audio.shape[0] == 0:
        raise AudioError(f"{path}: the file holds no samples")
    audio = audio.mean(axis=1)
    if file_rate != sample_rate:
        audio = soxr.resample(audio, file_rate, sample_rate).astype(np.float32)
    return audio


class SpeakerSource(ABC):
    """Speakers and their single-speaker utterances.

    Parameters
    ----------
    sample_rate
        Sample rate in Hz of the utterances it loads.
    """

    def __init__(self, sample_rate: int):
        self.sample_rate = sample_rate

    @abstractmethod
    def speakers(self) -> list[str]:
        """Speaker labels, sorted."""

    @abstractmethod
    def utterance_ids(self, speaker: str) -> list[str]:
        """Identifiers of the utterances of ``speaker``, sorted."""

    @abstractmethod
    def load(self, speaker: str, utterance_id: str) -> Utterance | None:
        """Load one utterance, trimmed to its speech; ``None`` when it holds no speech."""

    def describe(self) -> str:
        """One line that says what the source is."""
        return f"{type(self).__name__} with {len(self.speakers())} speakers"


class CorpusSource(SpeakerSource):
    """Single-speaker recordings from a corpus.

    Parameters
    ----------
    path
        Either a directory whose sub-directories are speakers (audio files anywhere below them,
        as in LibriSpeech's ``SPEAKER/CHAPTER/*.flac``), or a text file of ``<speaker> <path>``
        lines (relative paths are relative to the file's directory; ``#`` starts a comment).
    sample_rate
        Sample rate in Hz to resample to.
    min_utterances
        Speakers with fewer utterances are left out.
    """

    def __init__(
        self, path: str | Path, sample_rate: int = SAMPLE_RATE, *, min_utterances: int = 1
    ):
        super().__init__(sample_rate)
        self.path = Path(path)
        if self.path.is_dir():
            files = self._scan_directory(self.path)
        elif self.path.is_file():
            files = self._read_list(self.path)
        else:
            raise ConfigError(f"{self.path}: no such corpus directory or list file")
        self._files = {
            speaker: dict(sorted(paths.items()))
            for speaker, paths in sorted(files.items())
            if len(paths) >= min_utterances
        }
        if not self._files:
            raise ConfigError(
                f"{self.path}: found no speakers with at least {min_utterances} audio files "
                f"({', '.join(AUDIO_SUFFIXES)})"
            )
        logger.info(
            "%s: %d speakers, %d utterances",
            self.path,
            len(self._files),
            sum(len(p) for p in self._files.values()),
        )

    @staticmethod
    def _scan_directory(root: Path) -> dict[str, dict[str, Path]]:
        files: dict[str, dict[str, Path]] = {}
        for speaker_dir in sorted(p for p in root.iterdir() if p.is_dir()):
            for audio in sorted(speaker_dir.rglob("*")):
                if audio.suffix.lower() in AUDIO_SUFFIXES and audio.is_file():
                    key = audio.relative_to(speaker_dir).with_suffix("").as_posix()
                    files.setdefault(speaker_dir.name, {})[key] = audio
        return files

    @staticmethod
    def _read_list(list_path: Path) -> dict[str, dict[str, Path]]:
        files: dict[str, dict[str, Path]] = {}
        text = list_path.read_text(encoding="utf-8")
        for number, line in enumerate(text.splitlines(), start=1):
            content = line.split("#", 1)[0].strip()
            if not content:
                continue
            fields = content.split(maxsplit=1)
            if len(fields) != 2:
                raise DataFormatError(
                    list_path, number, line, "expected '<speaker> <path>' but found 1 field"
                )
            speaker, audio = fields
            audio_path = Path(audio)
            if not audio_path.is_absolute():
                audio_path = list_path.parent / audio_path
            if not audio_path.is_file():
                raise DataFormatError(list_path, number, line, f"no such file: {audio_path}")
            key = f"{number:06d}-{audio_path.stem}"
            files.setdefault(speaker, {})[key] = audio_path
        return files

    def speakers(self) -> list[str]:
        """Speaker labels (the corpus folders), sorted."""
        return list(self._files)

    def utterance_ids(self, speaker: str) -> list[str]:
        """Identifiers of the audio files of ``speaker``, sorted."""
        return list(self._files[speaker])

    def load(self, speaker: str, utterance_id: str) -> Utterance | None:
        """Read one file, trimmed to its speech; ``None`` when it holds no speech."""
        audio = read_mono(self._files[speaker][utterance_id], self.sample_rate)
        return trim_to_speech(speaker, utterance_id, audio, self.sample_rate)

    def describe(self) -> str:
        """One line that names the corpus folder and its number of speakers."""
        return f"corpus {self.path} ({len(self._files)} speakers)"


class ToneSource(SpeakerSource):
    """Synthetic speakers that utter voiced buzz at their own pitch.

    Speaker ``k`` has a fundamental frequency spread geometrically over ``[f0_low_hz,
    f0_high_hz]`` and its own spectral tilt; each utterance is a sawtooth buzz of a random length
    in ``duration_s`` with a slow pitch contour and 10 ms fades, with no internal silence (one
    speech segment). Everything is derived from ``seed``, the speaker and the utterance index, so
    the same utterance is always the same audio.

    Parameters
    ----------
    num_speakers
        Number of speakers.
    utterances_per_speaker
        Number of utterances per speaker.
    sample_rate
        Sample rate in Hz.
    duration_s
        Range of the utterance lengths in seconds.
    f0_low_hz, f0_high_hz
        Range of the speakers' pitches in Hz.
    seed
        Seed of the utterance lengths and contours.
    """

    def __init__(
        self,
        num_speakers: int = 12,
        utterances_per_speaker: int = 10,
        sample_rate: int = SAMPLE_RATE,
        *,
        duration_s: tuple[float, float] = (0.8, 3.0),
        f0_low_hz: float = 90.0,
        f0_high_hz: float = 260.0,
        seed: int = 0,
    ):
        super().__init__(sample_rate)
        if num_speakers < 1 or utterances_per_speaker < 1:
            raise ConfigError("a tone source needs at least one speaker and one utterance")
        if not 0 < duration_s[0] <= duration_s[1]:
            raise ConfigError(f"duration_s must be a range of positive seconds, got {duration_s}")
        self.num_speakers = num_speakers
        self.utterances_per_speaker = utterances_per_speaker
        self.duration_s = duration_s
        self.seed = seed
        steps = np.linspace(0.0, 1.0, num_speakers) if num_speakers > 1 else np.zeros(1)
        self._f0_hz = f0_low_hz * (f0_high_hz / f0_low_hz) ** steps
        self._labels = [f"tone{k:03d}" for k in range(num_speakers)]

    def speakers(self) -> list[str]:
        """Speaker labels ``tone000``, ``tone001``, ..."""
        return list(self._labels)

    def utterance_ids(self, speaker: str) -> list[str]:
        """Identifiers ``<speaker>-000``, ``<speaker>-001``, ... of the utterances."""
        return [f"{speaker}-{j:03d}" for j in range(self.utterances_per_speaker)]

    def _rng(self, speaker_index: int, utterance_index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, speaker_index, utterance_index])

    def load(self, speaker: str, utterance_id: str) -> Utterance:
        """Synthesise one utterance (the same for the same seed, speaker and identifier)."""
        if speaker not in self._labels:
            raise ConfigError(f"unknown tone speaker {speaker!r}")
        speaker_index = self._labels.index(speaker)
        utterance_index = int(utterance_id.rsplit("-", 1)[1])
        rng = self._rng(speaker_index, utterance_index)
        duration_s = rng.uniform(*self.duration_s)
        num_samples = max(1, round(duration_s * self.sample_rate))
        time_s = np.arange(num_samples) / self.sample_rate
        contour = 1.0 + 0.06 * np.sin(
            2 * np.pi * rng.uniform(0.5, 2.0) * time_s + rng.uniform(0, 2 * np.pi)
        )
        phase = 2 * np.pi * np.cumsum(self._f0_hz[speaker_index] * contour) / self.sample_rate
        # Sawtooth buzz (all harmonics) through a one-pole low-pass whose pole sets the
        # speaker's spectral tilt.
        buzz = 2.0 * np.mod(phase / (2 * np.pi), 1.0) - 1.0
        pole = 0.3 + 0.15 * (speaker_index % 5)
        audio = lfilter([1.0 - pole], [1.0, -pole], buzz)
        fade = min(num_samples // 2, round(0.01 * self.sample_rate))
        if fade > 0:
            ramp = np.linspace(0.0, 1.0, fade, endpoint=False) + 0.5 / fade
            audio[:fade] *= ramp
            audio[num_samples - fade :] *= ramp[::-1]
        audio *= 0.1 / (np.sqrt(np.mean(audio**2)) + 1e-12)
        segments = np.array([[0, num_samples]], dtype=np.int64)
        return Utterance(speaker, utterance_id, audio.astype(np.float32), segments)

    def describe(self) -> str:
        """One line with the number of speakers and of utterances per speaker."""
        return (
            f"synthetic tone source ({self.num_speakers} speakers, "
            f"{self.utterances_per_speaker} utterances each)"
        )


def stable_hash(*parts: object) -> str:
    """A short hexadecimal digest of ``parts`` that is the same on every run and machine."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8"))
    return digest.hexdigest()[:16]
