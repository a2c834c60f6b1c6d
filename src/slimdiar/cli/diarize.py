"""``slimdiar diarize``: who spoke when, for audio files, directories of audio or a wav.scp.

Usage::

    slimdiar diarize --model exp/ami/eend data/ami/test/wav.scp --out exp/ami/test/rttm
    slimdiar diarize --model exp/ami/eend meeting.wav --num-speakers 4 --out out/
    slimdiar diarize --oracle-segmentation ref.rttm --oracle-clustering ref.rttm audio/ --out out/
    slimdiar diarize --model exp/ami/eend --config p.toml --set windows.step_s=1.6 a.wav --out o/
    slimdiar diarize --model exp/ami/eend data/ami/test --out out/ --jobs 2
    torchrun --nproc_per_node 4 -m slimdiar diarize --model exp/eend test/ --out o/ --device cuda
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

from slimdiar.cli import _parallel
from slimdiar.cli._args import output_dir, positive_float, positive_int, with_flag_names
from slimdiar.data import read_rttm, read_uem, read_wav_scp, write_text_atomic
from slimdiar.errors import ConfigError, SlimdiarError
from slimdiar.pipeline.clustering import AgglomerativeClustering
from slimdiar.pipeline.config import DEFAULT_BATCH_SIZES, WindowsSection

logger = logging.getLogger(__name__)

#: The built-in window settings, whose numbers the help quotes.
WINDOWS = WindowsSection()
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".sph", ".aiff", ".aif")

DESCRIPTION = f"""\
Diarize recordings with an EEND segmentation model and speaker embeddings: sliding windows,
powerset decisions with a median filter, a frame-level speaker count, one embedding per (window,
local speaker), clustering (agglomerative or VBx) with a per-window constraint, and
reconstruction on the 20 ms frame grid.

Pipeline settings, from lowest to highest precedence: the built-in defaults \
({WINDOWS.duration_s:g} s windows
every {WINDOWS.step_s:g} s in batches of {DEFAULT_BATCH_SIZES["cpu"]} on a CPU and \
{DEFAULT_BATCH_SIZES["cuda"]} on a GPU, agglomerative
clustering at the embedding's own threshold: 0.70 for a WeSpeaker ResNet, the value measured in
docs/clustering-threshold.md for GE2E), the settings saved with the model
(its metadata, e.g. the threshold tuned on a dev set), --config FILE.toml, then --set
section.key=value and the explicit options below (--step, --threshold, ...). See
docs/pipeline.md for every key.

