"""Diarization error rate (and Jaccard error rate) with NIST md-eval conventions.

The conventions are those of md-eval-22 as dscore runs it:

* **Turns.** A speaker's own overlapping turns are merged into one when a file is read (dscore
  merges them before md-eval sees them; a speaker cannot speak twice at once). Turns that only
  touch stay apart.
* **Collar.** ``collar_s`` is the no-score collar on *each side* of every reference turn boundary,
  as md-eval's ``-c`` option counts it (pyannote's ``collar`` is the total width, see
  :func:`pyannote_collar`).
* **Scored region.** The UEM, or without one the extent of the reference (first reference onset
  to last reference offset), as md-eval does; then the collars and, with ``skip_overlap``, the
  regions where the reference has two or more speakers are removed from it.
* **Speaker mapping.** ``convention="md-eval"`` (the default): per file, the one-to-one mapping of
  reference to hypothesis speakers that maximises their common time is found on the *whole* UEM
  region (or reference extent), overlapped speech included, *before* the collars and overlap are
  removed; missed speech, false alarm and confusion are then counted on the scored region with
  that mapping. ``convention="pyannote"``: the mapping is found on the scored region itself, as
  pyannote.metrics does. The two agree whenever the collar is 0 and overlap is scored; otherwise
  only the confusion can differ.
* **Files in one side.** A file with a reference but no hypothesis is scored (all its speech is
  missed); a file with a hypothesis but no reference is scored only where a UEM covers it (all
  false alarm), and is otherwise reported as not scored. Files a UEM does not cover are reported
  as not scored.
* **Nothing to score.** A file without reference speech in its scored region has DER ``None`` and
  a reason; when no file has any, :class:`NoScoredTimeError` is raised.

Times are computed exactly on the turn, UEM and collar boundaries (no frame grid).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
from pyannote.core import Annotation, Segment, Timeline
from pyannote.metrics.diarization import JaccardErrorRate
from scipy.optimize import linear_sum_assignment

from slimdiar.errors import ConfigError, SlimdiarError

logger = logging.getLogger(__name__)

SCORED = "scored"
REF_ONLY = "ref_only"
HYP_ONLY = "hyp_only"
REGION_UEM = "uem"
REGION_REFERENCE_EXTENT = "reference extent"
MD_EVAL = "md-eval"
PYANNOTE = "pyannote"
CONVENTIONS = (MD_EVAL, PYANNOTE)

NO_REFERENCE_SPEECH = "no reference speech in the scored region"
COLLAR_COVERS_ALL = "the collar covers all of the reference speech"
OVERLAP_COVERS_ALL = "all reference speech is overlapped and overlap is skipped"


class NoScoredTimeError(SlimdiarError, ValueError):
    """Nothing is left to score: no reference speech in the scored region of any file."""


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
        """DER as a fraction; ``None`` when no reference speech was scored."""
        if self.total_s > 0:
            return self.error_s / self.total_s
        return None

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
    reason
        Why the DER is ``None`` (no reference speech left to score), else ``None``.
    """

    uri: str
    components: DERComponents
    jer: float | None
    status: str
    scored_s: float
    reason: str | None = None

    def to_dict(self) -> dict:
        """The error components, JER, status, scored duration and reason as a JSON-ready dict."""
        data = self.components.to_dict()
        data.update(
            {
                "jer": self.jer,
                "status": self.status,
                "scored_duration": self.scored_s,
                "reason": self.reason,
            }
        )
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
    convention
        ``"md-eval"`` or ``"pyannote"`` (where speakers are mapped, see the module notes).
    merged_turns
        How many turns were merged into an overlapping turn of the same speaker, in the
        ``"reference"`` and in the ``"hypothesis"``.
    """

    files: dict[str, FileScore]
    total: DERComponents
    jer: float | None
    collar_s: float
    skip_overlap: bool
    scoring_region: str
    unscored: dict[str, str] = field(default_factory=dict)
    convention: str = MD_EVAL
    merged_turns: dict[str, int] = field(default_factory=lambda: {"reference": 0, "hypothesis": 0})

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
            "convention": self.convention,
            "merged_turns": dict(self.merged_turns),
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


def check_collar(collar_s: float) -> float:
    """Return ``collar_s`` as a float; raise :class:`ConfigError` unless finite and >= 0."""
    try:
        value = float(collar_s)
    except (TypeError, ValueError):
        raise ConfigError(f"collar must be a number of seconds, got {collar_s!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"collar must be >= 0 and finite (seconds), got {collar_s}")
    return value


def check_convention(convention: str) -> str:
    """Return ``convention``; raise :class:`ConfigError` unless it is one of CONVENTIONS."""
    if convention not in CONVENTIONS:
        raise ConfigError(
            f"unknown scoring convention {convention!r}; choose one of {', '.join(CONVENTIONS)}"
        )
    return convention


def merge_speaker_turns(annotation: Annotation) -> tuple[Annotation, int]:
    """Merge each speaker's own overlapping turns, as dscore does before md-eval.

    Turns of one speaker that overlap (by more than an instant) become one turn from the first
    onset to the last offset; turns that only touch stay apart.

    Parameters
    ----------
    annotation
        Speaker turns of one file.

    Returns
    -------
    merged
        The annotation with no two overlapping turns of the same speaker.
    num_merged
        How many turns were merged into another one (0: ``merged`` equals ``annotation``).
    """
    spans: dict[str, list[tuple[float, float]]] = {}
    for segment, _, label in annotation.itertracks(yield_label=True):
        spans.setdefault(label, []).append((segment.start, segment.end))
    merged = Annotation(uri=annotation.uri)
    num_merged = 0
    for label in sorted(spans, key=str):
        first, *rest = sorted(spans[label])  # every label has at least one turn
        current = list(first)
        for start, end in rest:
            if start < current[1]:
                current[1] = max(current[1], end)
                num_merged += 1
                continue
            _add_turn(merged, current, label)
            current = [start, end]
        _add_turn(merged, current, label)
    return merged, num_merged


def _add_turn(annotation: Annotation, span: list[float], label: str) -> None:
    segment = Segment(span[0], span[1])
    annotation[segment, annotation.new_track(segment)] = label


class _Segmentation:
    """The elementary intervals between consecutive boundaries of one file.

    Every span marked on it must start and end on one of its boundaries, so that membership is
    exact (no frame grid).
    """

    def __init__(self, boundaries: list[float]):
        self.boundaries_s = np.unique(np.asarray(boundaries, dtype=np.float64))
        self.durations_s = np.diff(self.boundaries_s)  # (num_intervals,)

    def mask(self, spans: Iterable[tuple[float, float]]) -> np.ndarray:
        """(num_intervals,) bool: the intervals inside any of ``spans``."""
        inside = np.zeros(len(self.durations_s), dtype=bool)
        for start_s, end_s in spans:
            first, last = np.searchsorted(self.boundaries_s, [start_s, end_s])
            inside[first:last] = True
        return inside


@dataclass
class _FileErrors:
    components: DERComponents
    scored_s: float
    reason: str | None


def _speaker_spans(annotation: Annotation) -> list[list[tuple[float, float]]]:
    spans: dict[str, list[tuple[float, float]]] = {}
    for segment, _, label in annotation.itertracks(yield_label=True):
        spans.setdefault(label, []).append((segment.start, segment.end))
    return [spans[label] for label in sorted(spans, key=str)]


def _file_errors(
    reference: Annotation,
    hypothesis: Annotation,
    uem: Timeline,
    collar_s: float,
    skip_overlap: bool,
    convention: str,
) -> _FileErrors:
    """Error times of one file whose speakers have no overlapping turns of their own."""
    ref_spans = _speaker_spans(reference)
    hyp_spans = _speaker_spans(hypothesis)
    uem_spans = [(segment.start, segment.end) for segment in uem.support()]
    collar_spans = []
    if collar_s > 0:
        for spans in ref_spans:
            for start_s, end_s in spans:
                collar_spans += [
                    (start_s - collar_s, start_s + collar_s),
                    (end_s - collar_s, end_s + collar_s),
                ]
    boundaries = [
        t
        for spans in ref_spans + hyp_spans + [uem_spans, collar_spans]
        for span in spans
        for t in span
    ]
    grid = _Segmentation(boundaries)
    num_intervals = len(grid.durations_s)
    ref = np.array([grid.mask(spans) for spans in ref_spans]).reshape(-1, num_intervals)
    hyp = np.array([grid.mask(spans) for spans in hyp_spans]).reshape(-1, num_intervals)
    # ref: (num_ref_speakers, num_intervals), hyp: (num_hyp_speakers, num_intervals) bool
    num_ref = ref.sum(axis=0)
    num_hyp = hyp.sum(axis=0)
    evaluated = grid.mask(uem_spans)
    outside_collar = evaluated & ~grid.mask(collar_spans)
    scored = outside_collar & ~(num_ref >= 2) if skip_overlap else outside_collar
    # (num_intervals,) bool each

    # speaker mapping: co-occurrence time on the whole evaluated region (md-eval) or on the
    # scored region only (pyannote), then the optimal one-to-one assignment
    mapped_on = evaluated if convention == MD_EVAL else scored
    weights_s = grid.durations_s * mapped_on
    cooccurrence_s = (ref * weights_s) @ hyp.T.astype(np.float64)  # (num_ref, num_hyp)
    num_mapped = np.zeros(num_intervals, dtype=np.int64)
    if cooccurrence_s.size:
        rows, cols = linear_sum_assignment(cooccurrence_s, maximize=True)
        for r, h in zip(rows, cols):
            if cooccurrence_s[r, h] > 0:
                num_mapped += ref[r] & hyp[h]

    scored_s = grid.durations_s * scored
    components = DERComponents(
        missed_s=float(scored_s @ np.maximum(num_ref - num_hyp, 0)),
        false_alarm_s=float(scored_s @ np.maximum(num_hyp - num_ref, 0)),
        confusion_s=float(scored_s @ (np.minimum(num_ref, num_hyp) - num_mapped)),
        total_s=float(scored_s @ num_ref),
    )
    reason = None
    if components.total_s <= 0:
        speech = num_ref > 0
        if not np.any(evaluated & speech):
            reason = NO_REFERENCE_SPEECH
        elif not np.any(outside_collar & speech):
            reason = COLLAR_COVERS_ALL
        else:
            reason = OVERLAP_COVERS_ALL
    return _FileErrors(components, float(scored_s.sum()), reason)


def score_file(
    reference: Annotation,
    hypothesis: Annotation,
    uem: Timeline,
    collar_s: float = 0.0,
    skip_overlap: bool = False,
    convention: str = MD_EVAL,
) -> tuple[DERComponents, float]:
    """DER components of one file over ``uem`` (and the scored duration in seconds).

    Parameters
    ----------
    reference, hypothesis
        Speaker annotations of the file (a speaker's overlapping turns are merged first).
    uem
        Region to score.
    collar_s
        No-score collar on each side of every reference boundary, in seconds.
    skip_overlap
        Leave overlapped reference speech out.
    convention
        ``"md-eval"`` or ``"pyannote"``: where speakers are mapped (see the module notes).
    """
    collar_s = check_collar(collar_s)
    check_convention(convention)
    errors = _file_errors(
        merge_speaker_turns(reference)[0],
        merge_speaker_turns(hypothesis)[0],
        uem,
        collar_s,
        skip_overlap,
        convention,
    )
    return errors.components, errors.scored_s


def score_diarization(
    reference: Mapping[str, Annotation],
    hypothesis: Mapping[str, Annotation],
    uem: Mapping[str, Timeline] | None = None,
    collar_s: float = 0.0,
    skip_overlap: bool = False,
    convention: str = MD_EVAL,
) -> ScoreReport:
    """Score hypothesis annotations against reference annotations, file by file.

    Parameters
    ----------
    reference, hypothesis
        Annotations by file id. A file may appear in only one of them (see module notes). A
        speaker's own overlapping turns are merged (with one warning giving their count).
    uem
        Scored regions by file id; ``None`` scores each file over its reference extent.
    collar_s
        No-score collar on each side of every reference boundary, in seconds (md-eval ``-c``).
    skip_overlap
        Leave overlapped reference speech out.
    convention
        ``"md-eval"`` (default) or ``"pyannote"``: where speakers are mapped (see module notes).

    Returns
    -------
    ScoreReport

    Raises
    ------
    ConfigError
        On a negative or non-finite collar or an unknown convention.
    NoScoredTimeError
        When no file has reference speech left to score.
    """
    collar_s = check_collar(collar_s)
    check_convention(convention)
    reference, num_ref_merged = _merge_all(reference)
    hypothesis, num_hyp_merged = _merge_all(hypothesis)
    if num_ref_merged or num_hyp_merged:
        logger.warning(
            "merged %d reference and %d hypothesis turns into an overlapping turn of the same "
            "speaker (a speaker cannot speak twice at once; md-eval and dscore do the same)",
            num_ref_merged,
            num_hyp_merged,
        )
    jer_metric = JaccardErrorRate(collar=pyannote_collar(collar_s), skip_overlap=skip_overlap)
    files: dict[str, FileScore] = {}
    unscored: dict[str, str] = {}
    total = DERComponents()
    num_jer = 0
    for uri in sorted(set(reference) | set(hypothesis)):
        ref = reference.get(uri, Annotation(uri=uri))
        hyp = hypothesis.get(uri, Annotation(uri=uri))
        status = (
            SCORED
            if uri in reference and uri in hypothesis
            else (REF_ONLY if uri in reference else HYP_ONLY)
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
        errors = _file_errors(ref, hyp, region, collar_s, skip_overlap, convention)
        jer = None
        if ref.labels() and errors.reason is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                jer = float(jer_metric(ref, hyp, uem=region))
            num_jer += 1
        files[uri] = FileScore(uri, errors.components, jer, status, errors.scored_s, errors.reason)
        total = total + errors.components
    for uri, reason in unscored.items():
        logger.info("%s: not scored (%s)", uri, reason)
    if total.total_s <= 0:
        raise NoScoredTimeError(_nothing_scored(files, unscored, collar_s))
    return ScoreReport(
        files=files,
        total=total,
        jer=float(abs(jer_metric)) if num_jer else None,
        collar_s=collar_s,
        skip_overlap=bool(skip_overlap),
        scoring_region=REGION_UEM if uem is not None else REGION_REFERENCE_EXTENT,
        unscored=unscored,
        convention=convention,
        merged_turns={"reference": num_ref_merged, "hypothesis": num_hyp_merged},
    )


def _merge_all(annotations: Mapping[str, Annotation]) -> tuple[dict[str, Annotation], int]:
    merged, num_merged = {}, 0
    for uri, annotation in annotations.items():
        merged[uri], count = merge_speaker_turns(annotation)
        num_merged += count
    return merged, num_merged


def _nothing_scored(
    files: Mapping[str, FileScore], unscored: Mapping[str, str], collar_s: float
) -> str:
    """The message of :class:`NoScoredTimeError`: why no reference speech was scored."""
    if not files:
        if unscored:
            return (
                f"nothing to score: none of the {len(unscored)} files has both a reference "
                "and a scored region ("
                + "; ".join(f"{uri}: {reason}" for uri, reason in list(unscored.items())[:3])
                + ("; ..." if len(unscored) > 3 else "")
                + ")"
            )
        return "nothing to score: the reference and the hypothesis hold no turns"
    reasons = {score.reason for score in files.values()}
    if reasons == {COLLAR_COVERS_ALL}:
        return (
            f"nothing to score: a collar of {collar_s:g} s on each side of every reference "
            "boundary covers all the reference speech; use a smaller collar"
        )
    if reasons <= {COLLAR_COVERS_ALL, OVERLAP_COVERS_ALL}:
        return (
            "nothing to score: with overlap skipped (and the collar removed) no reference "
            "speech is left"
        )
    return (
        f"nothing to score: no reference speech in the scored region of any of the "
        f"{len(files)} files (is the reference empty, or the UEM wrong?)"
    )
