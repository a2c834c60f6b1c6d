"""Simulated conversations written as data directories.

:func:`simulate_data_dirs` is the whole recipe: split the speakers of a source into disjoint
sets, simulate the recordings of every split with a :class:`ConversationSimulator`, and write each
split as a data directory (``wav.scp``, ``rttm``, ``uem``, ``wav/*.wav``, ``simulation.json``)
into a temporary directory that is renamed into place only once it is complete.

Everything random is drawn from generators seeded with ``(seed, split, recording)``, so the same
seed gives byte-identical output, whatever the number of worker processes.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf

from slimdiar.data.formats import read_rttm, write_rttm, write_text_atomic, write_uem
from slimdiar.data.records import Turn, UEMRegion
from slimdiar.errors import ConfigError, DataFormatError
from slimdiar.simulate import acoustics
from slimdiar.simulate.config import SimulationConfig
from slimdiar.simulate.sources import SpeakerSource, Utterance
from slimdiar.simulate.turns import (
    Placement,
    TurnTakingStats,
    calibrate_overlap_probability,
    layout_conversation,
    measure_turn_taking,
    merge_speaker_segments,
    placed_segments,
)

logger = logging.getLogger(__name__)

WAV_SCP_NAME = "wav.scp"
RTTM_NAME = "rttm"
UEM_NAME = "uem"
SUMMARY_NAME = "simulation.json"
CALIBRATION_UTTERANCES = 120
BABBLE_UTTERANCES = 8
#: Utterances kept in memory per process (about 0.1-1 MB each).
LOADED_UTTERANCES = 512


@dataclass
class SimulatedRecording:
    """One simulated recording.

    Parameters
    ----------
    uri
        Recording id.
    audio
        Mixture, float32 in [-1, 1], shape (num_samples,).
    turns
        Speaker turns, sorted by onset.
    speakers
        Speakers of the recording.
    noise
        Kind of added noise and its SNR in dB, or ``None``.
    rt60_s
        Reverberation time of each speaker's room response in seconds (empty without reverb).
    """

    uri: str
    audio: np.ndarray
    turns: list[Turn]
    speakers: list[str]
    noise: tuple[str, float] | None = None
    rt60_s: list[float] = field(default_factory=list)

    @property
    def num_samples(self) -> int:
        """Length in samples."""
        return int(self.audio.shape[0])


def turn_taking_from_rttm(path: str | Path) -> TurnTakingStats:
    """Turn-taking statistics of the recordings of an RTTM file (all recordings pooled).

    Parameters
    ----------
    path
        RTTM file, e.g. the reference of a real meeting corpus.

    Raises
    ------
    DataFormatError
        When the file is malformed or holds no turns.
    """
    turns = read_rttm(path)
    if not turns:
        raise DataFormatError(path, None, None, "holds no SPEAKER lines to estimate from")
    by_uri: dict[str, list[tuple[str, float, float]]] = {}
    for turn in turns:
        by_uri.setdefault(turn.uri, []).append((turn.speaker, turn.onset_s, turn.offset_s))
    stats = TurnTakingStats()
    for uri in sorted(by_uri):
        stats = stats + measure_turn_taking(by_uri[uri])
    return stats


def parse_splits(text: str) -> dict[str, int]:
    """Parse ``"train=20,dev=4,test=4"`` into ``{"train": 20, "dev": 4, "test": 4}``.

    Raises
    ------
    ConfigError
        On a malformed entry, a repeated name or a negative count.
    """
    splits: dict[str, int] = {}
    for item in text.split(","):
        name, sep, count = item.strip().partition("=")
        name = name.strip()
        if not sep or not name or not count.strip().isdigit():
            raise ConfigError(
                f"bad split {item.strip()!r} in {text!r}: expected NAME=COUNT, "
                "e.g. train=20,dev=4,test=4"
            )
        if name in splits:
            raise ConfigError(f"split {name!r} is given twice in {text!r}")
        if "/" in name or name.startswith("."):
            raise ConfigError(f"split name {name!r} cannot be used as a directory name")
        splits[name] = int(count)
    return splits


def assign_speakers(
    speakers: Sequence[str],
    splits: dict[str, int],
    min_speakers: int,
    max_speakers: int,
    seed: int,
) -> dict[str, list[str]]:
    """Divide ``speakers`` into disjoint sets, one per split.

    Each split with recordings gets at least ``max_speakers`` speakers when there are enough
    (else at least ``min_speakers``); the rest are shared out in proportion to the number of
    recordings (largest remainders). Which speaker goes where is a seeded shuffle.

    Parameters
    ----------
    speakers
        All speakers of the source.
    splits
        Number of recordings per split.
    min_speakers, max_speakers
        Range of the number of speakers per recording.
    seed
        Seed of the shuffle.

    Returns
    -------
    dict
        Split name -> sorted speakers (empty for a split with no recordings).

    Raises
    ------
    ConfigError
        When there are too few speakers for every split to have ``min_speakers`` of its own.
    """
    active = [name for name, count in splits.items() if count > 0]
    total_recordings = sum(splits[name] for name in active)
    floor = max_speakers if len(speakers) >= max_speakers * len(active) else min_speakers
    if len(speakers) < floor * len(active):
        raise ConfigError(
            f"{len(speakers)} speakers cannot be divided into {len(active)} disjoint sets of at "
            f"least {min_speakers} (splits {', '.join(active)}): use more speakers, fewer splits "
            "or fewer speakers per recording"
        )
    counts = {name: floor for name in active}
    spare = len(speakers) - floor * len(active)
    shares = {name: spare * splits[name] / total_recordings for name in active}
    for name in active:
        counts[name] += int(math.floor(shares[name]))
    leftover = len(speakers) - sum(counts.values())
    by_remainder = sorted(
        active, key=lambda n: (-(shares[n] - math.floor(shares[n])), active.index(n))
    )
    for name in by_remainder[:leftover]:
        counts[name] += 1
    order = np.random.default_rng([seed, 1]).permutation(len(speakers))
    shuffled = [sorted(speakers)[i] for i in order]
    result, position = {}, 0
    for name in splits:
        count = counts.get(name, 0)
        result[name] = sorted(shuffled[position : position + count])
        position += count
    return result


@dataclass
class ConversationPlan:
    """The turn layout of one recording, before any audio is made.

    Parameters
    ----------
    speakers
        The participants.
    playlists
        Per participant, the utterances in the order they are spoken.
    placements
        Where each utterance goes.
    num_samples
        Length of the recording in samples.
    """

    speakers: list[str]
    playlists: list[list[Utterance]]
    placements: list[Placement]
    num_samples: int

    def segments(self) -> list[tuple[int, int, int]]:
        """Speech segments as ``(participant index, start_sample, end_sample)``."""
        return placed_segments(
            self.placements, [[u.segments for u in playlist] for playlist in self.playlists]
        )


class ConversationSimulator:
    """Simulates recordings of conversations between speakers of a source.

    Parameters
    ----------
    source
        Where the utterances come from; its sample rate must be ``config.sample_rate``.
    config
        Simulation settings (validated here).
    seed
        Seed of the overlap calibration.
    """

    def __init__(self, source: SpeakerSource, config: SimulationConfig, *, seed: int = 0):
        config.validate()
        if source.sample_rate != config.sample_rate:
            raise ConfigError(
                f"the source delivers {source.sample_rate} Hz audio but the simulation is "
                f"configured for {config.sample_rate} Hz"
            )
        self.source = source
        self.config = config
        self.seed = seed
        self._utterance_ids = {s: source.utterance_ids(s) for s in source.speakers()}
        self._load = lru_cache(maxsize=LOADED_UTTERANCES)(source.load)
        sample = self._calibration_sample()
        self.mean_utterance_s = float(np.mean([u.num_samples for u in sample]) / config.sample_rate)
        turns = config.turns
        if turns.overlap_probability is not None:
            self.overlap_probability = turns.overlap_probability
        else:
            self.overlap_probability = calibrate_overlap_probability(
                [u.segments for u in sample],
                turns,
                turns.overlap_ratio,
                config.sample_rate,
                speakers=(config.min_speakers, config.max_speakers),
                seed=seed,
            )

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_load"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._load = lru_cache(maxsize=LOADED_UTTERANCES)(self.source.load)

    def _calibration_sample(self) -> list[Utterance]:
        rng = np.random.default_rng([self.seed, 2])
        pairs = [(s, u) for s, ids in self._utterance_ids.items() for u in ids]
        chosen = rng.permutation(len(pairs))[:CALIBRATION_UTTERANCES]
        sample = [self._load(*pairs[i]) for i in sorted(chosen)]
        sample = [u for u in sample if u is not None]
        if not sample:
            raise ConfigError(f"{self.source.describe()}: no utterance holds detectable speech")
        return sample

    def _playlist(self, speaker: str, count: int, rng: np.random.Generator) -> list[Utterance]:
        ids = self._utterance_ids[speaker]
        playlist = []
        for index in rng.permutation(len(ids)):
            utterance = self._load(speaker, ids[index])
            if utterance is not None:
                playlist.append(utterance)
                if len(playlist) >= count:
                    break
        if not playlist:
            raise ConfigError(f"speaker {speaker!r} has no utterance with detectable speech")
        return playlist

    def plan(self, speakers: Sequence[str], rng: np.random.Generator) -> ConversationPlan:
        """Choose the participants and their utterances and lay out the turns (no audio).

        Parameters
        ----------
        speakers
            Speakers to choose the participants from.
        rng
            Random generator of the recording.

        Returns
        -------
        ConversationPlan
        """
        config = self.config
        rate = config.sample_rate
        num_speakers = int(rng.integers(config.min_speakers, config.max_speakers + 1))
        num_speakers = min(num_speakers, len(speakers))
        chosen = sorted(speakers[i] for i in rng.choice(len(speakers), num_speakers, replace=False))
        needed = math.ceil(2 * config.duration_s / (num_speakers * self.mean_utterance_s)) + 2
        playlists = [self._playlist(speaker, needed, rng) for speaker in chosen]
        segments = [[u.segments for u in playlist] for playlist in playlists]
        edge = round(config.edge_silence_s * rate)
        placements = layout_conversation(
            segments,
            config.turns,
            self.overlap_probability,
            rate,
            rng,
            start_sample=edge,
            target_end_sample=edge + round(config.duration_s * rate),
        )
        end = max(
            p.onset_sample + playlists[p.speaker_index][p.utterance_index].num_samples
            for p in placements
        )
        return ConversationPlan(chosen, playlists, placements, end + edge)

    def simulate(
        self,
        uri: str,
        speakers: Sequence[str],
        rng: np.random.Generator,
        *,
        babble_speakers: Sequence[str] = (),
    ) -> SimulatedRecording:
        """Simulate one recording.

        Parameters
        ----------
        uri
            Recording id.
        speakers
            Speakers to choose the conversation's participants from.
        rng
            Random generator of this recording.
        babble_speakers
            Speakers whose utterances may form babble noise; those chosen for the conversation
            are left out.

        Returns
        -------
        SimulatedRecording
        """
        config = self.config
        rate = config.sample_rate
        # 1.-2. participants, their utterances and the turn layout
        plan = self.plan(speakers, rng)
        chosen, playlists, placements = plan.speakers, plan.playlists, plan.placements
        num_speakers, num_samples = len(chosen), plan.num_samples

        # 3. one track per speaker: utterances at a common level, a speaker gain, reverberation
        tracks = np.zeros((num_speakers, num_samples))
        for placement in placements:
            utterance = playlists[placement.speaker_index][placement.utterance_index]
            mask = np.zeros(utterance.num_samples, dtype=bool)
            for start, stop in utterance.segments:
                mask[start:stop] = True
            level = acoustics.rms(utterance.audio, mask)
            if level > 0:
                onset = placement.onset_sample
                tracks[placement.speaker_index, onset : onset + utterance.num_samples] += (
                    utterance.audio / level
                )
        gains_db = rng.uniform(*config.speaker_gain_db, size=num_speakers)
        tracks *= (10 ** (gains_db / 20))[:, None]
        rt60_s: list[float] = []
        if config.reverb:
            for k in range(num_speakers):
                rt60_s.append(float(rng.uniform(*config.rt60_s)))
                response = acoustics.synthetic_rir(rt60_s[-1], rate, rng)
                tracks[k] = acoustics.reverberate(tracks[k], response)
        mixture = tracks.sum(axis=0)

        # 4. speech segments and turns (same-speaker segments merged)
        merged = merge_speaker_segments(plan.segments())
        speech_mask = np.zeros(num_samples, dtype=bool)
        for _, start, stop in merged:
            speech_mask[start:stop] = True
        turns = [
            Turn(uri=uri, onset_s=start / rate, duration_s=(stop - start) / rate, speaker=chosen[k])
            for k, start, stop in merged
        ]

        # 5. level, noise, clipping guard
        level = acoustics.rms(mixture, speech_mask)
        if level > 0:
            mixture *= 10 ** (config.level_dbfs / 20) / level
        noise = None
        babble_speakers = [s for s in babble_speakers if s not in chosen]
        if config.noise_snr_db is not None:
            kinds = list(config.noise_types)
            if not babble_speakers and "babble" in kinds and len(kinds) > 1:
                kinds.remove("babble")
            kind = kinds[int(rng.integers(len(kinds)))]
            snr_db = float(rng.uniform(*config.noise_snr_db))
            if kind == "white":
                signal = acoustics.white_noise(num_samples, rng)
            elif kind == "pink":
                signal = acoustics.pink_noise(num_samples, rng)
            else:
                if not babble_speakers:
                    raise ConfigError(
                        "babble noise needs speakers outside the conversation; add white or "
                        "pink to the noise types or use more speakers per split"
                    )
                picks = rng.choice(
                    len(babble_speakers),
                    min(len(babble_speakers), BABBLE_UTTERANCES),
                    replace=False,
                )
                voices = [
                    u.audio
                    for i in sorted(picks)
                    for u in self._playlist(babble_speakers[i], 1, rng)
                ]
                signal = acoustics.babble_noise(voices, num_samples, int(rng.integers(3, 7)), rng)
            mixture += acoustics.scale_noise_to_snr(mixture, signal, snr_db, speech_mask)
            noise = (kind, snr_db)
        peak = float(np.max(np.abs(mixture))) if num_samples else 0.0
        if peak > 0.99:
            mixture *= 0.99 / peak
        return SimulatedRecording(
            uri=uri,
            audio=mixture.astype(np.float32),
            turns=turns,
            speakers=chosen,
            noise=noise,
            rt60_s=rt60_s,
        )


@dataclass
class SplitResult:
    """What was written for one split.

    Parameters
    ----------
    name
        Split name.
    path
        Its data directory.
    speakers
        Its speakers.
    num_recordings
        Number of recordings.
    duration_s
        Total audio length in seconds.
    stats
        Turn-taking statistics measured on its turns.
    """

    name: str
    path: Path
    speakers: list[str]
    num_recordings: int
    duration_s: float
    stats: TurnTakingStats


@dataclass
class SimulationReport:
    """What :func:`simulate_data_dirs` produced.

    Parameters
    ----------
    splits
        One result per split, in order.
    overlap_probability
        Overlap probability used at changes of speaker.
    config
        The simulation settings.
    """

    splits: list[SplitResult]
    overlap_probability: float
    config: SimulationConfig

    @property
    def stats(self) -> TurnTakingStats:
        """Statistics of all splits together."""
        total = TurnTakingStats()
        for split in self.splits:
            total = total + split.stats
        return total

    def comparison(self) -> list[tuple[str, float | None, float | None]]:
        """``(quantity, configured, measured)`` for the headline turn-taking statistics."""
        turns = self.config.turns
        measured = self.stats.summary()
        return [
            ("overlap ratio", turns.overlap_ratio, measured["overlap_ratio"]),
            ("overlap probability", self.overlap_probability, measured["overlap_probability"]),
            (
                "same-speaker probability",
                turns.same_speaker_probability,
                measured["same_speaker_probability"],
            ),
            (
                "same-speaker pause mean (s)",
                turns.pause_same_speaker.expected_s(),
                measured["pause_same_speaker_mean_s"],
            ),
            (
                "other-speaker pause mean (s)",
                turns.pause_other_speaker.expected_s(),
                measured["pause_other_speaker_mean_s"],
            ),
            (
                "overlap mean (s, before cutting)",
                turns.overlap.expected_s(),
                measured["overlap_mean_s"],
            ),
        ]

    def to_dict(self) -> dict:
        """The report as JSON-friendly data."""
        return {
            "config": self.config.to_dict(),
            "overlap_probability": round(self.overlap_probability, 6),
            "measured": self.stats.summary(),
            "splits": {
                split.name: {
                    "num_recordings": split.num_recordings,
                    "num_speakers": len(split.speakers),
                    "duration_s": round(split.duration_s, 3),
                    "measured": split.stats.summary(),
                }
                for split in self.splits
            },
        }


def _recording_task(
    simulator: ConversationSimulator,
    split_index: int,
    recording_index: int,
    uri: str,
    speakers: list[str],
    babble_speakers: list[str],
    wav_path: Path,
) -> tuple[list[Turn], int, dict]:
    rng = np.random.default_rng([simulator.seed, 3, split_index, recording_index])
    recording = simulator.simulate(uri, speakers, rng, babble_speakers=babble_speakers)
    sf.write(
        str(wav_path), recording.audio, simulator.config.sample_rate, subtype="PCM_16", format="WAV"
    )
    info = {
        "speakers": recording.speakers,
        "noise": None
        if recording.noise is None
        else {"type": recording.noise[0], "snr_db": round(recording.noise[1], 2)},
        "rt60_s": [round(t, 3) for t in recording.rt60_s],
    }
    return recording.turns, recording.num_samples, info


def simulate_data_dirs(
    source: SpeakerSource,
    out_dir: str | Path,
    config: SimulationConfig,
    splits: dict[str, int],
    *,
    seed: int = 0,
    num_workers: int = 1,
    overwrite: bool = False,
    progress: Callable[[str], None] | None = None,
) -> SimulationReport:
    """Simulate conversations and write one data directory per split.

    Parameters
    ----------
    source
        Speakers and utterances.
    out_dir
        Output directory; split ``NAME`` goes to ``out_dir/NAME``.
    config
        Simulation settings.
    splits
        Number of recordings per split (speakers of different splits are disjoint); a split
        with no recordings is not written.
    seed
        Seed of everything random.
    num_workers
        Processes that simulate recordings in parallel (the output does not depend on it).
    overwrite
        Replace existing split directories (only once the new ones are complete).
    progress
        Called with the recording id after each recording is written.

    Returns
    -------
    SimulationReport

    Raises
    ------
    ConfigError
        On bad settings, too few speakers, or existing split directories without ``overwrite``.
    """
    out_dir = Path(out_dir)
    if not splits or sum(splits.values()) == 0:
        raise ConfigError("no recordings requested: give at least one split with a count > 0")
    if not overwrite:
        existing = [name for name in splits if (out_dir / name).exists()]
        if existing:
            raise ConfigError(
                f"{', '.join(str(out_dir / n) for n in existing)} already exist: choose another "
                "--out or pass --overwrite"
            )
    simulator = ConversationSimulator(source, config, seed=seed)
    assignment = assign_speakers(
        source.speakers(), splits, config.min_speakers, config.max_speakers, seed
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".simulate-", dir=out_dir))
    try:
        results = []
        pool = ProcessPoolExecutor(num_workers) if num_workers > 1 else None
        try:
            for split_index, (name, count) in enumerate(splits.items()):
                if count == 0:
                    logger.info("split %s has no recordings: not written", name)
                    continue
                results.append(
                    _simulate_split(
                        simulator,
                        staging / name,
                        name,
                        split_index,
                        count,
                        assignment,
                        pool,
                        progress,
                    )
                )
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
        report = SimulationReport(results, simulator.overlap_probability, config)
        write_text_atomic(staging / SUMMARY_NAME, json.dumps(report.to_dict(), indent=1) + "\n")
        for split in report.splits:
            final = out_dir / split.name
            if final.exists():
                shutil.rmtree(final)
            os.replace(split.path, final)
            split.path = final
        os.replace(staging / SUMMARY_NAME, out_dir / SUMMARY_NAME)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return report


def _simulate_split(
    simulator: ConversationSimulator,
    directory: Path,
    name: str,
    split_index: int,
    count: int,
    assignment: dict[str, list[str]],
    pool: ProcessPoolExecutor | None,
    progress: Callable[[str], None] | None,
) -> SplitResult:
    rate = simulator.config.sample_rate
    speakers = assignment[name]
    (directory / "wav").mkdir(parents=True)
    uris = [f"{name}-{index:04d}" for index in range(count)]
    tasks = [
        (simulator, split_index, index, uri, speakers, speakers, directory / "wav" / f"{uri}.wav")
        for index, uri in enumerate(uris)
    ]
    if pool is None:
        outcomes = (_recording_task(*task) for task in tasks)
    else:
        futures = [pool.submit(_recording_task, *task) for task in tasks]
        outcomes = (future.result() for future in futures)
    all_turns: list[Turn] = []
    regions: list[UEMRegion] = []
    recordings = {}
    stats = TurnTakingStats()
    total_samples = 0
    for uri, (turns, num_samples, info) in zip(uris, outcomes):
        all_turns.extend(turns)
        regions.append(UEMRegion(uri=uri, start_s=0.0, end_s=num_samples / rate))
        recordings[uri] = info
        stats = stats + measure_turn_taking(
            (t.speaker, round(t.onset_s, 3), round(t.onset_s, 3) + round(t.duration_s, 3))
            for t in turns
        )
        total_samples += num_samples
        if progress is not None:
            progress(uri)
    write_text_atomic(directory / WAV_SCP_NAME, "".join(f"{uri} wav/{uri}.wav\n" for uri in uris))
    write_rttm(directory / RTTM_NAME, all_turns)
    write_uem(directory / UEM_NAME, regions)
    summary = {
        "split": name,
        "speakers": speakers,
        "overlap_probability": round(simulator.overlap_probability, 6),
        "config": simulator.config.to_dict(),
        "measured": stats.summary(),
        "recordings": recordings,
    }
    write_text_atomic(directory / SUMMARY_NAME, json.dumps(summary, indent=1) + "\n")
    return SplitResult(
        name=name,
        path=directory,
        speakers=speakers,
        num_recordings=count,
        duration_s=total_samples / rate,
        stats=stats,
    )
