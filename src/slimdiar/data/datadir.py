"""A data directory: ``wav.scp`` + ``rttm`` + optional ``uem``, validated across files."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from slimdiar.data.audio import audio_info
from slimdiar.data.formats import _line_text, read_rttm, read_uem, read_wav_scp
from slimdiar.data.records import Recording, Turn, UEMRegion
from slimdiar.errors import AudioError, DataFormatError

logger = logging.getLogger(__name__)

WAV_SCP, RTTM, UEM = "wav.scp", "rttm", "uem"
# RTTM/UEM times may exceed the audio by this much (they are usually rounded to 10 ms).
TIME_TOLERANCE_S = 0.01


def merge_intervals(intervals: np.ndarray) -> np.ndarray:
    """Union of intervals.

    Parameters
    ----------
    intervals
        ``(num_intervals, 2)`` array of ``[start_s, end_s)``.

    Returns
    -------
    numpy.ndarray
        ``(num_merged, 2)`` sorted, disjoint intervals.
    """
    intervals = np.asarray(intervals, dtype=np.float64).reshape(-1, 2)
    if len(intervals) == 0:
        return intervals
    intervals = intervals[np.argsort(intervals[:, 0], kind="stable")]
    merged = [list(intervals[0])]
    for start, end in intervals[1:]:
        if start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return np.asarray(merged)


def intersect_intervals(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection of two sets of disjoint sorted intervals, each ``(n, 2)``."""
    out, i, j = [], 0, 0
    while i < len(a) and j < len(b):
        start, end = max(a[i, 0], b[j, 0]), min(a[i, 1], b[j, 1])
        if end > start:
            out.append((start, end))
        if a[i, 1] < b[j, 1]:
            i += 1
        else:
            j += 1
    return np.asarray(out, dtype=np.float64).reshape(-1, 2)


def speech_and_overlap_s(turns: list[Turn], regions: np.ndarray) -> tuple[float, float]:
    """Seconds of speech (>= 1 speaker) and overlap (>= 2 speakers) inside ``regions``.

    Parameters
    ----------
    turns
        Turns of one recording.
    regions
        ``(num_regions, 2)`` disjoint sorted ``[start_s, end_s)`` intervals.
    """
    events = []
    for speaker in sorted({t.speaker for t in turns}):
        own = np.asarray([(t.onset_s, t.offset_s) for t in turns if t.speaker == speaker])
        for start, end in intersect_intervals(merge_intervals(own), regions):
            events.append((start, 1))
            events.append((end, -1))
    events.sort()
    speech = overlap = 0.0
    active, previous = 0, 0.0
    for time, delta in events:
        if active >= 1:
            speech += time - previous
        if active >= 2:
            overlap += time - previous
        active += delta
        previous = time
    return speech, overlap


def _audio_header(recording: Recording) -> tuple[int, int, float]:
    """``(sample_rate, num_channels, duration_s)`` of a recording whose audio header is read."""
    if (
        recording.sample_rate is None
        or recording.num_channels is None
        or recording.num_frames is None
    ):
        raise DataFormatError(
            recording.path,
            None,
            None,
            f"audio header of {recording.uri!r} not read (load the directory with DataDir.load)",
        )
    duration_s = recording.num_frames / recording.sample_rate
    return recording.sample_rate, recording.num_channels, duration_s


def _check_span(
    path: Path,
    line_number: int | None,
    uri: str,
    end_s: float,
    what: str,
    durations_s: dict[str, float],
    scp_path: Path,
) -> None:
    """A turn or UEM region names a recording of ``scp_path`` and ends within its audio.

    ``durations_s`` holds the duration of every recording of ``scp_path``.
    """
    if uri not in durations_s:
        raise DataFormatError(
            path,
            line_number,
            _line_text(path, line_number),
            f"recording {uri!r} is not in {scp_path}",
        )
    if end_s > durations_s[uri] + TIME_TOLERANCE_S:
        raise DataFormatError(
            path,
            line_number,
            _line_text(path, line_number),
            f"{what} ends at {end_s:.3f} s, after the end of the audio ({durations_s[uri]:.3f} s)",
        )


