"""``slimdiar score``: DER and JER of hypothesis RTTMs against reference RTTMs.

Usage::

    slimdiar score --ref data/ami/test --hyp exp/ami/test/rttm --collar 0.25 --json der.json
    slimdiar score --ref ref.rttm --hyp hyp.rttm --skip-overlap --convention pyannote
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from slimdiar.cli._args import output_file
from slimdiar.data import Turn, read_rttm, read_uem, write_text_atomic
from slimdiar.errors import ConfigError, DataFormatError
from slimdiar.scoring import (
    CONVENTIONS,
    ScoreReport,
    annotations_from_turns,
    check_collar,
    score_diarization,
    timelines_from_regions,
)

DESCRIPTION = """\
Score speaker diarization: DER (missed speech + false alarm + speaker confusion, divided by the
total reference speech) per file and in total, as NIST md-eval computes it, and JER (pyannote).

A speaker's own overlapping turns are merged first (with a warning), as dscore does.
--collar is the no-score collar on EACH side of every reference boundary, as md-eval's -c counts
it (0.25 removes 0.5 s around each boundary). Without a UEM, each file is scored over the extent of
its reference (first reference onset to last offset), as md-eval does. Files present only in the
reference are all missed speech; files present only in the hypothesis are scored where a UEM
covers them and reported as not scored otherwise.

--convention md-eval (default) maps reference to hypothesis speakers on the whole scored region,
overlap included, before the collars and overlap are removed, as md-eval does; --convention
pyannote maps them on what remains, as pyannote.metrics does. They differ only with a collar or
--skip-overlap.
"""

EPILOG = """\
RTTM_OR_DIR is an RTTM file, a data directory (its 'rttm' file, and its 'uem' file when --uem is
not given), or a directory of *.rttm files (one per recording; a recording found in two of them is
refused unless its turns are the same in both).
"""


def add_parser(subparsers) -> None:
    """Register ``slimdiar score``."""
    parser = subparsers.add_parser(
        "score",
        help="DER/JER of hypothesis RTTMs against reference RTTMs",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--ref", required=True, metavar="RTTM_OR_DIR", help="reference")
    parser.add_argument("--hyp", required=True, metavar="RTTM_OR_DIR", help="hypothesis")
    parser.add_argument("--uem", metavar="UEM", help="scored regions (UEM file)")
    parser.add_argument(
        "--collar",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="no-score collar on each side of reference boundaries (default: %(default)s)",
    )
    parser.add_argument(
        "--skip-overlap", action="store_true", help="do not score overlapped reference speech"
    )
    parser.add_argument(
        "--convention",
        choices=CONVENTIONS,
        default=CONVENTIONS[0],
        help="where speakers are mapped: md-eval (whole region, before collars and overlap "
        "removal) or pyannote (scored region only) (default: %(default)s)",
    )
    parser.add_argument(
        "--json", type=output_file, metavar="FILE", help="also write the scores as JSON"
    )
    parser.set_defaults(func=run)


def read_turns(path: str | Path) -> tuple[list[Turn], Path | None]:
    """Read turns from an RTTM file or directory; also return a data directory's UEM, if any."""
    path = Path(path)
    if path.is_file():
        return read_rttm(path), None
    if not path.is_dir():
        raise DataFormatError(path, None, None, "no such RTTM file or directory")
    if (path / "rttm").is_file():
        uem = path / "uem"
        return read_rttm(path / "rttm"), uem if uem.is_file() else None
    files = sorted(path.glob("*.rttm"))
    if not files:
        raise DataFormatError(
            path, None, None, "directory holds neither an 'rttm' file nor any *.rttm file"
        )
    return read_rttm_files(files), None


