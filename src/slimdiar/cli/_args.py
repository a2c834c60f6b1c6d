"""Argument types shared by every command: checked output paths and numbers in range.

A value is checked when the command line is parsed, before any work starts, and a bad one is
reported by argparse under the flag's own name (``argument --jobs: must be >= 1, got 0``).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path

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
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
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


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)
