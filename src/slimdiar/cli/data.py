"""``slimdiar data check DIR``: validate a data directory and summarise it.

Usage::

    slimdiar data check data/ami/dev
    slimdiar data check data/ami/dev --channel 0
"""

from __future__ import annotations

import argparse
import statistics

from rich.console import Console
from rich.table import Table

from slimdiar.cli._args import non_negative_int
from slimdiar.data import DataDir, DataSummary

DESCRIPTION = """\
Validate a data directory (wav.scp, rttm and optional uem) and print what it holds.

Every line of every file is checked (field counts, numbers, durations, duplicate ids), and the
files are checked against each other: RTTM/UEM lines of unknown recordings, turns outside the
audio or outside the UEM, unreadable audio. The first problem is reported as FILE:LINE with the
line, and the exit status is 1.
"""

EPILOG = """\
data directory layout:
  wav.scp   <recording-id> <path>            (paths relative to the directory are allowed)
  rttm      SPEAKER <file> <chan> <onset> <duration> <NA> <NA> <speaker> <NA> <NA>
  uem       <file> <chan> <start> <end>      (optional; without it whole recordings are used)
"""


def add_parser(subparsers) -> None:
    """Register ``slimdiar data``."""
    parser = subparsers.add_parser(
        "data",
        help="check data directories",
        description="Tools for data directories (wav.scp + rttm + uem).",
    )
    parser.set_defaults(func=lambda args: _no_subcommand(parser))
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    check = commands.add_parser(
        "check",
        help="validate a data directory and print a summary",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("directory", metavar="DIR", help="data directory")
    check.add_argument(
        "--channel",
        type=non_negative_int,
        default=None,
        metavar="K",
        help="0-based channel that will be read (every recording must have it); "
        "default: downmix all channels to mono",
    )
    check.add_argument(
        "--max-rows",
        type=non_negative_int,
        default=20,
        metavar="N",
        help="recordings listed in the per-recording table (default: %(default)s)",
    )
    check.set_defaults(func=run_check)


def _no_subcommand(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def run_check(args: argparse.Namespace) -> int:
    """Validate ``args.directory`` and print its summary; exit status 0."""
    datadir = DataDir.load(args.directory, channel=args.channel)
    console = Console(soft_wrap=True, markup=False, highlight=False)
    print_summary(datadir, datadir.summary(), args.channel, args.max_rows, console)
    return 0


def _counts(values: dict) -> str:
    return ", ".join(f"{key} ({count} rec.)" for key, count in values.items())


def _spread(values: list[int]) -> str:
    if not values:
        return "-"
    return f"min {min(values)} / median {statistics.median(values):g} / max {max(values)}"


def print_summary(
    datadir: DataDir, summary: DataSummary, channel: int | None, max_rows: int, console: Console
) -> None:
    """Print the overview and per-recording tables."""
    overview = Table(title=f"{datadir.path}: OK", show_header=False)
    overview.add_column("what", style="bold")
    overview.add_column("value")
    overview.add_row("recordings", str(summary.num_recordings))
    overview.add_row("audio", f"{summary.hours:.2f} h ({summary.duration_s:.1f} s)")
    scored_from = "uem" if datadir.has_uem else "whole recordings (no uem file)"
    overview.add_row("scored / trained", f"{summary.scored_s / 3600:.2f} h from {scored_from}")
    overview.add_row("speech", f"{100 * summary.speech_fraction:.1f} % of scored time")
    overview.add_row("overlap", f"{100 * summary.overlap_fraction:.1f} % of speech")
    overview.add_row("turns", str(summary.num_turns))
    overview.add_row("speakers", str(len(summary.turns_per_speaker)))
    overview.add_row(
        "speakers per recording", _spread(list(summary.speakers_per_recording.values()))
    )
    overview.add_row("turns per speaker", _spread(list(summary.turns_per_speaker.values())))
    overview.add_row("sample rates (Hz)", _counts(summary.sample_rates))
    overview.add_row("channels", _counts(summary.channels))
    policy = "downmix to mono" if channel is None else f"channel {channel}"
    overview.add_row("channel policy", policy)
    console.print(overview)

    table = Table(
        title="recordings", caption="spk: speakers, ovl: overlap (% of speech), ch: channels"
    )
    for name in ("recording", "dur s", "scored s", "spk", "turns", "speech %", "ovl %", "Hz", "ch"):
        table.add_column(name, justify="left" if name == "recording" else "right")
    for row in summary.recordings[:max_rows]:
        speech = 100 * row["speech_s"] / row["scored_s"] if row["scored_s"] else 0.0
        overlap = 100 * row["overlap_s"] / row["speech_s"] if row["speech_s"] else 0.0
        table.add_row(
            row["uri"],
            f"{row['duration_s']:.1f}",
            f"{row['scored_s']:.1f}",
            str(row["speakers"]),
            str(row["turns"]),
            f"{speech:.1f}",
            f"{overlap:.1f}",
            str(row["sample_rate"]),
            str(row["channels"]),
        )
    console.print(table)
    if len(summary.recordings) > max_rows:
        console.print(f"... and {len(summary.recordings) - max_rows} more recordings")