def read_rttm_files(files: list[Path]) -> list[Turn]:
    """Read several RTTM files; a recording may appear in two only with the same turns.

    Raises
    ------
    DataFormatError
        When a recording appears in two files with different turns (both files are named).
    """
    first_file: dict[str, Path] = {}
    turns_by_uri: dict[str, list[Turn]] = {}
    for file in files:
        grouped: dict[str, list[Turn]] = {}
        for turn in read_rttm(file):
            grouped.setdefault(turn.uri, []).append(turn)
        for uri, turns in grouped.items():
            if uri not in turns_by_uri:
                first_file[uri], turns_by_uri[uri] = file, turns
            elif sorted(map(_turn_key, turns)) != sorted(map(_turn_key, turns_by_uri[uri])):
                raise DataFormatError(
                    file,
                    None,
                    None,
                    f"recording {uri!r} is also in {first_file[uri]}, with other turns; "
                    "score a directory that holds each recording once",
                )
    return [turn for turns in turns_by_uri.values() for turn in turns]


def _turn_key(turn: Turn) -> tuple:
    return turn.onset_s, turn.duration_s, turn.speaker, turn.channel


def run(args: argparse.Namespace) -> int:
    """Score, print the table and write the JSON; exit status 0."""
    try:
        collar_s = check_collar(args.collar)
    except ConfigError:
        raise ConfigError(
            f"--collar must be >= 0 and finite (seconds), got {args.collar}"
        ) from None
    console = Console(soft_wrap=True, markup=False, highlight=False)
    ref_turns, dir_uem = read_turns(args.ref)
    hyp_turns, _ = read_turns(args.hyp)
    uem_path = Path(args.uem) if args.uem else dir_uem
    uem = timelines_from_regions(read_uem(uem_path)) if uem_path else None
    report = score_diarization(
        annotations_from_turns(ref_turns),
        annotations_from_turns(hyp_turns),
        uem=uem,
        collar_s=collar_s,
        skip_overlap=args.skip_overlap,
        convention=args.convention,
    )
    print_report(report, uem_path, console)
    if args.json:
        data = report.to_dict()
        data["uem_file"] = str(uem_path) if uem_path else None
        write_text_atomic(args.json, json.dumps(data, indent=2) + "\n")
        console.print(f"wrote {args.json}")
    return 0


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}"


def print_report(report: ScoreReport, uem_path: Path | None, console: Console) -> None:
    """Print the per-file and total table, and how the files were scored."""
    table = Table(title="diarization error (times in seconds)")
    for name in ("file", "DER %", "missed", "false alarm", "confusion", "total", "JER %", "note"):
        table.add_column(name, justify="left" if name in ("file", "note") else "right")
    for uri, score in report.files.items():
        c = score.components
        note = {"ref_only": "no hyp", "hyp_only": "no ref"}.get(score.status, "")
        table.add_row(
            uri,
            _percent(c.der),
            f"{c.missed_s:.2f}",
            f"{c.false_alarm_s:.2f}",
            f"{c.confusion_s:.2f}",
            f"{c.total_s:.2f}",
            _percent(score.jer),
            note,
        )
    t = report.total
    table.add_row(
        "TOTAL",
        _percent(t.der),
        f"{t.missed_s:.2f}",
        f"{t.false_alarm_s:.2f}",
        f"{t.confusion_s:.2f}",
        f"{t.total_s:.2f}",
        _percent(report.jer),
        f"{len(report.files)} files",
        style="bold",
    )
    console.print(table)
    if uem_path:
        console.print(f"scored regions: UEM {uem_path}")
    else:
        console.print(
            "scored regions: no UEM, each file scored over the extent of its reference "
            "(md-eval convention)"
        )
    overlap = "skipped" if report.skip_overlap else "scored"
    console.print(
        f"collar: {report.collar_s:g} s on each side of reference boundaries; "
        f"overlap {overlap}; speakers mapped with the {report.convention} convention"
    )
    for uri, reason in report.unscored.items():
        console.print(f"not scored: {uri} ({reason})")
    for uri, score in report.files.items():
        if score.reason:
            console.print(f"no DER: {uri} ({score.reason})")
