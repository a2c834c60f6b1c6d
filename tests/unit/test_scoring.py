import itertools
import logging
import os
import re
import subprocess

import numpy as np
import pytest
from pyannote.core import Annotation, Segment, Timeline
from pyannote.metrics.diarization import DiarizationErrorRate

from slimdiar.data import Turn, UEMRegion
from slimdiar.errors import ConfigError
from slimdiar.scoring import (
    NoScoredTimeError,
    annotations_from_turns,
    merge_speaker_turns,
    pyannote_collar,
    reference_extent,
    score_diarization,
    timelines_from_regions,
)


def annotation(uri, *spans):
    result = Annotation(uri=uri)
    for start, end, label in spans:
        segment = Segment(start, end)
        result[segment, result.new_track(segment)] = label
    return result


def score_one(ref, hyp, uem=None, collar_s=0.0, skip_overlap=False, convention="md-eval"):
    report = score_diarization(
        {"f": ref},
        {"f": hyp},
        None if uem is None else {"f": uem},
        collar_s,
        skip_overlap,
        convention=convention,
    )
    return report.files["f"].components, report


# ------------------------------------------------------------------ hand-computed cases
def test_missed_speech():
    c, _ = score_one(annotation("f", (0, 10, "A")), annotation("f", (1, 10, "x")))
    assert (c.missed_s, c.false_alarm_s, c.confusion_s, c.total_s) == pytest.approx((1, 0, 0, 10))
    assert c.der == pytest.approx(0.1)


def test_collar_is_per_side_as_in_md_eval():
    # 0.25 s on each side of the reference boundaries 0 and 10: scored [0.25, 9.75]
    c, report = score_one(
        annotation("f", (0, 10, "A")), annotation("f", (1, 10, "x")), collar_s=0.25
    )
    assert c.total_s == pytest.approx(9.5)
    assert c.missed_s == pytest.approx(0.75)
    assert c.der == pytest.approx(0.75 / 9.5)
    assert report.files["f"].scored_s == pytest.approx(9.5)
    assert report.collar_s == 0.25
    assert pyannote_collar(0.25) == 0.5


def test_confusion_uses_the_optimal_mapping():
    c, _ = score_one(annotation("f", (0, 4, "A"), (4, 10, "B")), annotation("f", (0, 10, "x")))
    assert (c.missed_s, c.false_alarm_s, c.confusion_s, c.total_s) == pytest.approx((0, 0, 4, 10))
    assert c.der == pytest.approx(0.4)


def test_overlap_counts_per_speaker_and_can_be_skipped():
    ref = annotation("f", (0, 10, "A"), (4, 6, "B"))
    hyp = annotation("f", (0, 10, "x"))
    c, _ = score_one(ref, hyp)
    assert (c.missed_s, c.total_s) == pytest.approx((2, 12))
    c, report = score_one(ref, hyp, skip_overlap=True)
    assert (c.missed_s, c.total_s, c.der) == pytest.approx((0, 8, 0))
    assert report.skip_overlap


def test_false_alarm_and_scoring_region():
    ref = annotation("f", (2, 10, "A"))
    hyp = annotation("f", (0, 12, "x"))
    # no UEM: the reference extent [2, 10] is scored, as md-eval does (pyannote alone would use
    # [0, 12], the union of both extents)
    c, report = score_one(ref, hyp)
    assert (c.false_alarm_s, c.total_s, c.der) == pytest.approx((0, 8, 0))
    assert report.scoring_region == "reference extent"
    assert reference_extent(ref) == Timeline([Segment(2, 10)])
    c, report = score_one(ref, hyp, uem=Timeline([Segment(0, 12)]))
    assert (c.false_alarm_s, c.total_s, c.der) == pytest.approx((4, 8, 0.5))
    assert report.scoring_region == "uem"


