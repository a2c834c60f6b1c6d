"""Reading audio: by offset, at 16 kHz, with an explicit channel policy.

Every waveform that enters slimdiar goes through :func:`resample` (soxr) to
:data:`~slimdiar.frames.SAMPLE_RATE` and through one channel policy: ``channel=K`` keeps
channel ``K`` (0-based), ``channel=None`` averages all channels to mono. Audio is read by offset
with soundfile, so a chunk of a long recording never loads the whole file.
"""

from __future__ import annotations

import logging
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import soundfile
import soxr

from slimdiar.errors import AudioError
from slimdiar.frames import SAMPLE_RATE

logger = logging.getLogger(__name__)

# Extra input read on each side of an offset read so that the resampling filter sees real
# context there; the read starts on a whole resampling block so that the output stays on the
# 16 kHz grid of the whole file.
RESAMPLE_MARGIN_S = 0.05
# A request may end this much past the end of the file (rounding of RTTM/UEM times).
END_TOLERANCE_S = 0.01

AudioSource = str | Path | BinaryIO | tuple[Any, int]
_logged_policies: set[tuple[str, str]] = set()
# Samples whose magnitude exceeds this are "far above full scale" (6 dB): integer sample values
# stored as float, or a wrong gain, not an overshoot of a lossy codec.
FULL_SCALE_WARNING = 2.0
_warned: set[tuple[str, str]] = set()


def _warn_once(name: str, kind: str, message: str, *args) -> None:
    """Log a warning about one file once per process (audio is read window by window)."""
    if (name, kind) not in _warned:
        _warned.add((name, kind))
        logger.warning(message, *args)


def wav_frames_missing(path: str | Path) -> tuple[int, int] | None:
    """``(declared, present)`` frames of a RIFF WAV file whose data chunk is cut short.

    libsndfile reads a truncated WAV up to its last complete frame without a word; the header
    still says how long the recording was meant to be. ``None`` for a complete file, a file
    that is not a plain RIFF WAV, or a header that does not declare its length (streamed).
    """
    try:
        with open(path, "rb") as stream:
            head = stream.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            size = Path(path).stat().st_size
            block_align = None
            while True:
                chunk = stream.read(8)
                if len(chunk) < 8:
                    return None
                kind, length = chunk[:4], struct.unpack("<I", chunk[4:])[0]
                if kind == b"fmt ":
                    fmt = stream.read(length + (length & 1))
                    if len(fmt) < 14:
                        return None
                    block_align = struct.unpack("<H", fmt[12:14])[0]
                elif kind == b"data":
                    if not block_align or length in (0, 0xFFFFFFFF):
                        return None
                    present = (size - stream.tell()) // block_align
                    declared = length // block_align
                    return (declared, present) if present < declared else None
                else:
                    stream.seek(length + (length & 1), 1)
    except (OSError, struct.error):
        return None


@dataclass(frozen=True)
class AudioInfo:
    """Header information of an audio file.

    Parameters
    ----------
    sample_rate
        Native sample rate in Hz.
    num_channels
        Number of channels.
    num_frames
        Samples per channel at the native rate.
    """

    sample_rate: int
    num_channels: int
    num_frames: int

    @property
    def duration_s(self) -> float:
        """Length in seconds."""
        return self.num_frames / self.sample_rate


def _name(source: Any) -> str:
    if isinstance(source, (str, Path)):
        return str(source)
    return getattr(source, "name", None) or f"<{type(source).__name__}>"


def audio_info(path: str | Path | BinaryIO) -> AudioInfo:
    """Read the header of an audio file (no samples are read).

    Parameters
    ----------
    path
        Audio file path or binary file-like object.

    Raises
    ------
    AudioError
        If the file is missing, unreadable or holds no samples.
    """
    with _open(path) as sound:
        info = AudioInfo(int(sound.samplerate), int(sound.channels), int(sound.frames))
    if info.num_frames == 0:
        raise AudioError(f"{_name(path)}: the audio is empty (0 samples)")
    if isinstance(path, (str, Path)):
        cut = wav_frames_missing(path)
        if cut is not None:
            declared, present = cut
            rate = info.sample_rate
            _warn_once(
                _name(path),
                "truncated",
                "%s: the file is truncated: its header declares %.3f s but only %.3f s are "
                "present (%.3f s missing); reading what is there",
                _name(path),
                declared / rate,
                present / rate,
                (declared - present) / rate,
            )
    return info