@dataclass
class DataSummary:
    """What a data directory holds (see :meth:`DataDir.summary`).

    Durations are in seconds; "scored" time is the time inside the UEM regions.
    """

    num_recordings: int
    duration_s: float
    scored_s: float
    speech_s: float
    overlap_s: float
    num_turns: int
    speakers_per_recording: dict[str, int]
    turns_per_speaker: dict[str, int]
    sample_rates: dict[int, int]
    channels: dict[int, int]
    recordings: list[dict] = field(default_factory=list)

    @property
    def hours(self) -> float:
        """Total audio duration in hours."""
        return self.duration_s / 3600.0

    @property
    def speech_fraction(self) -> float:
        """Fraction of the scored time with at least one speaker."""
        return self.speech_s / self.scored_s if self.scored_s else 0.0

    @property
    def overlap_fraction(self) -> float:
        """Fraction of the speech time with at least two speakers."""
        return self.overlap_s / self.speech_s if self.speech_s else 0.0


@dataclass
class DataDir:
    """A validated data directory.

    Parameters
    ----------
    path
        The directory.
    recordings
        Recordings by id, in ``wav.scp`` order, with their audio header information.
    turns
        Turns of each recording (every recording has an entry, maybe empty), sorted by onset.
    uem
        Scored / trained regions of each recording, sorted; a whole-recording region when the
        directory has no ``uem`` file.
    has_uem
        Whether the regions come from a ``uem`` file.
    """

    path: Path
    recordings: dict[str, Recording]
    turns: dict[str, list[Turn]]
    uem: dict[str, list[UEMRegion]]
    has_uem: bool

    @classmethod
    def load(cls, path: str | Path, channel: int | None = None) -> DataDir:
        """Read and cross-check ``wav.scp``, ``rttm`` and (optional) ``uem`` of a directory.

        Parameters
        ----------
        path
            The data directory.
        channel
            Channel that will be read (0-based); every recording must have it. ``None``
            (downmix) accepts any channel count.

        Raises
        ------
        DataFormatError
            On any malformed line, an RTTM/UEM line for a recording that ``wav.scp`` lacks, a
            turn outside the audio or the UEM, a UEM region outside the audio, or a recording
            whose audio cannot be read (reported at its ``wav.scp`` line).
        """
        path = Path(path)
        if not path.is_dir():
            raise DataFormatError(path, None, None, "not a directory")
        scp_path, rttm_path, uem_path = path / WAV_SCP, path / RTTM, path / UEM
        for required in (scp_path, rttm_path):
            if not required.is_file():
                raise DataFormatError(
                    required,
                    None,
                    None,
                    f"missing: a data directory holds {WAV_SCP}, {RTTM} and optionally {UEM}",
                )
        recordings: dict[str, Recording] = {}
        durations_s: dict[str, float] = {}
        for recording in read_wav_scp(scp_path):
            try:
                info = audio_info(recording.path)
            except AudioError as error:
                raise DataFormatError(
                    scp_path,
                    recording.line_number,
                    _line_text(scp_path, recording.line_number),
                    f"unreadable audio: {error}",
                ) from None
            if channel is not None and not 0 <= channel < info.num_channels:
                raise DataFormatError(
                    scp_path,
                    recording.line_number,
                    _line_text(scp_path, recording.line_number),
                    f"channel {channel} requested but the audio has {info.num_channels} channel(s)",
                )
            recordings[recording.uri] = replace(
                recording,
                sample_rate=info.sample_rate,
                num_channels=info.num_channels,
                num_frames=info.num_frames,
            )
            durations_s[recording.uri] = info.duration_s
        if not recordings:
            raise DataFormatError(scp_path, None, None, "lists no recordings")

        turns: dict[str, list[Turn]] = {uri: [] for uri in recordings}
        for turn in read_rttm(rttm_path):
            _check_span(
                rttm_path, turn.line_number, turn.uri, turn.offset_s, "turn", durations_s, scp_path
            )
            turns[turn.uri].append(turn)

        has_uem = uem_path.is_file()
        uem: dict[str, list[UEMRegion]] = {}
        if has_uem:
            for region in read_uem(uem_path):
                _check_span(
                    uem_path,
                    region.line_number,
                    region.uri,
                    region.end_s,
                    "region",
                    durations_s,
                    scp_path,
                )
                uem.setdefault(region.uri, []).append(region)
            missing = [uri for uri in recordings if uri not in uem]
            if missing:
                logger.warning(
                    "%s: %d recording(s) have no UEM region and will be neither trained on nor "
                    "scored: %s",
                    uem_path,
                    len(missing),
                    ", ".join(missing[:5]),
                )
            for uri in recordings:
                uem[uri] = sorted(uem.get(uri, []), key=lambda r: r.start_s)
                cls._check_turns_in_uem(rttm_path, turns[uri], uem[uri], uem_path)
        else:
            uem = {
                uri: [UEMRegion(uri, 0.0, duration_s)] for uri, duration_s in durations_s.items()
            }
        for uri in turns:
            turns[uri].sort(key=lambda t: (t.onset_s, t.speaker))
        return cls(path=path, recordings=recordings, turns=turns, uem=uem, has_uem=has_uem)

    @staticmethod
    def _check_turns_in_uem(
        rttm_path: Path, turns: list[Turn], regions: list[UEMRegion], uem_path: Path
    ) -> None:
        for turn in turns:
            inside = any(
                r.start_s - TIME_TOLERANCE_S <= turn.onset_s
                and turn.offset_s <= r.end_s + TIME_TOLERANCE_S
                for r in regions
            )
            if not inside:
                spans = ", ".join(f"[{r.start_s:g}, {r.end_s:g}]" for r in regions) or "none"
                raise DataFormatError(
                    rttm_path,
                    turn.line_number,
                    _line_text(rttm_path, turn.line_number),
                    f"turn [{turn.onset_s:.3f}, {turn.offset_s:.3f}] is not inside a UEM region "
                    f"of {turn.uri!r} in {uem_path} (regions: {spans})",
                )

    # ------------------------------------------------------------------ queries
    def regions_array(self, uri: str) -> np.ndarray:
        """UEM regions of ``uri`` as a ``(num_regions, 2)`` array of ``[start_s, end_s)``."""
        return np.asarray([(r.start_s, r.end_s) for r in self.uem[uri]], dtype=np.float64).reshape(
            -1, 2
        )

    def all_turns(self) -> list[Turn]:
        """Every turn, recording by recording (``wav.scp`` order), each sorted by onset."""
        return [turn for uri in self.recordings for turn in self.turns[uri]]

    def all_regions(self) -> list[UEMRegion]:
        """Every UEM region (whole recordings when there is no ``uem`` file)."""
        return [region for uri in self.recordings for region in self.uem[uri]]

    def summary(self) -> DataSummary:
        """Count recordings, hours, speakers, speech and overlap (inside the UEM)."""
        speakers_per_recording: dict[str, int] = {}
        turns_per_speaker: Counter[str] = Counter()
        rows, speech_total, overlap_total, scored_total = [], 0.0, 0.0, 0.0
        headers = {uri: _audio_header(recording) for uri, recording in self.recordings.items()}
        for uri, (sample_rate, num_channels, duration_s) in headers.items():
            turns = self.turns[uri]
            regions = merge_intervals(self.regions_array(uri))
            scored_s = float((regions[:, 1] - regions[:, 0]).sum()) if len(regions) else 0.0
            speech_s, overlap_s = speech_and_overlap_s(turns, regions)
            speakers = {t.speaker for t in turns}
            speakers_per_recording[uri] = len(speakers)
            turns_per_speaker.update(t.speaker for t in turns)
            speech_total += speech_s
            overlap_total += overlap_s
            scored_total += scored_s
            rows.append(
                {
                    "uri": uri,
                    "duration_s": duration_s,
                    "scored_s": scored_s,
                    "speakers": len(speakers),
                    "turns": len(turns),
                    "speech_s": speech_s,
                    "overlap_s": overlap_s,
                    "sample_rate": sample_rate,
                    "channels": num_channels,
                }
            )
        return DataSummary(
            num_recordings=len(self.recordings),
            duration_s=sum(duration_s for _, _, duration_s in headers.values()),
            scored_s=scored_total,
            speech_s=speech_total,
            overlap_s=overlap_total,
            num_turns=sum(len(t) for t in self.turns.values()),
            speakers_per_recording=speakers_per_recording,
            turns_per_speaker=dict(sorted(turns_per_speaker.items())),
            sample_rates=dict(
                sorted(Counter(sample_rate for sample_rate, _, _ in headers.values()).items())
            ),
            channels=dict(
                sorted(Counter(num_channels for _, num_channels, _ in headers.values()).items())
            ),
            recordings=rows,
        )