def test_files_only_in_ref_or_hyp_are_reported():
    ref = {"a": annotation("a", (0, 5, "A")), "b": annotation("b", (0, 4, "B"))}
    hyp = {"a": annotation("a", (0, 5, "x")), "c": annotation("c", (1, 3, "y"))}
    report = score_diarization(ref, hyp)
    assert report.files["b"].status == "ref_only"
    assert report.files["b"].components.missed_s == pytest.approx(4)
    assert report.files["b"].components.der == pytest.approx(1.0)
    assert report.unscored == {"c": "no reference and no UEM"}
    assert report.total.total_s == pytest.approx(9) and report.total.missed_s == pytest.approx(4)

    uem = {"a": Timeline([Segment(0, 5)]), "c": Timeline([Segment(0, 4)])}
    report = score_diarization(ref, hyp, uem)
    assert report.unscored == {"b": "no UEM region"}
    hyp_only = report.files["c"]
    assert hyp_only.status == "hyp_only" and hyp_only.jer is None
    assert hyp_only.components.false_alarm_s == pytest.approx(2)
    assert hyp_only.components.total_s == 0 and hyp_only.components.der is None
    assert report.total.false_alarm_s == pytest.approx(2)
    assert report.total.der == pytest.approx(2 / 5)


def test_json_form():
    _, report = score_one(annotation("f", (0, 10, "A")), annotation("f", (1, 10, "x")))
    data = report.to_dict()
    assert set(data["total"]) >= {"der", "missed", "false_alarm", "confusion", "total"}
    assert data["files"]["f"]["missed"] == pytest.approx(1.0)
    assert data["total"]["der"] == pytest.approx(0.1)
    assert data["scoring_region"] == "reference extent"


def test_turns_and_regions_convert_to_pyannote():
    turns = [Turn("a", 0.0, 2.0, "A"), Turn("a", 1.0, 2.0, "A"), Turn("b", 3.0, 1.0, "B")]
    annotations = annotations_from_turns(turns)
    assert sorted(annotations) == ["a", "b"]
    assert len(list(annotations["a"].itertracks())) == 2
    timelines = timelines_from_regions([UEMRegion("a", 0, 1), UEMRegion("a", 2, 3)])
    assert timelines["a"].duration() == pytest.approx(2)


# ------------------------------------------------------------------ a speaker's own overlap
def test_a_speakers_overlapping_turns_are_merged(caplog):
    # one speaker talking 0-10 s and 5-15 s talks 0-15 s: a perfect hypothesis has DER 0
    # (counting the speaker twice in 5-10 s would make those 5 s missed speech)
    with caplog.at_level(logging.WARNING, logger="slimdiar.scoring"):
        c, report = score_one(
            annotation("f", (0, 10, "A"), (5, 15, "A")),
            annotation("f", (0, 8, "x"), (6, 15, "x"), (7, 9, "x")),
        )
    assert (c.missed_s, c.false_alarm_s, c.confusion_s, c.total_s) == pytest.approx((0, 0, 0, 15))
    assert c.der == 0.0
    assert report.merged_turns == {"reference": 1, "hypothesis": 2}
    assert report.to_dict()["merged_turns"] == {"reference": 1, "hypothesis": 2}
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(logged) == 1 and "merged 1 reference and 2 hypothesis turns" in logged[0]


def test_collars_surround_the_merged_turns():
    # merged turn 0-15 s: collars only at 0 and 15 (none at 5 or 10): scored [0.25, 14.75]
    c, report = score_one(
        annotation("f", (0, 10, "A"), (5, 15, "A")), annotation("f", (0, 15, "x")), collar_s=0.25
    )
    assert (c.total_s, c.der) == pytest.approx((14.5, 0.0))
    assert report.files["f"].scored_s == pytest.approx(14.5)


def test_merge_speaker_turns_merges_overlaps_only():
    merged, num_merged = merge_speaker_turns(
        annotation(
            "f", (0, 2, "A"), (1, 3, "A"), (3, 4, "A"), (5, 6, "A"), (5, 6, "A"), (0, 6, "B")
        )
    )
    spans = sorted((s.start, s.end, label) for s, _, label in merged.itertracks(yield_label=True))
    # (0, 2) + (1, 3) overlap; (3, 4) only touches (0, 3) and stays apart; (5, 6) twice is once
    assert spans == [(0, 3, "A"), (0, 6, "B"), (3, 4, "A"), (5, 6, "A")]
    assert num_merged == 2
    assert merge_speaker_turns(merged)[1] == 0


