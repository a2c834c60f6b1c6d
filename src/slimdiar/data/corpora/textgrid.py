"""A small, strict reader of Praat TextGrid files (text format, long or short).

AISHELL-4 and AliMeeting annotate each speaker on one interval tier of a TextGrid; an interval
with non-blank text is speech. Praat's text format is a sequence of values (numbers, quoted
strings, ``<exists>`` flags) that the long ("verbose") variant decorates with labels such as
``xmin =`` or ``intervals [3]:``; like Praat itself, this reader keeps the values and skips the
labels, so both variants read the same. Files may be UTF-8 (with or without a byte-order mark)
or UTF-16 with a byte-order mark, as Praat writes them.

Every problem is a :class:`~slimdiar.errors.DataFormatError` that names the file and the line.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

from slimdiar.data.corpora.common import speaker_label
from slimdiar.data.records import Turn
from slimdiar.errors import DataFormatError

logger = logging.getLogger(__name__)

# Interval bounds may disagree by this much (rounding in the files) before it is an error.
TIME_EPSILON_S = 1e-6

_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


@dataclass(frozen=True)
class Interval:
    """One interval of an interval tier: ``[start_s, end_s)`` with its text."""

    start_s: float
    end_s: float
    text: str
    line_number: int


@dataclass(frozen=True)
class IntervalTier:
    """A named interval tier; ``intervals`` are sorted and do not overlap."""

    name: str
    start_s: float
    end_s: float
    intervals: tuple[Interval, ...]
    line_number: int


@dataclass(frozen=True)
class TextGrid:
    """The interval tiers of a TextGrid (point tiers are dropped: they carry no durations)."""

    path: Path
    start_s: float
    end_s: float
    tiers: tuple[IntervalTier, ...]


@dataclass(frozen=True)
class _Token:
    kind: str  # "number", "string" or "flag"
    value: str
    line_number: int


def _decode(path: Path, data: bytes) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        encoding = "utf-16"
    elif data.startswith(b"\xef\xbb\xbf"):
        encoding = "utf-8-sig"
    else:
        encoding = "utf-8"
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as error:
        raise DataFormatError(
            path,
            None,
            None,
            f"not {encoding.upper()} text ({error}); TextGrids must be UTF-8 "
            "or UTF-16 with a byte-order mark",
        ) from None


def _tokens(path: Path, text: str) -> list[_Token]:
    """Split ``text`` into values, skipping labels; strings may span lines (``""`` escapes)."""
    tokens: list[_Token] = []
    position, line_number, size = 0, 1, len(text)
    while position < size:
        char = text[position]
        if char == "\n":
            line_number += 1
            position += 1
        elif char.isspace():
            position += 1
        elif char == '"':
            start_line = line_number
            position += 1
            parts = []
            while True:
                end = text.find('"', position)
                if end < 0:
                    raise DataFormatError(
                        path, start_line, _line(text, start_line), "unterminated string"
                    )
                parts.append(text[position:end])
                line_number += text.count("\n", position, end)
                if end + 1 < size and text[end + 1] == '"':
                    parts.append('"')
                    position = end + 2
                else:
                    position = end + 1
                    break
            tokens.append(_Token("string", "".join(parts), start_line))
        else:
            end = position
            while end < size and not text[end].isspace() and text[end] != '"':
                end += 1
            word = text[position:end]
            if word in ("<exists>", "<absent>"):
                tokens.append(_Token("flag", word, line_number))
            elif _NUMBER.fullmatch(word):
                tokens.append(_Token("number", word, line_number))
            elif word[0].isdigit() or word[0] in "+-.":
                raise DataFormatError(
                    path, line_number, _line(text, line_number), f"{word!r} is not a number"
                )
            position = end
    return tokens


def _line(text: str, line_number: int) -> str | None:
    lines = text.splitlines()
    return lines[line_number - 1] if 0 < line_number <= len(lines) else None


class _Reader:
    def __init__(self, path: Path, text: str):
        self.path, self.text = path, text
        self.tokens = _tokens(path, text)
        self.index = 0

    def error(self, token: _Token | None, reason: str) -> DataFormatError:
        if token is None:
            return DataFormatError(self.path, None, None, f"unexpected end of file: {reason}")
        return DataFormatError(
            self.path, token.line_number, _line(self.text, token.line_number), reason
        )

    def next(self, kind: str, what: str) -> _Token:
        if self.index >= len(self.tokens):
            raise self.error(None, f"expected {what}")
        token = self.tokens[self.index]
        if token.kind != kind:
            raise self.error(token, f"expected {what} but found {token.kind} {token.value!r}")
        self.index += 1
        return token

    def number(self, what: str) -> tuple[float, _Token]:
        token = self.next("number", what)
        value = float(token.value)
        if not math.isfinite(value):
            raise self.error(token, f"{what} {token.value!r} is not finite")
        return value, token

    def count(self, what: str) -> int:
        value, token = self.number(what)
        if value < 0 or value != int(value):
            raise self.error(token, f"{what} {token.value!r} is not a non-negative integer")
        return int(value)


def read_textgrid(path: str | Path) -> TextGrid:
    """Read a Praat TextGrid (long or short text format).

    Parameters
    ----------
    path
        The ``.TextGrid`` file.

    Returns
    -------
    TextGrid
        Its interval tiers, in file order.

    Raises
    ------
    DataFormatError
        If the file is missing or not a TextGrid, a value is missing or malformed, an interval
        ends before it starts, or the intervals of a tier are out of order or overlap.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataFormatError(path, None, None, "no such file") from None
    except OSError as error:
        raise DataFormatError(path, None, None, f"cannot read ({error.strerror})") from None
    text = _decode(path, data)
    reader = _Reader(path, text)
    file_type = reader.next("string", 'the file type "ooTextFile"')
    if file_type.value != "ooTextFile":
        raise reader.error(
            file_type,
            f'file type {file_type.value!r} is not "ooTextFile" '
            "(binary TextGrids are not supported: save as text in Praat)",
        )
    object_class = reader.next("string", 'the object class "TextGrid"')
    if object_class.value != "TextGrid":
        raise reader.error(object_class, f'object class {object_class.value!r} is not "TextGrid"')
    start_s, _ = reader.number("xmin of the TextGrid")
    end_s, end_token = reader.number("xmax of the TextGrid")
    if end_s < start_s:
        raise reader.error(end_token, f"TextGrid xmax {end_s} is before xmin {start_s}")
    flag = reader.next("flag", "<exists> or <absent> (tiers)")
    num_tiers = reader.count("number of tiers") if flag.value == "<exists>" else 0
    tiers = []
    for _ in range(num_tiers):
        tier = _read_tier(reader)
        if tier is not None:
            tiers.append(tier)
    if reader.index != len(reader.tokens):
        raise reader.error(
            reader.tokens[reader.index], f"unexpected value after the last of {num_tiers} tiers"
        )
    return TextGrid(path=path, start_s=start_s, end_s=end_s, tiers=tuple(tiers))


