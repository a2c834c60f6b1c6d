"""What every corpus preparation shares: turn clean-up, channel extraction, writing a data dir.

A corpus module turns its release layout into :class:`CorpusRecording` records (an id, an audio
file, the annotated turns and the annotated span); :func:`write_datadir` then reads each audio
header, clips the turns to the audio and the span, optionally writes one channel of the audio
to a mono file, writes ``wav.scp``, ``rttm`` and ``uem`` atomically and loads the result back
with :meth:`~slimdiar.data.DataDir.load` to check it.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile

from slimdiar.data.audio import audio_info
from slimdiar.data.datadir import DataDir
from slimdiar.data.formats import write_rttm, write_uem, write_wav_scp
from slimdiar.data.records import Recording, Turn, UEMRegion
from slimdiar.errors import AudioError, DataFormatError

logger = logging.getLogger(__name__)

# RTTM and UEM files hold times in milliseconds.
TIME_RESOLUTION_S = 0.001
# Samples per block when a channel is copied out of a multi-channel file.
BLOCK_NUM_FRAMES = 1 << 18


@dataclass
class CorpusRecording:
    """One recording of a corpus, before it is written to a data directory.

    Parameters
    ----------
    uri
        Recording id (no whitespace).
    audio_path
        The corpus audio file.
    turns
        Annotated turns of the recording (any order; a speaker's turns may touch or overlap).
    span_s
        ``(start_s, end_s)`` annotated span, or ``None`` for the whole recording. The UEM is this
        span clipped to the audio.
    """

    uri: str
    audio_path: Path
    turns: list[Turn] = field(default_factory=list)
    span_s: tuple[float, float] | None = None


@dataclass
class PreparedSubset:
    """What :func:`write_datadir` wrote: the directory and a few counts."""

    path: Path
    num_recordings: int
    num_turns: int
    duration_s: float
    num_clipped_turns: int


def speaker_label(name: str) -> str:
    """An RTTM speaker label from an annotation name (whitespace becomes ``_``)."""
    label = re.sub(r"\s+", "_", name.strip())
    return label or "unnamed"


def merge_turns(turns: Iterable[Turn], max_gap_s: float = 0.0) -> list[Turn]:
    """Merge the turns of each speaker that overlap or are at most ``max_gap_s`` apart.

    Parameters
    ----------
    turns
        Turns of one recording.
    max_gap_s
        Largest pause (seconds) between two turns of one speaker that is bridged; 0 merges only
        turns that touch or overlap.

    Returns
    -------
    list of Turn
        Sorted by onset, then speaker.
    """
    by_speaker: dict[str, list[Turn]] = {}
    for turn in turns:
        by_speaker.setdefault(turn.speaker, []).append(turn)
    merged: list[Turn] = []
    for speaker_turns in by_speaker.values():
        speaker_turns.sort(key=lambda t: (t.onset_s, t.offset_s))
        current = speaker_turns[0]
        for turn in speaker_turns[1:]:
            if turn.onset_s <= current.offset_s + max_gap_s + 1e-9:
                end_s = max(current.offset_s, turn.offset_s)
                current = Turn(
                    current.uri,
                    current.onset_s,
                    end_s - current.onset_s,
                    current.speaker,
                    current.channel,
                )
            else:
                merged.append(current)
                current = turn
        merged.append(current)
    merged.sort(key=lambda t: (t.onset_s, t.speaker))
    return merged


def clip_turns(turns: Iterable[Turn], start_s: float, end_s: float) -> tuple[list[Turn], int]:
    """Clip turns to ``[start_s, end_s]`` on the millisecond grid of RTTM files.

    Returns
    -------
    tuple
        The clipped turns (those left with less than a millisecond dropped) and the number of
        turns that were shortened or dropped.
    """
    kept, changed = [], 0
    for turn in turns:
        onset_s = round(max(turn.onset_s, start_s), 3)
        offset_s = round(min(turn.offset_s, end_s), 3)
        if onset_s != round(turn.onset_s, 3) or offset_s != round(turn.offset_s, 3):
            changed += 1
        if offset_s - onset_s >= TIME_RESOLUTION_S - 1e-9:
            kept.append(Turn(turn.uri, onset_s, round(offset_s - onset_s, 3), turn.speaker, 1))
    return kept, changed


def extract_channel(source: Path, destination: Path, channel: int) -> Path:
    """Write channel ``channel`` of ``source`` to the mono WAV file ``destination``, atomically.

    The audio is copied block by block with its sample rate and (where WAV allows it) its
    sample format. An existing ``destination`` with the right length, rate and a single channel
    is kept, so an interrupted preparation can be run again cheaply.

    Parameters
    ----------
    source
        Multi-channel (or mono) audio file.
    destination
        Mono ``.wav`` file to write.
    channel
        0-based channel to keep.

    Returns
    -------
    pathlib.Path
        ``destination``.

    Raises
    ------
    AudioError
        If ``source`` cannot be read or lacks the channel.
    """
    info = audio_info(source)
    if not 0 <= channel < info.num_channels:
        raise AudioError(
            f"{source}: channel {channel} requested but the audio has "
            f"{info.num_channels} channel(s)"
        )
    if destination.is_file():
        try:
            existing = audio_info(destination)
        except AudioError:
            existing = None
        if existing == type(info)(info.sample_rate, 1, info.num_frames):
            logger.debug("%s exists, kept", destination)
            return destination
    destination.parent.mkdir(parents=True, exist_ok=True)
    with soundfile.SoundFile(str(source)) as sound:
        subtype = sound.subtype if soundfile.check_format("WAV", sound.subtype) else "FLOAT"
        handle, tmp_name = tempfile.mkstemp(
            prefix=f".{destination.name}.", suffix=".wav", dir=destination.parent
        )
        os.close(handle)
        try:
            with soundfile.SoundFile(
                tmp_name,
                "w",
                samplerate=sound.samplerate,
                channels=1,
                subtype=subtype,
                format="WAV",
            ) as out:
                while True:
                    block = sound.read(BLOCK_NUM_FRAMES, dtype="float64", always_2d=True)
                    if len(block) == 0:
                        break
                    out.write(np.ascontiguousarray(block[:, channel]))
            os.replace(tmp_name, destination)
        except BaseException:
            if os.path.exists(tmp_name):
                os.unlink(tmp_name)
            raise
    return destination


def write_datadir(
    recordings: list[CorpusRecording],
    out_dir: str | Path,
    *,
    channel: int = 0,
    extract_to: str | Path | None = None,
) -> PreparedSubset:
    """Write ``recordings`` as a data directory (``wav.scp``, ``rttm``, ``uem``) and check it.

    Parameters
    ----------
    recordings
        Recordings of one subset, in the order to list them.
    out_dir
        The data directory (created).
    channel
        Channel that training and inference will read (0-based); every recording must have it.
    extract_to
        If given, channel ``channel`` of each recording is written to ``EXTRACT_TO/<uri>.wav``
        and ``wav.scp`` lists those mono files instead of the corpus files.

    Returns
    -------
    PreparedSubset
        The directory and counts.

    Raises
    ------
    DataFormatError
        On duplicate recording ids, a recording without the channel, or an empty span.
    AudioError
        If an audio file cannot be read.
    """
    out_dir = Path(out_dir)
    if not recordings:
        raise DataFormatError(out_dir, None, None, "no recordings to write")
    seen: set[str] = set()
    listed, turns_out, regions = [], [], []
    duration_total_s, clipped_total = 0.0, 0
    for recording in recordings:
        if recording.uri in seen:
            raise DataFormatError(
                recording.audio_path, None, None, f"recording id {recording.uri!r} appears twice"
            )
        seen.add(recording.uri)
        info = audio_info(recording.audio_path)
        if not 0 <= channel < info.num_channels:
            raise DataFormatError(
                recording.audio_path,
                None,
                None,
                f"channel {channel} requested but the audio has {info.num_channels} channel(s)",
            )
        start_s, end_s = 0.0, info.duration_s
        if recording.span_s is not None and recording.span_s[1] > info.duration_s + 1.0:
            logger.warning(
                "%s: the annotation spans %.3f s but the audio lasts %.3f s: annotation and "
                "audio may not match; turns past the audio are dropped",
                recording.uri,
                recording.span_s[1],
                info.duration_s,
            )
        if recording.span_s is not None:
            start_s = max(start_s, recording.span_s[0])
            end_s = min(end_s, recording.span_s[1])
        start_s, end_s = round(start_s, 3), round(end_s, 3)
        if end_s <= start_s:
            raise DataFormatError(
                recording.audio_path,
                None,
                None,
                f"annotated span {recording.span_s} does not overlap the "
                f"audio (0 to {info.duration_s:.3f} s)",
            )
        turns, clipped = clip_turns(merge_turns(recording.turns), start_s, end_s)
        if clipped:
            logger.warning(
                "%s: %d turn(s) clipped to the audio / annotated span [%.3f, %.3f]",
                recording.uri,
                clipped,
                start_s,
                end_s,
            )
        audio_path = recording.audio_path
        if extract_to is not None:
            audio_path = extract_channel(
                recording.audio_path, Path(extract_to) / f"{recording.uri}.wav", channel
            )
        listed.append(Recording(uri=recording.uri, path=Path(audio_path).resolve()))
        turns_out.extend(turns)
        regions.append(UEMRegion(recording.uri, start_s, end_s))
        duration_total_s += info.duration_s
        clipped_total += clipped
    out_dir.mkdir(parents=True, exist_ok=True)
    write_wav_scp(out_dir / "wav.scp", listed)
    write_rttm(out_dir / "rttm", turns_out)
    write_uem(out_dir / "uem", regions)
    DataDir.load(out_dir, channel=0 if extract_to is not None else channel)
    logger.info(
        "%s: %d recordings, %d turns, %.1f h",
        out_dir,
        len(listed),
        len(turns_out),
        duration_total_s / 3600,
    )
    return PreparedSubset(out_dir, len(listed), len(turns_out), duration_total_s, clipped_total)
