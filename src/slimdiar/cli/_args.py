"""Argument types shared by every command: checked output paths and numbers in range.

A value is checked when the command line is parsed, before any work starts, and a bad one is
reported by argparse under the flag's own name (``argument --jobs: must be >= 1, got 0``).
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable
from pathlib import Path

from slimdiar.errors import ConfigError
from slimdiar.fileio import output_path_problem


def output_file(text: str) -> Path:
    """An output FILE that can be written: not a directory, in a writable directory."""
    problem = output_path_problem(text, directory=False)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return Path(text)


def output_dir(text: str) -> Path:
    """An output DIRECTORY that exists or can be created, and can be written into."""
    problem = output_path_problem(text, directory=True)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return Path(text)


def int_at_least(low: int) -> Callable[[str], int]:
    """An integer type for argparse that refuses values below ``low``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


def positive_float(text: str) -> float:
    """A finite number above zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def with_flag_names(error: Exception, *names: str, **flags: str) -> ConfigError:
    """``error`` again, with each Python parameter in ``names`` spelled as its flag.

    Library checks name their parameters (``min_speakers``); the command line names the flags
    the user typed (``--min-speakers``). ``flags`` maps a parameter to a flag of another name
    (``min_speakers="--speakers-per-recording"``).
    """
    flags = {**{name: "--" + name.replace("_", "-") for name in names}, **flags}
    text = str(error)
    for name, flag in flags.items():
        text = re.sub(rf"(?<![\w-]){re.escape(name)}(?!\w)", flag, text)
    return ConfigError(text)


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)


def number(value: float) -> str:
    """A default as the help text shows it: the shorter of ``0.8`` / ``2e-4`` forms (``2e-4``)."""
    plain = f"{value:g}"
    mantissa, _, exponent = f"{value:e}".partition("e")
    scientific = f"{float(mantissa):g}e{int(exponent)}"
    return scientific if len(scientific) < len(plain) else plain