For each recording, OUT_DIR/<uri>.rttm (the turns) and OUT_DIR/<uri>.json (turns, exclusive turns,
models, options, timings) are written. A recording that fails is reported and skipped; the exit
status is then 1.
"""

EPILOG = """\
INPUT is an audio file (uri: its name without extension), a directory (every audio file in it,
not recursive), a Kaldi wav.scp (uri: the recording id), or a data directory (its wav.scp; the
turns are cut to the regions of its uem file, when it has one). A file whose name holds a space
is reported and skipped: its uri could not be written to RTTM.

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
    parser.add_argument(
        "--model", metavar="CKPT", help="EEND checkpoint directory or DiariZen model directory"
    )
    parser.add_argument(
        "--out", type=output_dir, required=True, metavar="OUT_DIR", help="output directory"
    )
    count = parser.add_argument_group("number of speakers (default: found by clustering)")
    count.add_argument(
        "--num-speakers", type=positive_int, metavar="N", help="exact number of speakers"
    )
    count.add_argument("--min-speakers", type=positive_int, metavar="A", help="at least A speakers")
    count.add_argument("--max-speakers", type=positive_int, metavar="B", help="at most B speakers")
    parser.add_argument(
        "--exclusive",
        action="store_true",
        help="write exclusive turns (one speaker at a time) to the RTTM files",
    )
    settings = parser.add_argument_group("pipeline settings (default: the model's own)")
    settings.add_argument(
        "--config",
        metavar="FILE",
        help="TOML file of pipeline settings ([windows], [segmentation], [clustering], [speakers])",
    )
    settings.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        dest="overrides",
        help="override one setting, e.g. clustering.threshold=0.5 (repeatable)",
    )
    settings.add_argument(
        "--step",
        type=positive_float,
        metavar="SECONDS",
        help=f"seconds between window starts (windows.step_s; built-in default {WINDOWS.step_s:g})",
    )
    settings.add_argument(
        "--batch-size",
        type=positive_int,
        metavar="N",
        help="windows per segmentation batch (windows.batch_size; built-in default: "
        f"{DEFAULT_BATCH_SIZES['cpu']} on a CPU, {DEFAULT_BATCH_SIZES['cuda']} on a GPU, "
        "unless the model's settings give one)",
    )
    settings.add_argument(
        "--clustering",
        choices=["agglomerative", "vbx"],
        help="clustering method (clustering.method)",
    )
    settings.add_argument(
        "--threshold",
        type=float,
        metavar="D",
        help="agglomerative distance threshold (clustering.threshold; default: the "
        "embedding's, 0.70 for a WeSpeaker ResNet, see docs/clustering-threshold.md for GE2E)",
    )
    settings.add_argument(
        "--min-cluster-size",
        type=positive_int,
        metavar="N",
        help="agglomerative clusters smaller than N join the closest large one "
        "(clustering.min_cluster_size; built-in default "
        f"{AgglomerativeClustering.min_cluster_size})",
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument(
        "--dtype",
        choices=["float32", "bfloat16", "float16"],
        default="float32",
        help="precision of both models (default: float32); bfloat16 is fast on GPUs and on "
        "CPUs with AVX-512-BF16 or AMX (a warning says when the CPU has neither); float16 "
        "on GPUs only",
    )
    parser.add_argument(
        "--engine",
        choices=["torch", "onnx"],
        default="torch",
        help="what runs the models (default: torch); onnx runs the models exported by "
        "'slimdiar export' (given with --onnx) in ONNX Runtime, float32 only",
    )
    parser.add_argument(
        "--onnx",
        metavar="EXPORT_DIR",
        help="with --engine onnx: the directory 'slimdiar export' wrote for --model "
        "(segmentation.onnx, and embedding.onnx for a ResNet embedding)",
    )
    parser.add_argument(
        "--embedding",
        default="ge2e",
        metavar="NAME_OR_PATH",
        help="speaker embedding model name or checkpoint (default: ge2e)",
    )
    parser.add_argument(
        "--oracle-segmentation", metavar="RTTM", help="take local speakers from this reference"
    )
    parser.add_argument("--oracle-clustering", metavar="RTTM", help="cluster with this reference")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parallel = parser.add_argument_group(
        "several processes",
        "Under torchrun, or any launcher that sets RANK and WORLD_SIZE, "
        "each rank diarizes its share of the recordings (on cuda:LOCAL_RANK with --device "
        "cuda). See docs/pipeline.md.",
    )
    parallel.add_argument(
        "--jobs",
        type=positive_int,
        metavar="N",
        help="diarize in N worker processes on this machine, each its share of the recordings",
    )
    parallel.add_argument(
        "--threads",
        type=positive_int,
        metavar="T",
        help="torch threads per process (default: the cores divided by --jobs with --jobs; "
        "torch's choice otherwise)",
    )
    parser.set_defaults(func=run)


@dataclass
class Inputs:
    """The recordings named on the command line.

    Parameters
    ----------
    recordings
        ``(uri, audio path)`` of every recording to diarize, in order.
    rejected
        ``(uri, audio path, reason)`` of recordings that cannot be diarized as named; they are
        reported and skipped like recordings that fail.
    regions
        The regions to keep per uri, from the ``uem`` file of a data directory.
    """

    recordings: list[tuple[str, Path]] = field(default_factory=list)
    rejected: list[tuple[str, Path, str]] = field(default_factory=list)
    regions: dict[str, list[tuple[float, float]]] = field(default_factory=dict)


def collect_inputs(inputs: list[str]) -> Inputs:
    """The recordings named by the command-line inputs.

    Raises
    ------
    ConfigError
        For an input that does not exist, a directory without audio, an empty wav.scp, or a
        uri given twice.
    """
    found = Inputs()
    named: list[tuple[str, Path]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir() and (path / "wav.scp").is_file():  # a data directory
            named.extend(_read_scp(path / "wav.scp"))
            if (path / "uem").is_file():
                for region in read_uem(path / "uem"):
                    found.regions.setdefault(region.uri, []).append((region.start_s, region.end_s))
        elif path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)
            if not files:
                suffixes = ", ".join(AUDIO_SUFFIXES)
                raise ConfigError(
                    f"{path}: directory holds no audio file ({suffixes}) and no wav.scp"
                )
            named.extend((p.stem, p) for p in files)
        elif path.is_file() and (path.suffix == ".scp" or path.name == "wav.scp"):
            named.extend(_read_scp(path))
        elif path.is_file():
            named.append((path.stem, path))
        else:
            raise ConfigError(f"{path}: no such audio file, directory or wav.scp")
    seen: dict[str, Path] = {}
    for uri, path in named:
        if not uri or any(c.isspace() for c in uri):
            found.rejected.append(
                (
                    uri,
                    path,
                    f"recording id {uri!r} cannot be written to RTTM "
                    "(it holds a space); rename the file",
                )
            )
            continue
        if uri in seen:
            raise ConfigError(f"recording id {uri!r} is given twice ({seen[uri]} and {path})")
        seen[uri] = path
        found.recordings.append((uri, path))
    return found


def _read_scp(path: Path) -> list[tuple[str, Path]]:
    recordings = read_wav_scp(path)
    if not recordings:
        raise ConfigError(f"{path}: the wav.scp lists no recording")
    return [(r.uri, r.path) for r in recordings]


def setting_layers(args: argparse.Namespace) -> list[dict]:
    """The pipeline settings of the command line: the TOML file, then ``--set`` and options."""
    from slimdiar.pipeline import parse_settings, read_settings

    options: dict = {}

    def put(section: str, key: str, value) -> None:
        if value is not None:
            options.setdefault(section, {})[key] = value

    put("windows", "step_s", args.step)
    put("windows", "batch_size", args.batch_size)
    if args.oracle_segmentation:
        put("segmentation", "source", "oracle")
    put("clustering", "method", "oracle" if args.oracle_clustering else args.clustering)
    put("clustering", "threshold", args.threshold)
    put("clustering", "min_cluster_size", args.min_cluster_size)
    file_layer = read_settings(args.config) if args.config else {}
    return [file_layer, parse_settings(args.overrides), options]


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


def check_onnx_options(args: argparse.Namespace) -> None:
    """Refuse option combinations the ONNX engine cannot run, before any work."""
    if args.onnx is None:
        raise ConfigError("--engine onnx needs --onnx EXPORT_DIR (written by 'slimdiar export')")
    if args.oracle_segmentation is not None:
        raise ConfigError(
            "--engine onnx runs the segmentation model: not with --oracle-segmentation"
        )
    if getattr(args, "dtype", "float32") != "float32":
        raise ConfigError("--engine onnx runs in float32 only: drop --dtype")
    if args.device != "cpu":
        raise ConfigError("--engine onnx runs on the CPU only: drop --device")


def run(args: argparse.Namespace) -> int:
    """Diarize every input recording; 0 when all succeeded, 1 when any failed."""
    from slimdiar.pipeline import DiarizationPipeline, SpeakerBounds
    from slimdiar.pipeline.parallel import durations_s, rank_device, shard

    try:  # fail early, in the words of the command line
        SpeakerBounds(args.num_speakers, args.min_speakers, args.max_speakers)
    except ConfigError as error:
        raise with_flag_names(error, "num_speakers", "min_speakers", "max_speakers") from None
    oracle_rttms = {args.oracle_segmentation, args.oracle_clustering} - {None}
    if len(oracle_rttms) > 1:
        raise ConfigError(
            "--oracle-segmentation and --oracle-clustering must name the same reference RTTM"
        )
    if args.model is None and args.oracle_segmentation is None:
        raise ConfigError("--model is required unless --oracle-segmentation is given")
    from slimdiar.models.precision import resolve_dtype

    resolve_dtype(getattr(args, "dtype", "float32"), args.device)  # fail early
    engine = getattr(args, "engine", "torch")
    if engine == "onnx":
        from slimdiar.pipeline.engines import require_onnxruntime

        check_onnx_options(args)
        require_onnxruntime()
    elif getattr(args, "onnx", None) is not None:
        raise ConfigError("--onnx is an option of --engine onnx")
    rank = _parallel.current_rank(args)
    inputs = collect_inputs(args.inputs)
    if (getattr(args, "jobs", None) or 1) > 1:
        return _parallel.run_jobs(args, run, len(inputs.recordings))
    _parallel.set_threads(args)
    recordings = inputs.recordings
    if rank.distributed:  # this rank's share; rank 0 reports the rejected inputs
        recordings = shard(recordings, rank.world_size, durations_s(recordings))[rank.rank]
        inputs.rejected = inputs.rejected if rank.rank == 0 else []
        args.device = rank_device(args.device, rank.local_rank)
        if not recordings and not inputs.rejected:  # more ranks than recordings
            return _parallel.finish_rank(rank, 0, [])
    reference: dict[str, list] | None = None
    if oracle_rttms:
        reference = {}
        for turn in read_rttm(oracle_rttms.pop()):
            reference.setdefault(turn.uri, []).append(turn)

    pipeline = DiarizationPipeline.from_pretrained(
        args.model if args.oracle_segmentation is None else None,
        embedding=args.embedding if args.oracle_clustering is None else None,
        device=args.device,
        settings=setting_layers(args),
    )
    if engine == "onnx":
        from slimdiar.pipeline.engines import use_onnx_models

        use_onnx_models(pipeline, args.onnx, args.threads)
    if getattr(args, "dtype", "float32") != "float32":
        from slimdiar.pipeline.precision import set_pipeline_precision

        set_pipeline_precision(pipeline, args.dtype, args.device)
    out_dir = Path(args.out)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"{out_dir}: cannot create the output directory ({error})") from None
    failed: list[str] = []
    for uri, path, reason in inputs.rejected:
        print(f"slimdiar: error: {path}: {reason}", file=sys.stderr)
        failed.append(uri)
    for uri, path in recordings:
        turns = None
        if reference is not None:
            turns = reference.get(uri, [])
            if not turns:
                print(
                    f"slimdiar: warning: {uri}: no reference turns (taken as silence)",
                    file=sys.stderr,
                )
        hook, bar = _progress_hook(uri, args.quiet or rank.distributed)
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
            if uri in inputs.regions:
                result = result.cropped(inputs.regions[uri])
            _write_outputs(out_dir, uri, result, args.exclusive)
        except (SlimdiarError, OSError, RuntimeError, ValueError) as error:
            bar.close()  # before the message, so that it is not drawn over
            logger.debug("%s failed", uri, exc_info=True)
            print(f"slimdiar: error: {uri}: {error}", file=sys.stderr)
            failed.append(uri)
            continue
        finally:
            bar.close()
        if not args.quiet:
            print(
                f"{uri}: {result.num_speakers} speakers, {len(result.turns)} turns", file=sys.stderr
            )
    if rank.distributed:  # a summary line per rank, then wait for the other ranks
        return _parallel.finish_rank(rank, len(recordings) + len(inputs.rejected), failed)
    if failed:
        total = len(recordings) + len(inputs.rejected)
        print(
            f"slimdiar: {len(failed)} of {total} recordings failed: {', '.join(failed)}",
            file=sys.stderr,
        )
        return 1
    return 0
