"""Small typed records for the contents of a data directory.

A :class:`Recording` is one audio file, a :class:`Turn` one speaker turn of an RTTM file and a
:class:`UEMRegion` one scored / trained region of a UEM file. Times are in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Turn:
    """One speaker turn: ``speaker`` talks in ``[onset_s, onset_s + duration_s)`` of ``uri``.

    Parameters
    ----------
    uri
        Recording id (RTTM field 2).
    onset_s
        Start of the turn in seconds.
    duration_s
        Length of the turn in seconds (> 0).
    speaker
        Speaker label (RTTM field 8).
    channel
        Channel field of the RTTM line (RTTM field 3, usually 1).
    line_number
        1-based line of the RTTM file the turn came from, when read from a file.
    """

    uri: str
    onset_s: float
    duration_s: float
    speaker: str
    channel: int = 1
    line_number: int | None = field(default=None, compare=False, repr=False)

    @property
    def offset_s(self) -> float:
        """End of the turn in seconds."""
        return self.onset_s + self.duration_s


@dataclass(frozen=True)
class UEMRegion:
    """One region ``[start_s, end_s)`` of ``uri`` that is scored (and trained on).

    Parameters
    ----------
    uri
        Recording id.
    start_s, end_s
        Bounds of the region in seconds (``end_s > start_s``).
    channel
        Channel field of the UEM line (usually 1).
    line_number
        1-based line of the UEM file the region came from, when read from a file.
    """

    uri: str
    start_s: float
    end_s: float
    channel: int = 1
    line_number: int | None = field(default=None, compare=False, repr=False)

    @property
    def duration_s(self) -> float:
        """Length of the region in seconds."""
        return self.end_s - self.start_s


@dataclass(frozen=True)
class Recording:
    """One audio file of a data directory.

    Parameters
    ----------
    uri
        Recording id (first field of ``wav.scp``).
    path
        Absolute path of the audio file.
    sample_rate
        Native sample rate in Hz, once the audio header has been read (else ``None``).
    num_channels
        Number of channels, once known.
    num_frames
        Number of samples per channel at the native rate, once known.
    line_number
        1-based line of ``wav.scp`` the recording came from, when read from a file.
    """

    uri: str
    path: Path
    sample_rate: int | None = None
    num_channels: int | None = None
    num_frames: int | None = None
    line_number: int | None = field(default=None, compare=False, repr=False)

    @property
    def duration_s(self) -> float | None:
        """Length of the audio in seconds, or ``None`` while the header is unread."""
        if self.sample_rate is None or self.num_frames is None:
            return None
        return self.num_frames / self.sample_rate
