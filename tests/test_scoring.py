import warnings

import numpy as np
import pytest
from pyannote.core import Annotation, Segment, Timeline
from pyannote.metrics.diarization import DiarizationErrorRate, JaccardErrorRate

from slimdiar.data import Turn, UEMRegion
from slimdiar.scoring import (
    annotations_from_turns,
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


def score_one(ref, hyp, uem=None, collar_s=0.0, skip_overlap=False):
    report = score_diarization(
        {"f": ref}, {"f": hyp}, None if uem is None else {"f": uem}, collar_s, skip_overlap
    )
    return report.files["f"].components, report


# ------------------------------------------------------------------ hand-computed cases
def test_missed_speech():
    c, _ = score_one(annotation("f", (0, 10, "A")), annotation("f", (1, 10, "x")))
    assert (c.missed_s, c.false_alarm_s, c.confusion_s, c.total_s) == pytest.approx((1, 0, 0, 10))
    assert c.der == pytest.approx(0.1)


def test_collar_is_per_side_as_in_md_eval():
    # 0.25 s on each side of the reference boundaries 0 and 10: scored [0.25, 9.75]
    c, report = score_one(annotation("f", (0, 10, "A")), annotation("f", (1, 10, "x")),
                          collar_s=0.25)
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


# ------------------------------------------------------------------ parity with pyannote
def random_annotation(rng, uri, labels, duration_s, num_segments):
    spans = []
    for _ in range(num_segments):
        start = float(np.round(rng.uniform(0, duration_s - 0.5), 2))
        length = float(np.round(rng.uniform(0.1, 4.0), 2))
        spans.append((start, min(duration_s, start + length), str(rng.choice(labels))))
    return annotation(uri, *spans)


@pytest.mark.parametrize("with_uem", [False, True])
@pytest.mark.parametrize("collar_s", [0.0, 0.25])
@pytest.mark.parametrize("skip_overlap", [False, True])
def test_der_and_jer_match_pyannote_on_random_pairs(with_uem, collar_s, skip_overlap):
    rng = np.random.default_rng(int(with_uem) * 4 + int(collar_s * 8) + int(skip_overlap))
    refs, hyps, uems = {}, {}, {}
    for k in range(6):
        uri = f"file{k}"
        refs[uri] = random_annotation(rng, uri, ["A", "B", "C"], 30.0, 12)
        hyps[uri] = random_annotation(rng, uri, ["s1", "s2", "s3", "s4"], 30.0, 14)
        start = float(rng.uniform(0, 5))
        uems[uri] = Timeline([Segment(start, start + 10), Segment(start + 12, 30)])
    report = score_diarization(refs, hyps, uems if with_uem else None, collar_s, skip_overlap)

    der = DiarizationErrorRate(collar=2 * collar_s, skip_overlap=skip_overlap)
    jer = JaccardErrorRate(collar=2 * collar_s, skip_overlap=skip_overlap)
    for uri in refs:
        region = uems[uri] if with_uem else Timeline([refs[uri].get_timeline().extent()])
        expected = der(refs[uri], hyps[uri], uem=region, detailed=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected_jer = jer(refs[uri], hyps[uri], uem=region)
        got = report.files[uri]
        assert got.components.missed_s == pytest.approx(expected["missed detection"])
        assert got.components.false_alarm_s == pytest.approx(expected["false alarm"])
        assert got.components.confusion_s == pytest.approx(expected["confusion"])
        assert got.components.total_s == pytest.approx(expected["total"])
        assert got.components.der == pytest.approx(expected["diarization error rate"])
        assert got.jer == pytest.approx(expected_jer)
    assert report.total.der == pytest.approx(abs(der))
    assert report.jer == pytest.approx(abs(jer))
    assert report.total.total_s > 0 and report.total.der > 0


def test_scoring_depends_on_numpy_and_pyannote_only():
    import subprocess
    import sys

    code = (
        "import sys, slimdiar.scoring\n"
        "bad = sorted(m for m in ('torch', 'soundfile', 'soxr', 'slimdiar.data', 'slimdiar.models')"
        " if m in sys.modules)\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == ""
