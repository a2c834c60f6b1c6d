"""Scoring: DER (missed speech, false alarm, confusion) and JER with NIST md-eval conventions.

Depends on numpy, scipy and pyannote.core/pyannote.metrics only; inputs are pyannote annotations,
or any turn/region records converted with :func:`annotations_from_turns` /
:func:`timelines_from_regions`.
"""

from slimdiar.scoring.der import (
    CONVENTIONS,
    DERComponents,
    FileScore,
    NoScoredTimeError,
    ScoreReport,
    annotations_from_turns,
    check_collar,
    merge_speaker_turns,
    pyannote_collar,
    reference_extent,
    score_diarization,
    score_file,
    timelines_from_regions,
)

__all__ = [
    "CONVENTIONS",
    "DERComponents",
    "FileScore",
    "NoScoredTimeError",
    "ScoreReport",
    "annotations_from_turns",
    "check_collar",
    "merge_speaker_turns",
    "pyannote_collar",
    "reference_extent",
    "score_diarization",
    "score_file",
    "timelines_from_regions",
]
