"""Strict readers and atomic writers for Kaldi ``wav.scp``, RTTM and UEM files.

Every reader raises :class:`~slimdiar.errors.DataFormatError` naming the file, the 1-based line
number, the line and what is wrong with it. Blank lines are skipped; RTTM and UEM files may hold
NIST comment lines starting with ``;;``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from pathlib import Path

from slimdiar.data.records import Recording, Turn, UEMRegion
from slimdiar.errors import DataFormatError
from slimdiar.fileio import write_text_atomic

RTTM_NUM_FIELDS = 10


def _lines(path: Path, *, comments: bool) -> Iterator[tuple[int, str, list[str]]]:
    """Yield ``(line_number, line, fields)`` of the non-blank (non-comment) lines of ``path``."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataFormatError(path, None, None, "no such file") from None
    except UnicodeDecodeError as error:
        raise DataFormatError(path, None, None, f"not UTF-8 text ({error})") from None
    except OSError as error:
        raise DataFormatError(path, None, None, f"cannot read ({error.strerror})") from None
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields or (comments and fields[0].startswith(";;")):
            continue
        yield number, line, fields


def _number(path: Path, number: int, line: str, text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise DataFormatError(path, number, line, f"{what} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise DataFormatError(path, number, line, f"{what} {text!r} is not a finite number")
    return value


def _channel(path: Path, number: int, line: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise DataFormatError(path, number, line, f"channel {text!r} is not an integer") from None


# ---------------------------------------------------------------------- wav.scp
def read_wav_scp(path: str | Path) -> list[Recording]:
    """Read a Kaldi ``wav.scp`` file: ``<recording-id> <path>`` per line.

    Relative audio paths are resolved against the directory of the ``wav.scp`` file. Piped
    commands (``... |``) are rejected: convert such audio to files first.

    Parameters
    ----------
    path
        The ``wav.scp`` file.

    Returns
    -------
    list of Recording
        In file order, without audio header information.

    Raises
    ------
    DataFormatError
        On a line without a path, a piped command or a duplicate recording id.
    """
    path = Path(path)
    recordings: list[Recording] = []
    seen: dict[str, int] = {}
    for number, line, fields in _lines(path, comments=False):
        if len(fields) < 2:
            raise DataFormatError(
                path, number, line, "expected '<recording-id> <path>' but found 1 field"
            )
        uri = fields[0]
        audio = line.strip()[len(uri) :].strip()
        if audio.endswith("|"):
            raise DataFormatError(
                path,
                number,
                line,
                "piped commands are not supported: write the audio to a file and list its path",
            )
        if uri in seen:
            raise DataFormatError(
                path, number, line, f"duplicate recording id {uri!r} (first on line {seen[uri]})"
            )
        seen[uri] = number
        audio_path = Path(audio)
        if not audio_path.is_absolute():
            audio_path = path.parent / audio_path
        recordings.append(Recording(uri=uri, path=audio_path.resolve(), line_number=number))
    return recordings


def write_wav_scp(path: str | Path, recordings: Iterable[Recording]) -> None:
    """Write ``recordings`` as a ``wav.scp`` file (absolute paths), atomically.

    Parameters
    ----------
    path
        Destination file.
    recordings
        Recordings to list, in order.
    """
    lines = []
    for recording in recordings:
        if any(c.isspace() for c in recording.uri) or not recording.uri:
            raise DataFormatError(path, None, None, f"invalid recording id {recording.uri!r}")
        lines.append(f"{recording.uri} {Path(recording.path).resolve()}\n")
    write_text_atomic(path, "".join(lines))


# ---------------------------------------------------------------------- RTTM
def read_rttm(path: str | Path) -> list[Turn]:
    """Read an RTTM file of ``SPEAKER`` lines.

    Each line is ``SPEAKER <file> <chan> <onset> <duration> <NA> <NA> <speaker> <NA> <NA>``.

    Parameters
    ----------
    path
        The RTTM file.

    Returns
    -------
    list of Turn
        In file order.

    Raises
    ------
    DataFormatError
        On a wrong field count, a type other than ``SPEAKER``, a non-numeric or negative onset, a
        non-positive duration, a non-integer channel or a duplicate turn.
    """
    path = Path(path)
    turns: list[Turn] = []
    seen: dict[tuple, int] = {}
    for number, line, fields in _lines(path, comments=True):
        if len(fields) != RTTM_NUM_FIELDS:
            raise DataFormatError(
                path,
                number,
                line,
                f"expected {RTTM_NUM_FIELDS} fields 'SPEAKER <file> <chan> <onset> <duration> "
                f"<NA> <NA> <speaker> <NA> <NA>' but found {len(fields)}",
            )
        if fields[0] != "SPEAKER":
            raise DataFormatError(
                path, number, line, f"type {fields[0]!r} is not supported (expected 'SPEAKER')"
            )
        channel = _channel(path, number, line, fields[2])
        onset_s = _number(path, number, line, fields[3], "onset")
        duration_s = _number(path, number, line, fields[4], "duration")
        if onset_s < 0:
            raise DataFormatError(path, number, line, f"negative onset {onset_s}")
        if duration_s < 0:
            raise DataFormatError(path, number, line, f"negative duration {duration_s}")
        if duration_s == 0:
            raise DataFormatError(path, number, line, "zero duration: remove empty turns")
        turn = Turn(
            uri=fields[1],
            onset_s=onset_s,
            duration_s=duration_s,
            speaker=fields[7],
            channel=channel,
            line_number=number,
        )
        key = (turn.uri, turn.speaker, onset_s, duration_s)
        if key in seen:
            raise DataFormatError(path, number, line, f"duplicate turn (first on line {seen[key]})")
        seen[key] = number
        turns.append(turn)
    return turns


def format_rttm_line(turn: Turn) -> str:
    """Format one turn as an RTTM line (times with millisecond precision, no newline)."""
    return (
        f"SPEAKER {turn.uri} {turn.channel} {turn.onset_s:.3f} {turn.duration_s:.3f} "
        f"<NA> <NA> {turn.speaker} <NA> <NA>"
    )


def write_rttm(path: str | Path, turns: Iterable[Turn]) -> None:
    """Write ``turns`` as an RTTM file, atomically.

    Parameters
    ----------
    path
        Destination file.
    turns
        Turns to write, in order.
    """
    lines = []
    for turn in turns:
        for name in (turn.uri, turn.speaker):
            if not name or any(c.isspace() for c in name):
                raise DataFormatError(path, None, None, f"RTTM names cannot hold spaces: {name!r}")
        lines.append(format_rttm_line(turn) + "\n")
    write_text_atomic(path, "".join(lines))


# ---------------------------------------------------------------------- UEM
def read_uem(path: str | Path) -> list[UEMRegion]:
    """Read a UEM file: ``<file> <chan> <start> <end>`` per line.

    Parameters
    ----------
    path
        The UEM file.

    Returns
    -------
    list of UEMRegion
        In file order.

    Raises
    ------
    DataFormatError
        On a wrong field count, non-numeric or negative times, ``end <= start`` or regions of the
        same recording that overlap.
    """
    path = Path(path)
    regions: list[UEMRegion] = []
    for number, line, fields in _lines(path, comments=True):
        if len(fields) != 4:
            raise DataFormatError(
                path,
                number,
                line,
                f"expected 4 fields '<file> <chan> <start> <end>' but found {len(fields)}",
            )
        channel = _channel(path, number, line, fields[1])
        start_s = _number(path, number, line, fields[2], "start")
        end_s = _number(path, number, line, fields[3], "end")
        if start_s < 0:
            raise DataFormatError(path, number, line, f"negative start {start_s}")
        if end_s <= start_s:
            raise DataFormatError(path, number, line, f"end {end_s} is not after start {start_s}")
        regions.append(
            UEMRegion(
                uri=fields[0], start_s=start_s, end_s=end_s, channel=channel, line_number=number
            )
        )
    _check_uem_overlaps(path, regions)
    return regions


def _check_uem_overlaps(path: Path, regions: list[UEMRegion]) -> None:
    by_uri: dict[str, list[UEMRegion]] = {}
    for region in regions:
        by_uri.setdefault(region.uri, []).append(region)
    for uri_regions in by_uri.values():
        ordered = sorted(uri_regions, key=lambda r: (r.start_s, r.end_s))
        for previous, current in zip(ordered, ordered[1:]):
            if current.start_s < previous.end_s:
                earlier, later = sorted((previous, current), key=lambda r: r.line_number or 0)
                raise DataFormatError(
                    path,
                    later.line_number,
                    _line_text(path, later.line_number),
                    f"region [{later.start_s}, {later.end_s}] of {later.uri!r} overlaps region "
                    f"[{earlier.start_s}, {earlier.end_s}] on line {earlier.line_number}",
                )


def write_uem(path: str | Path, regions: Iterable[UEMRegion]) -> None:
    """Write ``regions`` as a UEM file, atomically.

    Parameters
    ----------
    path
        Destination file.
    regions
        Regions to write, in order.
    """
    lines = [f"{r.uri} {r.channel} {r.start_s:.3f} {r.end_s:.3f}\n" for r in regions]
    write_text_atomic(path, "".join(lines))


def _line_text(path: Path, line_number: int | None) -> str | None:
    """Return line ``line_number`` of ``path`` (for error messages), or ``None``."""
    if line_number is None:
        return None
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    return lines[line_number - 1] if 0 < line_number <= len(lines) else None
