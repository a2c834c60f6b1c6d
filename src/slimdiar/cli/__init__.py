"""The ``slimdiar`` command.

Each subcommand lives in its own module of this package and exposes ``add_parser(subparsers)``,
which registers an :mod:`argparse` parser whose ``func`` default runs the command and returns an
exit status. Only this package prints; nothing in the library imports it.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from slimdiar import __version__
from slimdiar.errors import SlimdiarError

# Module names under slimdiar.cli, in the order ``slimdiar --help`` lists them.
COMMANDS: list[str] = [
    "demo", "data", "prepare", "simulate", "finetune", "prune", "distill", "diarize", "score",
    "bench", "pretrain",
]

DESCRIPTION = """\
slimdiar: compact WavLM models for speaker diarization.

Fine-tune WavLM inside an end-to-end diarization model, prune it structurally with
distillation from the fine-tuned model, and run it as a complete diarization system.
Run 'slimdiar COMMAND --help' for the options of one command.
"""


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="slimdiar",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"slimdiar {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)"
    )
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"slimdiar.cli.{name}").add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line and return its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except SlimdiarError as error:
        print(f"slimdiar: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("slimdiar: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
