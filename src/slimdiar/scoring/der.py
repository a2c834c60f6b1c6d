"""Diarization error rate (and Jaccard error rate) with NIST md-eval conventions.

pyannote.metrics does the scoring; this module fixes the conventions around it:

* ``collar_s`` is the no-score collar on *each side* of every reference boundary, as md-eval's
  ``-c`` option counts it. pyannote's ``collar`` is the total width of the collar centred on a
  boundary, so it is given ``2 * collar_s``.
* Without a UEM each file is scored over the extent of its reference (first reference onset to
  last reference offset), as md-eval does; pyannote alone would use the union of the reference and
  hypothesis extents.
* A file with a reference but no hypothesis is scored (all its speech is missed); a file with a
  hypothesis but no reference is scored only where a UEM covers it (all false alarm), and is
  otherwise reported as not scored. Files a UEM does not cover are reported as not scored.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from pyannote.core import Annotation, Segment, Timeline
from pyannote.metrics.diarization import DiarizationErrorRate, JaccardErrorRate

logger = logging.getLogger(__name__)

SCORED = "scored"
REF_ONLY = "ref_only"
HYP_ONLY = "hyp_only"
REGION_UEM = "uem"
REGION_REFERENCE_EXTENT = "reference extent"


@dataclass
class DERComponents:
    """Error times of one file or of a whole set, in seconds.

    Parameters
    ----------
    missed_s
        Reference speaker time the hypothesis misses.
    false_alarm_s
        Hypothesis speaker time beyond the reference speaker count.
    confusion_s
        Speaker time attributed to the wrong (optimally mapped) speaker.
    total_s
        Total reference speaker time scored (overlap counted once per speaker).
    """

    missed_s: float = 0.0
    false_alarm_s: float = 0.0
    confusion_s: float = 0.0
    total_s: float = 0.0

    @property
    def error_s(self) -> float:
        """Missed speech + false alarm + confusion, in seconds."""
        return self.missed_s + self.false_alarm_s + self.confusion_s

    @property
    def der(self) -> float | None:
        """DER as a fraction; ``None`` when there is no reference speech but some error."""
        if self.total_s > 0:
            return self.error_s / self.total_s
        return 0.0 if self.error_s == 0 else None

    def __add__(self, other: DERComponents) -> DERComponents:
        return DERComponents(
            self.missed_s + other.missed_s,
            self.false_alarm_s + other.false_alarm_s,
            self.confusion_s + other.confusion_s,
            self.total_s + other.total_s,
        )

    def to_dict(self) -> dict:
        """``{"der", "missed", "false_alarm", "confusion", "total"}`` (seconds, der a fraction)."""
        return {
            "der": self.der,
            "missed": self.missed_s,
            "false_alarm": self.false_alarm_s,
            "confusion": self.confusion_s,
            "total": self.total_s,
        }


@dataclass
class FileScore:
    """Scores of one file.

    Parameters
    ----------
    uri
        File id.
    components
        DER components.
    jer
        Jaccard error rate as a fraction (``None`` for a file without reference speakers).
    status
        ``"scored"``, ``"ref_only"`` (no hypothesis: all speech missed) or ``"hyp_only"``
        (no reference: all hypothesis speech inside the UEM is false alarm).
    scored_s
        Duration of the scored region in seconds (after collars and overlap removal).
    """

    uri: str
    components: DERComponents
    jer: float | None
    status: str
    scored_s: float

    def to_dict(self) -> dict:
        data = self.components.to_dict()
        data.update({"jer": self.jer, "status": self.status, "scored_duration": self.scored_s})
        return data


@dataclass
class ScoreReport:
    """DER/JER of a set of files and how they were scored.

    Parameters
    ----------
    files
        Scores of the scored files, by uri (sorted).
    total
        Sum of the components over the scored files.
    jer
        Jaccard error rate over the scored files with reference speakers (pyannote's
        accumulation), or ``None`` when there is none.
    collar_s
        No-score collar on each side of every reference boundary, in seconds.
    skip_overlap
        Whether overlapped reference speech was left out.
    scoring_region
        ``"uem"`` or ``"reference extent"``.
    unscored
        Files seen but not scored, with the reason.
    """

    files: dict[str, FileScore]
    total: DERComponents
    jer: float | None
    collar_s: float
    skip_overlap: bool
    scoring_region: str
    unscored: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON form: ``{"total": {...}, "files": {uri: {...}}, ...}`` (seconds, fractions)."""
        total = self.total.to_dict()
        total["jer"] = self.jer
        return {
            "total": total,
            "files": {uri: score.to_dict() for uri, score in self.files.items()},
            "unscored": dict(self.unscored),
            "collar_s": self.collar_s,
            "skip_overlap": self.skip_overlap,
            "scoring_region": self.scoring_region,
        }


