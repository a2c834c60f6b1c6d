"""``slimdiar convert``: models published in other formats as slimdiar checkpoints.

Usage::

    slimdiar convert diarizen models/diarizen-wavlm-base-s80-md --out exp/diarizen-base-s80
    slimdiar diarize --model exp/diarizen-base-s80 data/ami/test/wav.scp --out exp/rttm
"""

from __future__ import annotations

import argparse

DESCRIPTION = """\
Convert a model published in another format into a slimdiar checkpoint directory.

'convert diarizen DIR' reads a DiariZen model directory (config.toml, pytorch_model.bin and
optionally plda/) and writes an EEND checkpoint. The pipeline settings of config.toml
([inference.args]: window, step, batch, median filter; [clustering.args]: method and options)
are stored with the model and become the defaults of 'slimdiar diarize'; plda/ is copied into
the checkpoint. Every tensor must find its place in the model: any other is an error.
'slimdiar diarize --model DIR' also runs a DiariZen directory directly, without converting it.
"""


def add_parser(subparsers) -> None:
    """Register ``slimdiar convert``."""
    parser = subparsers.add_parser(
        "convert",
        help="models of other formats (DiariZen) as slimdiar checkpoints",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("format", choices=["diarizen"], help="the source format")
    parser.add_argument("source", metavar="DIR", help="the model directory to convert")
    parser.add_argument(
        "--out",
        required=True,
        metavar="CKPT",
        help="checkpoint directory to write (replaced if it exists)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Convert ``args.source`` and print where the checkpoint went."""
    from slimdiar.models.diarizen import convert_diarizen_dir

    out = convert_diarizen_dir(args.source, args.out)
    print(f"wrote {out}")
    return 0
