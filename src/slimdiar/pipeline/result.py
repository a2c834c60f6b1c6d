"""The output of the diarization pipeline: turns, exclusive turns, and how they were made."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace

from slimdiar.data.formats import format_rttm_line
from slimdiar.data.records import Turn


@dataclass
class DiarizationResult:
    """Who spoke when in one recording.

    Parameters
    ----------
    uri
        Recording id used in the turns.
    duration_s
        Length of the recording in seconds.
    turns
        Speaker turns (overlapping speech gives overlapping turns), sorted by onset.
    exclusive_turns
        The same speech with at most one speaker at a time (the most likely one), sorted by onset.
    speakers
        Global speaker labels, in order of first appearance.
    info
        How the result was made: models, options, speaker-count bounds, per-stage timings,
        warnings (JSON-serialisable).
    """

    uri: str
    duration_s: float
    turns: list[Turn]
    exclusive_turns: list[Turn]
    speakers: list[str]
    info: dict = field(default_factory=dict)

    def cropped(self, regions: list[tuple[float, float]]) -> DiarizationResult:
        """The result restricted to ``regions`` (``(start_s, end_s)`` pairs, e.g. of a UEM).

        Turns are cut at the region bounds; speakers left without a turn are dropped.
        """

        def crop(turns: list[Turn]) -> list[Turn]:
            kept = []
            for turn in turns:
                for start_s, end_s in regions:
                    onset_s = max(turn.onset_s, start_s)
                    offset_s = min(turn.onset_s + turn.duration_s, end_s)
                    if offset_s > onset_s:
                        kept.append(replace(turn, onset_s=onset_s, duration_s=offset_s - onset_s))
            return sorted(kept, key=lambda t: (t.onset_s, t.speaker))

        turns = crop(self.turns)
        speaking = {turn.speaker for turn in turns}
        info = {**self.info, "regions_s": [list(region) for region in regions]}
        return replace(
            self,
            turns=turns,
            exclusive_turns=crop(self.exclusive_turns),
            speakers=[s for s in self.speakers if s in speaking],
            info=info,
        )

    @property
    def num_speakers(self) -> int:
        """Number of distinct speakers with at least one turn."""
        return len(self.speakers)

    def to_rttm(self, uri: str | None = None, exclusive: bool = False) -> str:
        """The turns as RTTM text (one line per turn; empty for a recording without speech).

        Parameters
        ----------
        uri
            Recording id to write in field 2 (default: :attr:`uri`).
        exclusive
            Write :attr:`exclusive_turns` instead of :attr:`turns`.
        """
        uri = self.uri if uri is None else uri
        turns = self.exclusive_turns if exclusive else self.turns
        lines = []
        for t in turns:
            # Round both ends to the millisecond (not onset and duration apart), so that turns
            # that meet still meet in the file; a turn shorter than that has no RTTM form. The
            # first rounding removes float noise that would send equal times different ways.
            onset_s = round(round(t.onset_s, 9), 3)
            offset_s = round(round(t.onset_s + t.duration_s, 9), 3)
            if offset_s > onset_s:
                turn = Turn(uri, onset_s, offset_s - onset_s, t.speaker, t.channel)
                lines.append(format_rttm_line(turn) + "\n")
        return "".join(lines)

    def to_dict(self) -> dict:
        """Plain-JSON form of the whole result."""

        def turn_dict(turn: Turn) -> dict:
            return {
                "onset_s": round(turn.onset_s, 6),
                "duration_s": round(turn.duration_s, 6),
                "speaker": turn.speaker,
            }

        return {
            "uri": self.uri,
            "duration_s": self.duration_s,
            "num_speakers": self.num_speakers,
            "speakers": list(self.speakers),
            "turns": [turn_dict(t) for t in self.turns],
            "exclusive_turns": [turn_dict(t) for t in self.exclusive_turns],
            **self.info,
        }

    def to_json(self) -> str:
        """:meth:`to_dict` as indented JSON text."""
        return json.dumps(self.to_dict(), indent=2) + "\n"