# ------------------------------------------------------------------ nothing to score
def test_nothing_scored_is_an_error():
    with pytest.raises(NoScoredTimeError, match="hold no turns"):
        score_diarization({}, {})
    with pytest.raises(NoScoredTimeError, match="none of the 1 files"):
        score_diarization({}, {"f": annotation("f", (0, 5, "x"))})
    with pytest.raises(NoScoredTimeError, match="no reference speech in the scored region"):
        score_one(
            annotation("f", (0, 5, "A")),
            annotation("f", (0, 5, "x")),
            uem=Timeline([Segment(6, 9)]),
        )
    # collars of 5 s around 0 and 10 remove [-5, 5] and [5, 15]: all of the reference speech
    with pytest.raises(NoScoredTimeError, match="a collar of 5 s"):
        score_one(annotation("f", (0, 10, "A")), annotation("f", (0, 10, "x")), collar_s=5.0)
    with pytest.raises(NoScoredTimeError, match="overlap skipped"):
        score_one(
            annotation("f", (0, 10, "A"), (0, 10, "B")),
            annotation("f", (0, 10, "x")),
            skip_overlap=True,
        )


def test_a_file_without_scored_speech_has_null_der_and_a_reason():
    # b's only turn (0.4 s) lies inside its own collars ([-0.25, 0.25] and [0.15, 0.65])
    ref = {"a": annotation("a", (0, 10, "A")), "b": annotation("b", (0, 0.4, "B"))}
    hyp = {"a": annotation("a", (0, 10, "x")), "b": annotation("b", (0, 0.4, "y"))}
    report = score_diarization(ref, hyp, collar_s=0.25)
    b = report.files["b"]
    assert b.components.der is None and b.jer is None
    assert b.reason == "the collar covers all of the reference speech"
    assert b.to_dict()["der"] is None and b.to_dict()["reason"] == b.reason
    assert report.files["a"].to_dict()["reason"] is None
    assert report.total.total_s == pytest.approx(9.5) and report.total.der == 0.0


@pytest.mark.parametrize("collar_s", [-0.1, float("nan"), float("inf")])
def test_collar_must_be_finite_and_not_negative(collar_s):
    with pytest.raises(ConfigError, match="collar must be >= 0 and finite"):
        score_one(annotation("f", (0, 10, "A")), annotation("f", (0, 10, "x")), collar_s=collar_s)


def test_unknown_convention_is_refused():
    with pytest.raises(ConfigError, match="choose one of md-eval, pyannote"):
        score_one(annotation("f", (0, 10, "A")), annotation("f", (0, 10, "x")), convention="dscore")


# ------------------------------------------------------------------ md-eval vs pyannote mapping
SKIP_OVERLAP_CASE = (
    annotation("f", (0, 10, "A"), (4, 10, "B")),
    annotation("f", (0, 4, "x"), (4, 10, "y"), (4, 10, "z")),
)


def test_skip_overlap_md_eval_maps_speakers_before_removing_overlap():
    # whole region [0, 10]: co-occurrence A-x 4, A-y 6, A-z 6, B-y 6, B-z 6 s; the best one-to-one
    # mapping is A->y, B->z (or A->z, B->y): 12 s, against 10 s for A->x, B->y.
    ref, hyp = SKIP_OVERLAP_CASE
    # overlap scored: [0, 4) A heard as x is confused (4 s); [4, 10) is right. Total 10 + 6 s.
    for convention in ("md-eval", "pyannote"):
        c, _ = score_one(ref, hyp, convention=convention)
        assert (c.missed_s, c.false_alarm_s, c.confusion_s, c.total_s) == pytest.approx(
            (0, 0, 4, 16)
        )
    # overlap skipped: only [0, 4) is scored, A heard as x.
    # md-eval keeps A->y: 4 s confused of 4 -> DER 1.0
    c, report = score_one(ref, hyp, skip_overlap=True)
    assert report.convention == "md-eval"
    assert (c.missed_s, c.false_alarm_s, c.confusion_s, c.total_s) == pytest.approx((0, 0, 4, 4))
    assert c.der == pytest.approx(1.0)
    # pyannote maps on [0, 4) only: A->x, nothing confused -> DER 0.0
    c, report = score_one(ref, hyp, skip_overlap=True, convention="pyannote")
    assert report.convention == "pyannote"
    assert (c.missed_s, c.false_alarm_s, c.confusion_s, c.total_s) == pytest.approx((0, 0, 0, 4))