def _read_tier(reader: _Reader) -> IntervalTier | None:
    tier_class = reader.next("string", 'a tier class ("IntervalTier" or "TextTier")')
    name = reader.next("string", "a tier name").value
    tier_start_s, _ = reader.number(f"xmin of tier {name!r}")
    tier_end_s, _ = reader.number(f"xmax of tier {name!r}")
    if tier_class.value == "TextTier":
        for _ in range(reader.count(f"number of points of tier {name!r}")):
            reader.number(f"a point time of tier {name!r}")
            reader.next("string", f"a point mark of tier {name!r}")
        return None
    if tier_class.value != "IntervalTier":
        raise reader.error(
            tier_class,
            f'unknown tier class {tier_class.value!r} (expected "IntervalTier" or "TextTier")',
        )
    intervals: list[Interval] = []
    for _ in range(reader.count(f"number of intervals of tier {name!r}")):
        start_s, start_token = reader.number(f"xmin of an interval of tier {name!r}")
        end_s, end_token = reader.number(f"xmax of an interval of tier {name!r}")
        text = reader.next("string", f"the text of an interval of tier {name!r}").value
        if end_s < start_s:
            raise reader.error(
                end_token, f"interval of tier {name!r} ends ({end_s}) before it starts ({start_s})"
            )
        if intervals and start_s < intervals[-1].end_s - TIME_EPSILON_S:
            previous = intervals[-1]
            raise reader.error(
                start_token,
                f"interval [{start_s}, {end_s}] of tier {name!r} "
                f"starts before the previous one ends ([{previous.start_s}, "
                f"{previous.end_s}] on line {previous.line_number})",
            )
        intervals.append(Interval(start_s, end_s, text, start_token.line_number))
    return IntervalTier(
        name=name,
        start_s=tier_start_s,
        end_s=tier_end_s,
        intervals=tuple(intervals),
        line_number=tier_class.line_number,
    )


def speech_turns(
    textgrid: TextGrid, uri: str, non_speech: tuple[str, ...] | frozenset[str] = ()
) -> list[Turn]:
    """One turn per interval with non-blank text; each tier is a speaker.

    Parameters
    ----------
    textgrid
        A TextGrid whose interval tiers are speakers.
    uri
        Recording id of the turns.
    non_speech
        Interval texts (after stripping whitespace) that mark something other than speech.

    Returns
    -------
    list of Turn
        Speaker labels are the tier names with whitespace replaced by ``_``; tiers that share a
        name are one speaker. Zero-length intervals are dropped.
    """
    turns = []
    labels = [speaker_label(tier.name) for tier in textgrid.tiers]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        logger.warning(
            "%s: tiers %s appear more than once and are merged", textgrid.path, ", ".join(repeated)
        )
    for tier, label in zip(textgrid.tiers, labels):
        for interval in tier.intervals:
            text = interval.text.strip()
            if text and text not in non_speech and interval.end_s > interval.start_s:
                turns.append(Turn(uri, interval.start_s, interval.end_s - interval.start_s, label))
    return turns
