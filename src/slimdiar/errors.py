"""Errors raised by slimdiar.

Every error subclasses a built-in exception so that callers who do not know slimdiar can still
catch it, and every message says what is wrong and what to do about it. The command line turns
any :class:`SlimdiarError` into a one-line message and a non-zero exit status instead of a
traceback.
"""

from __future__ import annotations


class SlimdiarError(Exception):
    """Base class of every error that slimdiar raises on purpose."""


class ConfigError(SlimdiarError, ValueError):
    """A configuration value, preset name or command-line option is invalid."""


class CheckpointError(SlimdiarError, ValueError):
    """A checkpoint is missing, unsafe to load, or does not match the model it is loaded into."""


class AudioError(SlimdiarError, ValueError):
    """Audio cannot be read or is unusable (empty, too short, not finite, wrong layout)."""


class DataFormatError(SlimdiarError, ValueError):
    """A line of a data file (wav.scp, RTTM, UEM, ...) is malformed or inconsistent.

    Parameters
    ----------
    path
        The file that holds the bad line.
    line_number
        1-based line number, or ``None`` when the problem concerns the whole file.
    line
        The offending line, as read.
    reason
        What is wrong with it.
    """

    def __init__(self, path, line_number: int | None, line: str | None, reason: str):
        self.path = str(path)
        self.line_number = line_number
        self.line = line
        self.reason = reason
        where = self.path if line_number is None else f"{self.path}:{line_number}"
        text = f"{where}: {reason}"
        if line is not None:
            text += f"\n    {line.rstrip()}"
        super().__init__(text)