COLLAR_CASE = (
    annotation("f", (0, 1.5, "A"), *[(t, t + 0.4, "B") for t in (3, 4, 5, 6, 7)]),
    annotation("f", (0, 1.5, "x"), *[(t, t + 0.4, "x") for t in (3, 4, 5, 6, 7)]),
)


def test_collar_md_eval_maps_speakers_before_removing_collars():
    # one hypothesis speaker x says everything. Whole region (reference extent [0, 7.4]):
    # A-x 1.5 s, B-x 5 * 0.4 = 2.0 s, so x is B's and A is unmapped.
    ref, hyp = COLLAR_CASE
    # collar 0: A's 1.5 s are confused, B's 2.0 s right: DER 1.5 / 3.5 with either convention
    for convention in ("md-eval", "pyannote"):
        c, _ = score_one(ref, hyp, convention=convention)
        assert (c.confusion_s, c.total_s) == pytest.approx((1.5, 3.5))
    # collar 0.25: A's collars remove [-0.25, 0.25] and [1.25, 1.75]; each 0.4 s B turn lies in
    # its own collars. Scored speech: A in [0.25, 1.25] = 1.0 s, heard as x.
    # md-eval keeps x -> B: 1.0 s confused of 1.0 -> DER 1.0
    c, _ = score_one(ref, hyp, collar_s=0.25)
    assert (c.missed_s, c.false_alarm_s, c.confusion_s, c.total_s) == pytest.approx((0, 0, 1, 1))
    # pyannote maps on the scored region, where only A talks: A->x -> DER 0.0
    c, _ = score_one(ref, hyp, collar_s=0.25, convention="pyannote")
    assert (c.missed_s, c.false_alarm_s, c.confusion_s, c.total_s) == pytest.approx((0, 0, 0, 1))


def test_speakers_are_mapped_per_file():
    # the same labels map differently in two files; each file is right on its own
    ref = {
        "a": annotation("a", (0, 4, "A"), (4, 10, "B")),
        "b": annotation("b", (0, 4, "A"), (4, 10, "B")),
    }
    hyp = {
        "a": annotation("a", (0, 4, "x"), (4, 10, "y")),
        "b": annotation("b", (0, 4, "y"), (4, 10, "x")),
    }
    for convention in ("md-eval", "pyannote"):
        report = score_diarization(
            ref, hyp, collar_s=0.25, skip_overlap=True, convention=convention
        )
        assert report.total.der == 0.0 and report.total.total_s == pytest.approx(2 * 9.0)


# ------------------------------------------------------------------ property tests
DURATION_MS = 20_000
COLLAR_MS = 250


def random_turns_ms(rng, labels, num_turns):
    """Turns in whole milliseconds, some of one speaker overlapping (as bad RTTMs have)."""
    turns = []
    for _ in range(num_turns):
        start = int(rng.integers(0, DURATION_MS - 200))
        end = min(DURATION_MS, start + int(rng.integers(100, 5000)))
        turns.append((start, end, str(rng.choice(labels))))
        if rng.random() < 0.15:  # a second turn of the same speaker that overlaps this one
            inner = int(rng.integers(start, end))
            turns.append(
                (inner, min(DURATION_MS, inner + int(rng.integers(50, 3000))), turns[-1][2])
            )
    return turns


def merged_spans_ms(turns):
    """{label: [(start_ms, end_ms)]}: a speaker's overlapping turns merged, touching ones not."""
    spans: dict[str, list[tuple[int, int]]] = {}
    for start, end, label in sorted(turns, key=lambda t: (t[2], t[0], t[1])):
        own = spans.setdefault(label, [])
        if own and start < own[-1][1]:
            own[-1] = (own[-1][0], max(own[-1][1], end))
        else:
            own.append((start, end))
    return spans


def spans_to_annotation(uri, spans_ms):
    return annotation(
        uri, *[(s / 1000, e / 1000, label) for label, spans in spans_ms.items() for s, e in spans]
    )


