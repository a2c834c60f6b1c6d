"""``slimdiar diarize``: who spoke when, for audio files, directories of audio or a wav.scp.

Usage::

    slimdiar diarize --model exp/ami/eend data/ami/test/wav.scp --out exp/ami/test/rttm
    slimdiar diarize --model exp/ami/eend meeting.wav --num-speakers 4 --out out/
    slimdiar diarize --oracle-segmentation ref.rttm --oracle-clustering ref.rttm audio/ --out out/
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from slimdiar.data import read_rttm, read_wav_scp, write_text_atomic
from slimdiar.errors import ConfigError, SlimdiarError

logger = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".sph", ".aiff", ".aif")

DESCRIPTION = """\
Diarize recordings with an EEND segmentation model and speaker embeddings: 8 s windows every
--step seconds, powerset decisions with an 11-frame median filter, a frame-level speaker count,
one embedding per (window, local speaker), agglomerative clustering (centroid linkage, threshold
0.70) with a per-window constraint, and reconstruction on the 20 ms frame grid.

For each recording, OUT_DIR/<uri>.rttm (the turns) and OUT_DIR/<uri>.json (turns, exclusive turns,
models, options, timings) are written. A recording that fails is reported and skipped; the exit
status is then 1.
"""

EPILOG = """\
INPUT is an audio file (uri: its name without extension), a directory (every audio file in it,
not recursive), or a Kaldi wav.scp (uri: the recording id).

Oracle variants show where errors come from: --oracle-segmentation takes the local speakers of
every window from a reference RTTM (no segmentation model needed), --oracle-clustering assigns
each local speaker to the reference speaker it overlaps most (no embedding model needed). When
both are given they must name the same RTTM.
"""


def add_parser(subparsers) -> None:
    """Register ``slimdiar diarize``."""
    parser = subparsers.add_parser(
        "diarize",
        help="diarize audio files into RTTM",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="audio file, directory of audio, or wav.scp"
    )
    parser.add_argument("--model", metavar="CKPT",
                        help="EEND checkpoint directory or DiariZen model directory")
    parser.add_argument("--out", required=True, metavar="OUT_DIR", help="output directory")
    count = parser.add_argument_group("number of speakers (default: found by clustering)")
    count.add_argument("--num-speakers", type=int, metavar="N", help="exact number of speakers")
    count.add_argument("--min-speakers", type=int, metavar="A", help="at least A speakers")
    count.add_argument("--max-speakers", type=int, metavar="B", help="at most B speakers")
    parser.add_argument(
        "--exclusive", action="store_true",
        help="write exclusive turns (one speaker at a time) to the RTTM files",
    )
    parser.add_argument(
        "--step", type=float, default=0.8, metavar="SECONDS",
        help="seconds between window starts (default: 0.8)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=32, metavar="N",
        help="windows per segmentation batch (default: 32)",
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument(
        "--embedding", default="ge2e", metavar="NAME_OR_PATH",
        help="speaker embedding model name or checkpoint (default: ge2e)",
    )
    parser.add_argument(
        "--oracle-segmentation", metavar="RTTM", help="take local speakers from this reference"
    )
    parser.add_argument(
        "--oracle-clustering", metavar="RTTM", help="cluster with this reference"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def collect_inputs(inputs: list[str]) -> list[tuple[str, Path]]:
    """``(uri, audio path)`` of every recording named by the command-line inputs.

    Raises
    ------
    ConfigError
        For an input that does not exist, a directory without audio, or a uri given twice.
    """
    recordings: list[tuple[str, Path]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)
            if not files:
                suffixes = ", ".join(AUDIO_SUFFIXES)
                raise ConfigError(f"{path}: directory holds no audio file ({suffixes})")
            recordings.extend((p.stem, p) for p in files)
        elif path.is_file() and (path.suffix == ".scp" or path.name == "wav.scp"):
            recordings.extend((r.uri, r.path) for r in read_wav_scp(path))
        elif path.is_file():
            recordings.append((path.stem, path))
        else:
            raise ConfigError(f"{path}: no such audio file, directory or wav.scp")
    seen: dict[str, Path] = {}
    for uri, path in recordings:
        if not uri or any(c.isspace() for c in uri):
            raise ConfigError(f"{path}: recording id {uri!r} cannot be written to RTTM (spaces)")
        if uri in seen:
            raise ConfigError(f"recording id {uri!r} is given twice ({seen[uri]} and {path})")
        seen[uri] = path
    return recordings


def _progress_hook(uri: str, quiet: bool):
    """A tqdm bar for one recording, driven by the pipeline's hook; returns (hook, bar)."""
    from tqdm import tqdm

    bar = tqdm(total=1, desc=uri, unit="step", disable=quiet, leave=True, file=sys.stderr)
    state = {"stage": None}

    def hook(stage: str, payload, completed: int | None = None, total: int | None = None):
        if stage != state["stage"]:
            state["stage"] = stage
            bar.set_description(f"{uri} [{stage}]")
        if total:
            bar.total = total
            bar.n = completed or 0
            bar.refresh()

    return hook, bar


