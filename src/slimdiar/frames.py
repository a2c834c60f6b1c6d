"""The sample rate and the frame grid that training labels and inference share.

Every model of slimdiar reads 16 kHz mono audio (:data:`SAMPLE_RATE`) and emits frames every
``frame_step_samples`` samples, each seeing ``receptive_field_samples`` samples. One
:class:`FrameGrid` describes those frames: the training chunks label frame ``i`` at the same
second as the pipeline reads it when it turns frames back into turns, because both ask this
class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import overload

import numpy as np

from slimdiar.errors import ConfigError

SAMPLE_RATE = 16000
"""Samples per second of every waveform a slimdiar model reads."""


@dataclass(frozen=True)
class FrameGrid:
    """The frame grid of a model.

    Frame ``i`` of a signal sees samples ``[i * frame_step_samples, i * frame_step_samples +
    receptive_field_samples)``; its time is the middle of that span (WavLM: ``0.02 i + 0.0125``
    s), in training labels and output turns alike. It stands for the interval from its middle to
    the next frame's middle, so a run of active frames ``a .. b - 1`` is the turn from the middle
    of frame ``a`` to the middle of frame ``b``.

    Parameters
    ----------
    frame_step_samples
        Samples between two consecutive frames (320 for WavLM).
    receptive_field_samples
        Samples seen by one frame (400 for WavLM).
    sample_rate
        Samples per second.
    """

    frame_step_samples: int
    receptive_field_samples: int
    sample_rate: int = SAMPLE_RATE

    def __post_init__(self) -> None:
        if self.frame_step_samples < 1 or self.receptive_field_samples < 1 or self.sample_rate < 1:
            raise ConfigError(f"frame grid values must be >= 1, got {self}")

    @classmethod
    def from_config(cls, config, sample_rate: int = SAMPLE_RATE) -> FrameGrid:
        """The grid of anything with ``frame_step_samples`` and ``receptive_field_samples``.

        A WavLM config, a diarization model or a front-end config; a :class:`FrameGrid` is
        returned as it is.
        """
        if isinstance(config, FrameGrid):
            return config
        try:
            step, field_ = config.frame_step_samples, config.receptive_field_samples
        except AttributeError:
            raise ConfigError(
                f"{type(config).__name__} describes no frame grid (it lacks "
                "frame_step_samples or receptive_field_samples)"
            ) from None
        return cls(int(step), int(field_), sample_rate)

    @property
    def frame_step_s(self) -> float:
        """Seconds between two consecutive frames."""
        return self.frame_step_samples / self.sample_rate

    def num_frames(self, num_samples: int) -> int:
        """Number of frames the model emits for ``num_samples`` samples (0 if too short)."""
        if num_samples < self.receptive_field_samples:
            return 0
        return (int(num_samples) - self.receptive_field_samples) // self.frame_step_samples + 1

    @overload
    def frame_center_s(self, frame_index: int) -> float: ...

    @overload
    def frame_center_s(self, frame_index: np.ndarray) -> np.ndarray: ...

    def frame_center_s(self, frame_index: np.ndarray | int) -> np.ndarray | float:
        """Time, in seconds from the signal start, of the middle of frame(s) ``frame_index``."""
        index = np.asarray(frame_index)
        middle = index * self.frame_step_samples + self.receptive_field_samples / 2
        return middle / self.sample_rate

    def frame_centers_s(self, num_frames: int) -> np.ndarray:
        """``(num_frames,)`` float64 middles of frames ``0 .. num_frames - 1``, in seconds."""
        return np.asarray(self.frame_center_s(np.arange(int(num_frames))), dtype=np.float64)

    @overload
    def frame_bounds_s(self, frame_index: int) -> tuple[float, float]: ...

    @overload
    def frame_bounds_s(self, frame_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...

    def frame_bounds_s(
        self, frame_index: np.ndarray | int
    ) -> tuple[np.ndarray | float, np.ndarray | float]:
        """Start and end, in seconds, of the interval that frame(s) ``frame_index`` stand for.

        From the frame's middle to the next frame's middle.
        """
        center_s = self.frame_center_s(frame_index)
        return center_s, center_s + self.frame_step_s