def annotations_from_turns(turns: Iterable) -> dict[str, Annotation]:
    """Group turns into one :class:`pyannote.core.Annotation` per file.

    Parameters
    ----------
    turns
        Objects with ``uri``, ``onset_s``, ``duration_s`` and ``speaker`` (e.g.
        :class:`slimdiar.data.Turn`).
    """
    annotations: dict[str, Annotation] = {}
    for turn in turns:
        annotation = annotations.setdefault(turn.uri, Annotation(uri=turn.uri))
        segment = Segment(turn.onset_s, turn.onset_s + turn.duration_s)
        annotation[segment, annotation.new_track(segment)] = turn.speaker
    return annotations


def timelines_from_regions(regions: Iterable) -> dict[str, Timeline]:
    """Group UEM regions into one :class:`pyannote.core.Timeline` per file.

    Parameters
    ----------
    regions
        Objects with ``uri``, ``start_s`` and ``end_s`` (e.g. :class:`slimdiar.data.UEMRegion`).
    """
    timelines: dict[str, Timeline] = {}
    for region in regions:
        timeline = timelines.setdefault(region.uri, Timeline(uri=region.uri))
        timeline.add(Segment(region.start_s, region.end_s))
    return timelines


def reference_extent(reference: Annotation) -> Timeline:
    """md-eval's scoring region without a UEM: first reference onset to last offset."""
    extent = reference.get_timeline().extent()
    return Timeline([extent] if extent else [], uri=reference.uri)


def pyannote_collar(collar_s: float) -> float:
    """Convert a per-side collar (md-eval ``-c``) to pyannote's total collar width."""
    return 2.0 * float(collar_s)


def score_file(
    reference: Annotation,
    hypothesis: Annotation,
    uem: Timeline,
    collar_s: float = 0.0,
    skip_overlap: bool = False,
) -> tuple[DERComponents, float]:
    """DER components of one file over ``uem`` (and the scored duration in seconds).

    Parameters
    ----------
    reference, hypothesis
        Speaker annotations of the file.
    uem
        Region to score.
    collar_s
        No-score collar on each side of every reference boundary, in seconds.
    skip_overlap
        Leave overlapped reference speech out.
    """
    metric = DiarizationErrorRate(collar=pyannote_collar(collar_s), skip_overlap=skip_overlap)
    details = metric(reference, hypothesis, uem=uem, detailed=True)
    scored = metric.extrude(
        uem, reference, collar=pyannote_collar(collar_s), skip_overlap=skip_overlap
    )
    components = DERComponents(
        missed_s=float(details["missed detection"]),
        false_alarm_s=float(details["false alarm"]),
        confusion_s=float(details["confusion"]),
        total_s=float(details["total"]),
    )
    return components, float(scored.duration())


def score_diarization(
    reference: Mapping[str, Annotation],
    hypothesis: Mapping[str, Annotation],
    uem: Mapping[str, Timeline] | None = None,
    collar_s: float = 0.0,
    skip_overlap: bool = False,
) -> ScoreReport:
    """Score hypothesis annotations against reference annotations, file by file.

    Parameters
    ----------
    reference, hypothesis
        Annotations by file id. A file may appear in only one of them (see module notes).
    uem
        Scored regions by file id; ``None`` scores each file over its reference extent.
    collar_s
        No-score collar on each side of every reference boundary, in seconds (md-eval ``-c``).
    skip_overlap
        Leave overlapped reference speech out.

    Returns
    -------
    ScoreReport
    """
    if collar_s < 0:
        raise ValueError(f"collar_s must be >= 0, got {collar_s}")
    jer_metric = JaccardErrorRate(collar=pyannote_collar(collar_s), skip_overlap=skip_overlap)
    files: dict[str, FileScore] = {}
    unscored: dict[str, str] = {}
    total = DERComponents()
    num_jer = 0
    for uri in sorted(set(reference) | set(hypothesis)):
        ref = reference.get(uri, Annotation(uri=uri))
        hyp = hypothesis.get(uri, Annotation(uri=uri))
        status = SCORED if uri in reference and uri in hypothesis else (
            REF_ONLY if uri in reference else HYP_ONLY
        )
        if uem is not None:
            if uri not in uem:
                unscored[uri] = "no UEM region"
                continue
            region = uem[uri]
        else:
            if status == HYP_ONLY:
                unscored[uri] = "no reference and no UEM"
                continue
            region = reference_extent(ref)
        components, scored_s = score_file(ref, hyp, region, collar_s, skip_overlap)
        jer = None
        if ref.labels():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                jer = float(jer_metric(ref, hyp, uem=region))
            num_jer += 1
        files[uri] = FileScore(uri, components, jer, status, scored_s)
        total = total + components
    for uri, reason in unscored.items():
        logger.info("%s: not scored (%s)", uri, reason)
    return ScoreReport(
        files=files,
        total=total,
        jer=float(abs(jer_metric)) if num_jer else None,
        collar_s=float(collar_s),
        skip_overlap=bool(skip_overlap),
        scoring_region=REGION_UEM if uem is not None else REGION_REFERENCE_EXTENT,
        unscored=unscored,
    )