def _write_outputs(out_dir: Path, uri: str, result, exclusive: bool) -> None:
    """Write ``<uri>.rttm`` and ``<uri>.json``: both, or neither if one cannot be written."""
    texts = {
        out_dir / f"{uri}.rttm": result.to_rttm(exclusive=exclusive),
        out_dir / f"{uri}.json": result.to_json(),
    }
    written: list[Path] = []
    try:
        for path, text in texts.items():
            write_text_atomic(path, text)
            written.append(path)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise


def run(args: argparse.Namespace) -> int:
    """Diarize every input recording; 0 when all succeeded, 1 when any failed."""
    from slimdiar.pipeline import DiarizationPipeline, SpeakerBounds

    SpeakerBounds(args.num_speakers, args.min_speakers, args.max_speakers)  # fail early
    oracle_rttms = {args.oracle_segmentation, args.oracle_clustering} - {None}
    if len(oracle_rttms) > 1:
        raise ConfigError(
            "--oracle-segmentation and --oracle-clustering must name the same reference RTTM"
        )
    if args.model is None and args.oracle_segmentation is None:
        raise ConfigError("--model is required unless --oracle-segmentation is given")
    recordings = collect_inputs(args.inputs)
    reference: dict[str, list] | None = None
    if oracle_rttms:
        reference = {}
        for turn in read_rttm(oracle_rttms.pop()):
            reference.setdefault(turn.uri, []).append(turn)

    pipeline = DiarizationPipeline.from_pretrained(
        args.model if args.oracle_segmentation is None else None,
        embedding=args.embedding if args.oracle_clustering is None else None,
        device=args.device,
        step_s=args.step,
        batch_size=args.batch_size,
        segmentation="oracle" if args.oracle_segmentation else "model",
        clustering="oracle" if args.oracle_clustering else "agglomerative",
    )
    out_dir = Path(args.out)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"{out_dir}: cannot create the output directory ({error})") from None
    failed: list[str] = []
    for uri, path in recordings:
        turns = None
        if reference is not None:
            turns = reference.get(uri, [])
            if not turns:
                print(f"slimdiar: warning: {uri}: no reference turns (taken as silence)",
                      file=sys.stderr)
        hook, bar = _progress_hook(uri, args.quiet)
        try:
            result = pipeline(
                path,
                num_speakers=args.num_speakers,
                min_speakers=args.min_speakers,
                max_speakers=args.max_speakers,
                hook=hook,
                reference=turns,
                uri=uri,
            )
            _write_outputs(out_dir, uri, result, args.exclusive)
        except (SlimdiarError, OSError, RuntimeError, ValueError) as error:
            logger.debug("%s failed", uri, exc_info=True)
            print(f"slimdiar: error: {uri}: {error}", file=sys.stderr)
            failed.append(uri)
            continue
        finally:
            bar.close()
        if not args.quiet:
            print(f"{uri}: {result.num_speakers} speakers, {len(result.turns)} turns",
                  file=sys.stderr)
    if failed:
        print(
            f"slimdiar: {len(failed)} of {len(recordings)} recordings failed: {', '.join(failed)}",
            file=sys.stderr,
        )
        return 1
    return 0