def md_eval_on_grid(ref_turns, hyp_turns, uem_ms, collar_ms, skip_overlap):
    """md-eval's error times in ms on a 1 ms frame grid (frame k is [k, k + 1) ms).

    Speakers are mapped by trying every one-to-one assignment on the evaluated region (UEM or
    reference extent, collars and overlap kept); the errors are then counted on the evaluated
    region less the collars and (skip_overlap) overlap. Returns None when several best mappings
    give different errors (md-eval's choice among them is arbitrary).
    """
    ref_spans, hyp_spans = merged_spans_ms(ref_turns), merged_spans_ms(hyp_turns)

    def activity(spans):
        active = np.zeros((len(spans), DURATION_MS), dtype=bool)
        for row, label in enumerate(sorted(spans)):
            for start, end in spans[label]:
                active[row, start:end] = True
        return active

    ref, hyp = activity(ref_spans), activity(hyp_spans)
    if uem_ms is None:
        uem_ms = (
            [
                (
                    min(s for v in ref_spans.values() for s, _ in v),
                    max(e for v in ref_spans.values() for _, e in v),
                )
            ]
            if ref_spans
            else []
        )
    evaluated = np.zeros(DURATION_MS, dtype=bool)
    for start, end in uem_ms:
        evaluated[start:end] = True
    collar = np.zeros(DURATION_MS, dtype=bool)
    for spans in ref_spans.values():
        for boundary in (t for span in spans for t in span):
            collar[max(0, boundary - collar_ms) : max(0, boundary + collar_ms)] = True
    num_ref, num_hyp = ref.sum(0), hyp.sum(0)
    scored = evaluated & ~collar
    if skip_overlap:
        scored &= num_ref < 2

    size = max(len(ref), len(hyp))
    cooccurrence = np.zeros((size, size), dtype=np.int64)
    cooccurrence[: len(ref), : len(hyp)] = (ref & evaluated).astype(np.int64) @ hyp.T
    totals = {
        p: sum(cooccurrence[i, p[i]] for i in range(size))
        for p in itertools.permutations(range(size))
    }
    best = max(totals.values(), default=0)
    confusions = set()
    for p, value in totals.items():
        if value != best:
            continue
        num_mapped = sum(
            (ref[i] & hyp[p[i]]).astype(np.int64) for i in range(len(ref)) if p[i] < len(hyp)
        )
        confusions.add(int(np.sum(scored * (np.minimum(num_ref, num_hyp) - num_mapped))))
    if len(confusions) != 1:
        return None
    return (
        int(np.sum(scored * np.maximum(num_ref - num_hyp, 0))),
        int(np.sum(scored * np.maximum(num_hyp - num_ref, 0))),
        confusions.pop(),
        int(np.sum(scored * num_ref)),
    )


def random_cases(seed, num_cases, num_files=2):
    rng = np.random.default_rng(seed)
    for _ in range(num_cases):
        files = {}
        for k in range(num_files):
            ref = random_turns_ms(
                rng, ["A", "B", "C"][: int(rng.integers(1, 4))], int(rng.integers(2, 9))
            )
            hyp = random_turns_ms(
                rng, ["s1", "s2", "s3", "s4"][: int(rng.integers(1, 5))], int(rng.integers(1, 10))
            )
            uem = None
            if rng.random() < 0.5:
                cut = sorted(int(t) for t in rng.choice(DURATION_MS, size=3, replace=False))
                uem = [(cut[0], cut[1]), (cut[1] + 1, cut[2] + 1)]
            files[f"file{k}"] = (ref, hyp, uem)
        with_uem = any(uem is not None for _, _, uem in files.values())
        if with_uem:  # one UEM for all files or none: a file without a region is not scored
            files = {
                uri: (ref, hyp, uem or [(0, DURATION_MS)]) for uri, (ref, hyp, uem) in files.items()
            }
        yield files, with_uem


def score_case(files, with_uem, collar_s, skip_overlap, convention, merge_in_test):
    build = (
        (lambda uri, turns: spans_to_annotation(uri, merged_spans_ms(turns)))
        if merge_in_test
        else (
            lambda uri, turns: annotation(
                uri, *[(s / 1000, e / 1000, label) for s, e, label in turns]
            )
        )
    )
    refs = {uri: build(uri, ref) for uri, (ref, _, _) in files.items()}
    hyps = {uri: build(uri, hyp) for uri, (_, hyp, _) in files.items()}
    uems = (
        {
            uri: Timeline([Segment(s / 1000, e / 1000) for s, e in uem])
            for uri, (_, _, uem) in files.items()
        }
        if with_uem
        else None
    )
    return (
        refs,
        hyps,
        uems,
        score_diarization(refs, hyps, uems, collar_s, skip_overlap, convention=convention),
    )


