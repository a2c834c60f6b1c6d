"""Data layer: records, strict file readers, audio at 16 kHz, data directories, training chunks.

Imports one way: this package uses :mod:`slimdiar.models.wavlm.config` (for the sample rate and the
frame grid) and nothing above it.
"""

from slimdiar.data.audio import AudioInfo, audio_info, load_audio, read_audio, resample
from slimdiar.data.chunks import Chunk, ChunkDataset, chunk_regions, frame_labels
from slimdiar.data.datadir import DataDir, DataSummary
from slimdiar.data.formats import (
    format_rttm_line,
    read_rttm,
    read_uem,
    read_wav_scp,
    write_rttm,
    write_text_atomic,
    write_uem,
    write_wav_scp,
)
from slimdiar.data.records import Recording, Turn, UEMRegion

__all__ = [
    "AudioInfo",
    "Chunk",
    "ChunkDataset",
    "DataDir",
    "DataSummary",
    "Recording",
    "Turn",
    "UEMRegion",
    "audio_info",
    "chunk_regions",
    "format_rttm_line",
    "frame_labels",
    "load_audio",
    "read_audio",
    "read_rttm",
    "read_uem",
    "read_wav_scp",
    "resample",
    "write_rttm",
    "write_text_atomic",
    "write_uem",
    "write_wav_scp",
]
