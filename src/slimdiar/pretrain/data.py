"""Pretraining data: every audio file of a directory tree or a ``wav.scp``, cut into crops.

Speaker labels, RTTM and UEM files are not used: self-supervised pretraining needs audio only.
A crop is read by offset with :func:`~slimdiar.data.audio.read_audio` (16 kHz mono), so a long
recording is never loaded whole. A file shorter than a crop gives one crop, zero-padded; the
item's ``num_samples`` says how much of it is audio.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from slimdiar.data.audio import audio_info, read_audio
from slimdiar.data.formats import read_wav_scp
from slimdiar.errors import ConfigError
from slimdiar.frames import SAMPLE_RATE

logger = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".sph", ".aiff", ".aif")


@dataclass(frozen=True)
class Crop:
    """One training item: ``duration_s`` seconds of ``path`` from ``start_s``."""

    path: Path
    start_s: float
    duration_s: float


def list_audio(source: str | Path) -> list[Path]:
    """The audio files named by ``source``: a directory (searched recursively) or a ``wav.scp``.

    Raises
    ------
    ConfigError
        If ``source`` does not exist or names no audio file.
    """
    source = Path(source)
    if source.is_dir():
        files = sorted(
            p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES
        )
        if not files:
            raise ConfigError(
                f"{source}: the directory tree holds no audio file ({', '.join(AUDIO_SUFFIXES)})"
            )
        return files
    if source.is_file() and (source.name == "wav.scp" or source.suffix == ".scp"):
        files = [r.path for r in read_wav_scp(source)]
        if not files:
            raise ConfigError(f"{source}: lists no recording")
        return files
    if source.is_file():
        raise ConfigError(
            f"{source}: expected a directory of audio files or a wav.scp, got another file"
        )
    raise ConfigError(f"{source}: no such directory or wav.scp")


def crop_files(
    files: list[Path], crop_duration_s: float, shift_s: float, min_duration_s: float
) -> list[Crop]:
    """Crops of ``crop_duration_s`` every ``shift_s`` over each file, in file order.

    Files shorter than ``min_duration_s`` are skipped; a file shorter than one crop gives one
    crop of its own length.
    """
    if not crop_duration_s > 0 or not shift_s > 0:
        raise ConfigError(
            f"crop_duration_s and shift_s must be > 0, got {crop_duration_s} and {shift_s}"
        )
    crops, skipped = [], 0
    for path in files:
        duration_s = audio_info(path).duration_s
        if duration_s < min_duration_s:
            skipped += 1
            continue
        if duration_s <= crop_duration_s:
            crops.append(Crop(path, 0.0, duration_s))
            continue
        last = duration_s - crop_duration_s
        for start_s in np.arange(0.0, last + 1e-9, shift_s):
            crops.append(Crop(path, float(start_s), crop_duration_s))
    if skipped:
        logger.info("skipped %d file(s) shorter than %.2f s", skipped, min_duration_s)
    if not crops:
        raise ConfigError(f"no audio of at least {min_duration_s} s among {len(files)} file(s)")
    return crops


class CropDataset(Dataset):
    """Fixed-length crops of audio files.

    Parameters
    ----------
    source
        A directory tree of audio files or a ``wav.scp``.
    crop_duration_s, shift_s
        Crop length and the step between crop starts within a file.
    min_duration_s
        Shorter files are skipped.
    channel
        Channel to read (0-based), or ``None`` to downmix.

    Items are ``{"waveform": (crop_samples,) float32, "num_samples": int}``.
    """

    def __init__(
        self,
        source: str | Path,
        crop_duration_s: float,
        shift_s: float,
        min_duration_s: float = 1.0,
        channel: int | None = None,
    ):
        self.source = Path(source)
        self.files = list_audio(source)
        self.crops = crop_files(self.files, crop_duration_s, shift_s, min_duration_s)
        self.crop_samples = int(round(crop_duration_s * SAMPLE_RATE))
        self.channel = channel
        logger.info(
            "%s: %d file(s), %d crop(s) of %.2f s",
            source,
            len(self.files),
            len(self.crops),
            crop_duration_s,
        )

    def __len__(self) -> int:
        return len(self.crops)

    def __getitem__(self, index: int) -> dict:
        crop = self.crops[index]
        audio = read_audio(crop.path, crop.start_s, crop.duration_s, self.channel)
        audio = audio[: self.crop_samples]
        waveform = np.zeros(self.crop_samples, dtype=np.float32)
        waveform[: audio.shape[0]] = audio
        return {"waveform": torch.from_numpy(waveform), "num_samples": int(audio.shape[0])}
