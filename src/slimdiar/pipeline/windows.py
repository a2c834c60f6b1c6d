"""Stage 1 of the pipeline: sliding windows over a recording and its frame grid.

A recording of ``num_samples`` samples is cut into windows ("chunks") of ``window_samples``
samples every ``step_samples`` samples. The last window starts on the step grid and is zero-padded
so that the windows cover the recording to its last sample (a recording shorter than one window
gives one padded window). Inside a window the model emits frames every ``frame_step_samples``
samples, each seeing ``receptive_field_samples`` samples; the same grid
(:class:`slimdiar.frames.FrameGrid`), started at sample 0 of the recording, is the global frame
grid on which the chunks are aggregated.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from slimdiar.errors import ConfigError
from slimdiar.frames import FrameGrid


@dataclass(frozen=True)
class Windows:
    """Positions of the sliding windows over one recording.

    Parameters
    ----------
    start_samples
        ``(num_chunks,)`` int64 first sample of each window.
    window_samples
        Length of every window in samples (the last one is zero-padded past the recording end).
    num_samples
        Length of the recording in samples.
    """

    start_samples: np.ndarray
    window_samples: int
    num_samples: int

    @property
    def num_chunks(self) -> int:
        """Number of windows."""
        return int(len(self.start_samples))

    def start_frames(self, grid: FrameGrid) -> np.ndarray:
        """``(num_chunks,)`` index, on the global frame grid, of each window's first frame.

        Window starts that are not a whole number of frame steps are rounded to the closest frame.
        """
        return np.rint(self.start_samples / grid.frame_step_samples).astype(np.int64)


def sliding_windows(num_samples: int, window_samples: int, step_samples: int) -> Windows:
    """Place windows of ``window_samples`` every ``step_samples`` so that they cover a recording.

    Windows start at ``0, step, 2 * step, ...`` while they fit in the recording; if samples remain
    after the last full window (or the recording is shorter than a window), one more window
    starts at the next step position and is zero-padded at read time.

    Parameters
    ----------
    num_samples
        Length of the recording in samples (>= 1).
    window_samples
        Window length in samples.
    step_samples
        Samples between the starts of two consecutive windows (``<= window_samples``).

    Returns
    -------
    Windows
        The window positions.

    Raises
    ------
    ConfigError
        If a length is not positive, or the step is longer than the window (samples would be
        skipped).
    """
    if window_samples < 1 or step_samples < 1:
        raise ConfigError(
            f"window ({window_samples}) and step ({step_samples}) must be at least one sample"
        )
    if step_samples > window_samples:
        raise ConfigError(
            f"the step ({step_samples} samples) must not exceed the window ({window_samples} "
            "samples), or parts of the recording would never be seen"
        )
    if num_samples < 1:
        raise ConfigError(f"cannot place windows over an empty recording ({num_samples} samples)")
    if num_samples < window_samples:
        num_full = 0
    else:
        num_full = (num_samples - window_samples) // step_samples + 1
    starts = np.arange(num_full, dtype=np.int64) * step_samples
    covered_to = int(starts[-1]) + window_samples if num_full else 0
    if covered_to < num_samples:
        starts = np.append(starts, np.int64(num_full * step_samples))
    return Windows(starts, int(window_samples), int(num_samples))


def batches(num_items: int, batch_size: int) -> Iterator[slice]:
    """Yield ``slice`` objects that split ``range(num_items)`` into batches of ``batch_size``."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    for start in range(0, num_items, batch_size):
        yield slice(start, min(start + batch_size, num_items))
