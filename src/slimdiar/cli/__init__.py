"""The ``slimdiar`` command.

Each subcommand lives in its own module of this package and exposes ``add_parser(subparsers)``,
which registers an :mod:`argparse` parser whose ``func`` default runs the command and returns an
exit status. Only this package prints; nothing in the library imports it.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import traceback

from slimdiar import __version__
from slimdiar.errors import SlimdiarError
from slimdiar.interrupts import interrupts_held

# Module names under slimdiar.cli, in the order ``slimdiar --help`` lists them.
COMMANDS: list[str] = [
    "demo",
    "data",
    "prepare",
    "simulate",
    "finetune",
    "prune",
    "distill",
    "diarize",
    "score",
    "bench",
    "export",
    "convert",
    "pretrain",
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
    parser.add_argument(
        "--debug",
        action="store_true",
        help="print the traceback of an error (also: SLIMDIAR_DEBUG=1)",
    )
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"slimdiar.cli.{name}").add_parser(subparsers)
    return parser


def _debug_wanted(argv: list[str] | None) -> bool:
    """Whether tracebacks are asked for: ``--debug`` or ``SLIMDIAR_DEBUG=1``."""
    argv = sys.argv[1:] if argv is None else argv
    return "--debug" in argv or os.environ.get("SLIMDIAR_DEBUG", "") not in ("", "0")


def _error_line(error: BaseException) -> str:
    """The one-line message of an error: the path and the reason for an :class:`OSError`."""
    if isinstance(error, OSError) and error.strerror:
        where = error.filename if error.filename is not None else ""
        if error.filename2 is not None:
            where = f"{where} -> {error.filename2}"
        return f"{where}: {error.strerror}" if where else error.strerror
    return str(error)


def main(argv: list[str] | None = None) -> int:
    """Run the command line and return its exit status.

    Every command runs inside one error boundary: a slimdiar error or an :class:`OSError` is
    one line on stderr and exit status 2; Ctrl-C is exit status 130; any other exception is one
    line asking for a report, with the traceback only under ``--debug`` (or
    ``SLIMDIAR_DEBUG=1``) and exit status 1.
    """
    debug = _debug_wanted(argv)
    try:
        with interrupts_held():  # the commands import torch, whose loading Ctrl-C would abort
            parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as exit:  # --help, --version or a usage error, already printed
            return 0 if exit.code is None else int(exit.code)
        debug = debug or args.debug
        level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
        logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
        if not hasattr(args, "func"):
            parser.print_help()
            return 2
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        _print_traceback(debug)
        print("slimdiar: interrupted", file=sys.stderr)
        return 130
    except (SlimdiarError, OSError) as error:
        _print_traceback(debug)
        print(f"slimdiar: error: {_error_line(error)}", file=sys.stderr)
        return 2
    except Exception as error:  # the boundary: anything else is a bug to report
        _print_traceback(debug)
        hint = "" if debug else "; run again with --debug for the traceback"
        print(
            f"slimdiar: internal error: {type(error).__name__}: {_error_line(error)} "
            f"(please report this{hint})",
            file=sys.stderr,
        )
        return 1


def _print_traceback(debug: bool) -> None:
    if debug:
        traceback.print_exc(file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