def _open(source: str | Path | BinaryIO) -> soundfile.SoundFile:
    name = _name(source)
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.exists():
            raise AudioError(f"{name}: no such audio file")
        if path.is_dir():
            raise AudioError(f"{name}: is a directory, not an audio file")
        if path.stat().st_size == 0:
            raise AudioError(f"{name}: the file is empty (0 bytes)")
        source = str(path)
    try:
        return soundfile.SoundFile(source)
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as error:
        raise AudioError(f"{name}: cannot read audio ({error})") from None


def resample(waveform: np.ndarray, sample_rate: int, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Resample with soxr (high quality); the one resampler slimdiar uses.

    Parameters
    ----------
    waveform
        ``(num_samples,)`` or ``(num_samples, num_channels)`` float array.
    sample_rate
        Rate of ``waveform`` in Hz.
    target_rate
        Wanted rate in Hz.

    Returns
    -------
    numpy.ndarray
        float32, ``(round(num_samples * target_rate / sample_rate),)`` (or with channels).
    """
    waveform = np.asarray(waveform, dtype=np.float32)
    if int(sample_rate) <= 0:
        raise AudioError(f"sample rate must be positive, got {sample_rate}")
    if int(sample_rate) == int(target_rate):
        return waveform
    return soxr.resample(waveform, int(sample_rate), int(target_rate), quality="HQ").astype(
        np.float32, copy=False
    )


def _apply_channel_policy(data: np.ndarray, channel: int | None, name: str) -> np.ndarray:
    """``(num_samples, num_channels)`` -> ``(num_samples,)`` by the channel policy."""
    num_channels = data.shape[1]
    if channel is not None:
        if not 0 <= channel < num_channels:
            raise AudioError(
                f"{name}: channel {channel} requested but the audio has {num_channels} "
                f"channel(s) (valid: 0..{num_channels - 1})"
            )
        policy = f"channel {channel} of {num_channels}"
        mono = data[:, channel]
    else:
        policy = f"downmix of {num_channels} channels to mono"
        mono = data.mean(axis=1)
    if num_channels > 1 and (name, policy) not in _logged_policies:
        if len(_logged_policies) < 10000:
            _logged_policies.add((name, policy))
        logger.info("%s: multi-channel audio, using %s", name, policy)
    return mono


def _check_finite(waveform: np.ndarray, name: str) -> None:
    if not np.isfinite(waveform).all():
        bad = int((~np.isfinite(waveform)).sum())
        raise AudioError(f"{name}: the audio holds {bad} NaN/Inf sample(s)")


def _check_full_scale(waveform: np.ndarray, name: str) -> None:
    peak = float(np.abs(waveform).max()) if waveform.size else 0.0
    if peak > FULL_SCALE_WARNING:
        _warn_once(
            name,
            "full-scale",
            "%s: samples reach %.3g, %.0f dB above full scale (1.0): integer values stored as "
            "float, or a wrong gain? Read as they are",
            name,
            peak,
            20 * math.log10(peak),
        )


def read_audio(
    path: str | Path | BinaryIO,
    start_s: float | None = None,
    duration_s: float | None = None,
    channel: int | None = None,
) -> np.ndarray:
    """Read (part of) an audio file as 16 kHz mono float32.

    Parameters
    ----------
    path
        Audio file path or binary file-like object (any format libsndfile reads).
    start_s
        Where to start reading, in seconds (default: the beginning).
    duration_s
        How much to read, in seconds (default: to the end). The result has
        ``round(duration_s * SAMPLE_RATE)`` samples.
    channel
        0-based channel to keep, or ``None`` to average all channels.

    Returns
    -------
    numpy.ndarray
        ``(num_samples,)`` float32 at 16 kHz.

    Raises
    ------
    AudioError
        If the audio is missing, unreadable, empty, not finite, lacks the channel, or the
        requested span lies outside it.
    """
    name = _name(path)
    start_s = 0.0 if start_s is None else float(start_s)
    if start_s < 0 or (duration_s is not None and not duration_s > 0):
        raise AudioError(
            f"{name}: invalid span start_s={start_s}, duration_s={duration_s} "
            "(start must be >= 0 and duration > 0)"
        )
    with _open(path) as sound:
        rate, total = int(sound.samplerate), int(sound.frames)
        if total == 0:
            raise AudioError(f"{name}: the audio is empty (0 samples)")
        total_s = total / rate
        end_s = total_s if duration_s is None else start_s + float(duration_s)
        if end_s > total_s + END_TOLERANCE_S:
            raise AudioError(
                f"{name}: requested [{start_s:.3f}, {end_s:.3f}] s but the audio lasts "
                f"{total_s:.3f} s"
            )
        if start_s >= total_s:
            raise AudioError(
                f"{name}: requested start {start_s:.3f} s is at or after the end of the audio "
                f"({total_s:.3f} s)"
            )
        # Work on the 16 kHz grid of the whole file: output sample j is at time j / SAMPLE_RATE.
        out_first = int(round(start_s * SAMPLE_RATE))
        if duration_s is None:
            num_samples = int(round(total * SAMPLE_RATE / rate)) - out_first
        else:
            num_samples = int(round(float(duration_s) * SAMPLE_RATE))
        # Read from a frame that lies on that grid (a multiple of the resampling block), with
        # some context on both sides for the resampling filter.
        block = rate // math.gcd(rate, SAMPLE_RATE)
        margin = 0 if rate == SAMPLE_RATE else int(math.ceil(RESAMPLE_MARGIN_S * rate))
        read_first = max(0, (out_first * rate // SAMPLE_RATE - margin) // block * block)
        read_last = min(total, -(-(out_first + num_samples) * rate // SAMPLE_RATE) + margin)
        try:
            sound.seek(read_first)
            data = sound.read(read_last - read_first, dtype="float32", always_2d=True)
        except (soundfile.LibsndfileError, RuntimeError) as error:
            raise AudioError(f"{name}: cannot read audio ({error})") from None
    if data.shape[0] == 0:
        raise AudioError(f"{name}: no samples could be read (truncated file?)")
    _check_finite(data, name)
    _check_full_scale(data, name)
    mono = resample(_apply_channel_policy(data, channel, name), rate)
    skip = out_first - read_first * SAMPLE_RATE // rate
    out = mono[skip : skip + num_samples]
    if out.shape[0] < num_samples:
        out = np.pad(out, (0, num_samples - out.shape[0]))
    return np.ascontiguousarray(out, dtype=np.float32)


def load_audio(audio: AudioSource, channel: int | None = None) -> np.ndarray:
    """Load a whole recording as 16 kHz mono float32, whatever form it comes in.

    Parameters
    ----------
    audio
        A path, a binary file-like object, or a ``(waveform, sample_rate)`` tuple whose waveform
        (numpy array or torch tensor) is ``(num_samples,)`` or ``(num_channels, num_samples)``.
    channel
        0-based channel to keep, or ``None`` to average all channels.

    Returns
    -------
    numpy.ndarray
        ``(num_samples,)`` float32 at 16 kHz.

    Raises
    ------
    AudioError
        If the audio is unusable (see :func:`read_audio`) or the tuple is malformed.
    """
    if isinstance(audio, tuple):
        if len(audio) != 2:
            raise AudioError(
                f"an audio tuple must be (waveform, sample_rate), got {len(audio)} items"
            )
        waveform, sample_rate = audio
        if hasattr(waveform, "detach"):
            waveform = waveform.detach().cpu().numpy()
        data = np.asarray(waveform, dtype=np.float32)
        if data.ndim == 1:
            data = data[:, None]
        elif data.ndim == 2:
            data = data.T
        else:
            raise AudioError(
                f"waveform must be (num_samples,) or (num_channels, num_samples), got shape "
                f"{tuple(np.shape(waveform))}"
            )
        if data.shape[0] == 0:
            raise AudioError("<waveform>: the audio is empty (0 samples)")
        try:
            sample_rate = int(sample_rate)
        except (TypeError, ValueError):
            raise AudioError(f"sample_rate must be an integer, got {sample_rate!r}") from None
        _check_finite(data, "<waveform>")
        # A copy: the caller's array is never shared with (or changed by) what follows.
        return np.array(
            resample(_apply_channel_policy(data, channel, "<waveform>"), sample_rate),
            dtype=np.float32,
            copy=True,
        )
    return read_audio(audio, channel=channel)
