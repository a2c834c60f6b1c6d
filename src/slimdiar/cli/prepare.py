"""``slimdiar prepare CORPUS``: data directories from the AMI, AISHELL-4 or AliMeeting release.

Usage::

    slimdiar prepare ami --corpus-dir /corpora/ami --out data/ami \
        --rttm-dir AMI-diarization-setup/only_words/rttms --uem-dir AMI-diarization-setup/uems
    slimdiar prepare aishell4 --corpus-dir /corpora/aishell4 --out data/aishell4 --extract-channel
    slimdiar prepare alimeeting --corpus-dir /corpora/alimeeting --out data/alimeeting
"""

from __future__ import annotations

import argparse

from slimdiar.cli._args import non_negative_int, output_dir
from slimdiar.data.corpora import CORPORA, prepare_corpus
from slimdiar.errors import ConfigError

DESCRIPTION = """\
Turn a corpus release into data directories OUT/<subset>/{wav.scp,rttm,uem}: far-field, one
channel, as in the paper.

  ami         single distant microphone (amicorpus/<meeting>/audio/<meeting>.Array1-01.wav),
              Full-corpus-ASR partition; references from the RTTM/UEM files of the AMI
              diarization setup (--rttm-dir, --uem-dir) or from the NXT manual annotations
              (--annotations-dir: words/*.words.xml, corpusResources/meetings.xml)
  aishell4    {train_L,train_M,train_S,test}/wav/*.flac + TextGrid/*.TextGrid; dev is a
              held-out set of training sessions (--dev-sessions)
  alimeeting  Train_Ali_far, Eval_Ali/Eval_Ali_far (dev), Test_Ali/Test_Ali_far with
              audio_dir/*.wav + textgrid_dir/*.TextGrid

Channel policy: the array recordings have 8 channels; training and inference read one of
them. Either keep the corpus files in wav.scp and train with '--set data.channel=0', or copy
channel 0 to mono files with --extract-channel (OUT/audio/<uri>.wav; less I/O when training).
Every output file is written atomically and the result is checked like 'slimdiar data check'.
"""

EPILOG = """\
examples:
  slimdiar prepare ami --corpus-dir /corpora/ami --out data/ami \\
      --rttm-dir AMI-diarization-setup/only_words/rttms --uem-dir AMI-diarization-setup/uems
  slimdiar prepare ami --corpus-dir /corpora/ami --out data/ami \\
      --annotations-dir /corpora/ami_public_manual_1.6.2
  slimdiar prepare aishell4 --corpus-dir /corpora/aishell4 --out data/aishell4 --extract-channel
  slimdiar prepare alimeeting --corpus-dir /corpora/alimeeting --out data/alimeeting \\
      --subsets dev,test
"""


def add_parser(subparsers) -> None:
    """Register ``slimdiar prepare``."""
    parser = subparsers.add_parser(
        "prepare",
        help="data directories from AMI, AISHELL-4 or AliMeeting",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("corpus", choices=sorted(CORPORA), help="corpus to prepare")
    parser.add_argument("--corpus-dir", required=True, metavar="DIR", help="corpus release root")
    parser.add_argument(
        "--out",
        type=output_dir,
        required=True,
        metavar="DIR",
        help="output root: one data directory per subset",
    )
    parser.add_argument(
        "--subsets",
        default=None,
        metavar="LIST",
        help="comma-separated subsets (default: train,dev,test)",
    )
    parser.add_argument(
        "--channel",
        type=non_negative_int,
        default=0,
        metavar="K",
        help="0-based channel used (default: %(default)s)",
    )
    parser.add_argument(
        "--extract-channel",
        action="store_true",
        help="copy the channel to mono files OUT/audio/<uri>.wav",
    )
    parser.add_argument(
        "--skip-invalid",
        action="store_true",
        help="skip recordings with malformed or missing annotations or audio "
        "(with a warning) instead of failing",
    )
    ami = parser.add_argument_group("AMI")
    ami.add_argument(
        "--rttm-dir",
        metavar="DIR",
        help="RTTM files of the AMI diarization setup (DIR/<subset>/<meeting>.rttm)",
    )
    ami.add_argument(
        "--uem-dir",
        metavar="DIR",
        help="UEM files of the AMI diarization setup (default: whole recordings)",
    )
    ami.add_argument(
        "--annotations-dir",
        metavar="DIR",
        help="AMI NXT manual annotations (words/, corpusResources/)",
    )
    ami.add_argument(
        "--merge-gap",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="NXT words of a speaker at most this far apart form one turn "
        "(default: %(default)g, only touching words)",
    )
    aishell4 = parser.add_argument_group("AISHELL-4")
    aishell4.add_argument(
        "--dev-sessions",
        type=non_negative_int,
        default=10,
        metavar="N",
        help="training sessions held out as dev (default: %(default)s)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Prepare the requested subsets and print one line per data directory."""
    subsets = None
    if args.subsets is not None:
        subsets = [s.strip() for s in args.subsets.split(",") if s.strip()]
    if args.channel < 0:
        raise ConfigError(f"--channel must be >= 0, got {args.channel}")
    if args.corpus == "ami":
        if args.merge_gap < 0:
            raise ConfigError(f"--merge-gap must be >= 0, got {args.merge_gap}")
        options = dict(
            annotations_dir=args.annotations_dir,
            rttm_dir=args.rttm_dir,
            uem_dir=args.uem_dir,
            merge_gap_s=args.merge_gap,
            skip_missing=args.skip_invalid,
        )
    else:
        for name in ("rttm_dir", "uem_dir", "annotations_dir"):
            if getattr(args, name) is not None:
                option = "--" + name.replace("_", "-")
                raise ConfigError(f"{option} applies to ami only")
        options = dict(skip_invalid=args.skip_invalid)
        if args.corpus == "aishell4":
            options["dev_sessions"] = args.dev_sessions
    prepared = prepare_corpus(
        args.corpus,
        args.corpus_dir,
        args.out,
        subsets,
        channel=args.channel,
        extract_channel=args.extract_channel,
        **options,
    )
    for subset in prepared:
        print(
            f"{subset.path}: {subset.num_recordings} recordings, {subset.num_turns} turns, "
            f"{subset.duration_s / 3600:.2f} h"
        )
    return 0