@pytest.mark.parametrize("collar_s", [0.0, 0.25])
@pytest.mark.parametrize("skip_overlap", [False, True])
def test_pyannote_convention_equals_pyannote_metrics_on_merged_turns(collar_s, skip_overlap):
    metric_total = DiarizationErrorRate(collar=2 * collar_s, skip_overlap=skip_overlap)
    num_files = 0
    for files, with_uem in random_cases(7 + int(collar_s * 4) + 2 * skip_overlap, 50):
        # the raw turns go to slimdiar (which merges), the test's own merged turns to pyannote
        try:
            _, _, _, report = score_case(
                files, with_uem, collar_s, skip_overlap, "pyannote", merge_in_test=False
            )
        except NoScoredTimeError:
            report = None
        refs, hyps, uems, _ = score_case(files, with_uem, 0.0, False, "pyannote", True)
        metric = DiarizationErrorRate(collar=2 * collar_s, skip_overlap=skip_overlap)
        expected = {}
        for uri in files:
            region = uems[uri] if with_uem else Timeline([refs[uri].get_timeline().extent()])
            expected[uri] = metric(refs[uri], hyps[uri], uem=region, detailed=True)
            metric_total(refs[uri], hyps[uri], uem=region)
        if all(e["total"] == 0 for e in expected.values()):
            assert report is None
            continue
        for uri, e in expected.items():
            got = report.files[uri].components
            assert (got.missed_s, got.false_alarm_s, got.confusion_s, got.total_s) == pytest.approx(
                (e["missed detection"], e["false alarm"], e["confusion"], e["total"]), abs=1e-9
            )
            if e["total"] > 0:
                assert got.der == pytest.approx(e["diarization error rate"], abs=1e-9)
            num_files += 1
        assert report.total.der == pytest.approx(abs(metric), abs=1e-9)
    assert num_files >= 90


@pytest.mark.parametrize("collar_s", [0.0, 0.25])
@pytest.mark.parametrize("skip_overlap", [False, True])
def test_md_eval_convention_equals_a_frame_grid_md_eval(collar_s, skip_overlap):
    # all times are whole milliseconds, so the 1 ms grid is exact: the two agree to float error
    num_files = num_ties = num_merged = num_differ = 0
    for files, with_uem in random_cases(101 + int(collar_s * 4) + 2 * skip_overlap, 50):
        expected = {
            uri: md_eval_on_grid(
                ref, hyp, uem if with_uem else None, int(collar_s * 1000), skip_overlap
            )
            for uri, (ref, hyp, uem) in files.items()
        }
        if any(e is None for e in expected.values()):
            num_ties += 1
            continue
        if all(e[3] == 0 for e in expected.values()):
            with pytest.raises(NoScoredTimeError):
                score_case(files, with_uem, collar_s, skip_overlap, "md-eval", False)
            continue
        _, _, _, report = score_case(files, with_uem, collar_s, skip_overlap, "md-eval", False)
        _, _, _, other = score_case(files, with_uem, collar_s, skip_overlap, "pyannote", False)
        for uri, e in expected.items():
            got = report.files[uri].components
            assert (got.missed_s, got.false_alarm_s, got.confusion_s, got.total_s) == pytest.approx(
                tuple(t / 1000 for t in e), abs=1e-6
            )
            num_files += 1
        errors_ms = np.sum([e[:3] for e in expected.values()])
        total_ms = sum(e[3] for e in expected.values())
        assert report.total.der == pytest.approx(errors_ms / total_ms, abs=1e-9)
        # only the confusion can differ between the conventions, and only with a collar or
        # skipped overlap
        assert other.total.missed_s == pytest.approx(report.total.missed_s, abs=1e-9)
        assert other.total.false_alarm_s == pytest.approx(report.total.false_alarm_s, abs=1e-9)
        assert other.total.total_s == pytest.approx(report.total.total_s, abs=1e-9)
        num_differ += abs(other.total.confusion_s - report.total.confusion_s) > 1e-6
        num_merged += report.merged_turns["reference"] + report.merged_turns["hypothesis"]
    assert num_files >= 90 and num_ties <= 2 and num_merged > 0
    if collar_s == 0 and not skip_overlap:
        assert num_differ == 0
    else:
        assert num_differ > 0


