"""Diarization pipeline (inference).

Sliding windows → segmentation → speaker count → embeddings → clustering → reconstruction →
turns. Each stage is a function on numpy arrays, tested on its own; :class:`DiarizationPipeline`
chains them with the segmentation and embedding models.
"""

from slimdiar.frames import FrameGrid
from slimdiar.pipeline.clustering import (
    CLUSTERING_METHODS,
    AgglomerativeClustering,
    OracleClustering,
    SpeakerBounds,
    VBxClustering,
    constrained_assignment,
    make_clustering,
)
from slimdiar.pipeline.config import (
    DEFAULT_BATCH_SIZES,
    ClusteringSection,
    SegmentationSection,
    SpeakersSection,
    WindowsSection,
    default_batch_size,
    merge_settings,
    parse_settings,
    read_settings,
    resolve_settings,
    save_settings,
)
from slimdiar.pipeline.embeddings import embed_speakers, embedding_masks
from slimdiar.pipeline.pipeline import DiarizationPipeline, PipelineConfig
from slimdiar.pipeline.reconstruction import (
    activity_to_segments,
    aggregate_clusters,
    exclusive_activity,
    select_speakers,
)
from slimdiar.pipeline.result import DiarizationResult
from slimdiar.pipeline.segmentation import (
    binarize_powerset,
    chunk_reference,
    oracle_chunk_activities,
    overlap_add,
    recording_num_frames,
    reference_frame_activity,
    speaker_count,
)
from slimdiar.pipeline.windows import Windows, sliding_windows

__all__ = [
    "CLUSTERING_METHODS",
    "DEFAULT_BATCH_SIZES",
    "AgglomerativeClustering",
    "ClusteringSection",
    "DiarizationPipeline",
    "DiarizationResult",
    "FrameGrid",
    "OracleClustering",
    "PipelineConfig",
    "SegmentationSection",
    "SpeakerBounds",
    "SpeakersSection",
    "VBxClustering",
    "Windows",
    "WindowsSection",
    "activity_to_segments",
    "aggregate_clusters",
    "binarize_powerset",
    "chunk_reference",
    "constrained_assignment",
    "default_batch_size",
    "embed_speakers",
    "embedding_masks",
    "exclusive_activity",
    "make_clustering",
    "merge_settings",
    "parse_settings",
    "read_settings",
    "resolve_settings",
    "save_settings",
    "oracle_chunk_activities",
    "overlap_add",
    "recording_num_frames",
    "reference_frame_activity",
    "select_speakers",
    "sliding_windows",
    "speaker_count",
]