def test_scoring_depends_on_numpy_and_pyannote_only():
    import sys

    code = (
        "import sys, slimdiar.scoring\n"
        "bad = sorted(m for m in ('torch', 'soundfile', 'soxr', 'slimdiar.data', 'slimdiar.models')"
        " if m in sys.modules)\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""


# ------------------------------------------------------------------ parity with NIST md-eval
MD_EVAL_SCRIPT = os.environ.get("SLIMDIAR_MD_EVAL")


def run_md_eval(tmp_path, files, with_uem, collar_s, skip_overlap):
    """Speaker times of md-eval-22 by file and in total ({"f=uri" or "ALL": {name: seconds}})."""
    ref_lines, hyp_lines, uem_lines = [], [], []
    for uri, (ref, hyp, uem) in files.items():
        # md-eval refuses a speaker's overlapping turns: it is given them merged (as dscore does)
        for lines, turns in ((ref_lines, ref), (hyp_lines, hyp)):
            lines += [
                f"SPEAKER {uri} 1 {s / 1000:.3f} {(e - s) / 1000:.3f} <NA> <NA> {label} <NA> <NA>\n"
                for label, spans in merged_spans_ms(turns).items()
                for s, e in spans
            ]
        uem_lines += [f"{uri} 1 {s / 1000:.3f} {e / 1000:.3f}\n" for s, e in uem or []]
    (tmp_path / "ref.rttm").write_text("".join(ref_lines))
    (tmp_path / "hyp.rttm").write_text("".join(hyp_lines))
    (tmp_path / "all.uem").write_text("".join(uem_lines))
    command = [
        "perl",
        MD_EVAL_SCRIPT,
        "-af",
        "-c",
        str(collar_s),
        "-r",
        str(tmp_path / "ref.rttm"),
        "-s",
        str(tmp_path / "hyp.rttm"),
    ]
    command += ["-u", str(tmp_path / "all.uem")] if with_uem else []
    command += ["-1"] if skip_overlap else []
    done = subprocess.run(command, capture_output=True, text=True)
    if "Illegal division by zero" in done.stderr:
        return None  # md-eval fails on a file without scored speech; slimdiar gives it no DER
    done.check_returncode()
    times = {}
    for block in done.stdout.split("*** Performance analysis for Speaker Diarization for ")[1:]:
        times[block.split(" ***")[0]] = {
            name: float(value)
            for name, value in re.findall(
                r"(SCORED SPEAKER|MISSED SPEAKER|FALARM SPEAKER|SPEAKER ERROR) TIME =([0-9.]+)",
                block,
            )
        }
    return times


@pytest.mark.slow
@pytest.mark.skipif(
    not MD_EVAL_SCRIPT, reason="set SLIMDIAR_MD_EVAL to NIST md-eval-22.pl (run with perl)"
)
@pytest.mark.parametrize("collar_s", [0.0, 0.25])
@pytest.mark.parametrize("skip_overlap", [False, True])
def test_md_eval_convention_equals_nist_md_eval(tmp_path, collar_s, skip_overlap):
    num_files = 0
    for files, with_uem in random_cases(1000 + int(collar_s * 4) + 2 * skip_overlap, 25):
        expected = run_md_eval(tmp_path, files, with_uem, collar_s, skip_overlap)
        if expected is None:
            continue
        _, _, _, report = score_case(files, with_uem, collar_s, skip_overlap, "md-eval", False)
        for uri, score in report.files.items():
            e = expected.get(f"f={uri}", {})
            c = score.components
            # md-eval prints its times with 6 decimals
            assert (c.missed_s, c.false_alarm_s, c.confusion_s, c.total_s) == pytest.approx(
                tuple(
                    e.get(name, 0.0)
                    for name in (
                        "MISSED SPEAKER",
                        "FALARM SPEAKER",
                        "SPEAKER ERROR",
                        "SCORED SPEAKER",
                    )
                ),
                abs=2e-6,
            )
            num_files += 1
        total = expected["ALL"]
        assert report.total.der == pytest.approx(
            (total["MISSED SPEAKER"] + total["FALARM SPEAKER"] + total["SPEAKER ERROR"])
            / total["SCORED SPEAKER"],
            abs=1e-6,
        )
    assert num_files >= 40
