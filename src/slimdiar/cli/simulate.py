"""``slimdiar simulate``: simulated conversations as training data."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from slimdiar.cli._args import non_negative_int, output_dir, positive_int, with_flag_names
from slimdiar.errors import ConfigError
from slimdiar.frames import SAMPLE_RATE

DESCRIPTION = """\
Simulate conversations from single-speaker utterances (Landini et al., 2022) and write them as
data directories OUT/<split> (wav.scp, rttm, uem, wav/*.wav, simulation.json), one per split,
with disjoint speakers per split.

Turns follow each other with pauses and overlaps drawn from distributions; the probability of
overlapping at a change of speaker is calibrated to reach --overlap-ratio. With --stats-from the
distributions are estimated from a real RTTM file instead. The same --seed gives byte-identical
output.
"""

EPILOG = """\
speech sources (--speakers-from):
  TTS          the built-in offline voice pool (espeak-ng, flite, festival + sox; cached
               under --cache)
  TONES        synthetic voiced buzz at speaker-specific pitches (no speech; for trials)
  DIRECTORY    a corpus whose sub-directories are speakers (LibriSpeech: SPEAKER/CHAPTER/*.flac)
  FILE         a list of '<speaker> <audio path>' lines

examples:
  slimdiar simulate --out data/sim --splits train=20,dev=4,test=4 --seed 0
  slimdiar simulate --out data/sim-libri --speakers-from LibriSpeech/dev-clean \\
      --duration-s 120 --speakers-per-recording 2-3 --noise-snr-db 10-25 --reverb
  slimdiar simulate --out data/sim-ami --stats-from ami/train/rttm --num-recordings 50
"""

DEFAULT_SPLITS = "train=20,dev=4,test=4"


def parse_range(text: str, kind=float) -> tuple:
    """Parse ``"2-4"`` (or ``"3"``) into ``(2, 4)`` (``(3, 3)``)."""
    parts = text.split("-") if not text.startswith("-") else None
    try:
        if parts is None or len(parts) > 2 or not all(parts):
            raise ValueError
        low, high = (kind(parts[0]), kind(parts[-1]))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number or a range LOW-HIGH, got {text!r}"
        ) from None
    if low > high:
        raise argparse.ArgumentTypeError(f"range {text!r} has LOW above HIGH")
    return low, high


def scale_splits(splits: dict[str, int], total: int) -> dict[str, int]:
    """Share ``total`` recordings among ``splits`` in proportion to their counts.

    Largest remainders; every split with a non-zero count keeps at least one recording when
    ``total`` allows it.
    """
    weights = {name: count for name, count in splits.items() if count > 0}
    if total < 0:
        raise ConfigError(f"--num-recordings must be >= 0, got {total}")
    whole = sum(weights.values())
    shares = {name: total * count / whole for name, count in weights.items()}
    result = {name: int(math.floor(share)) for name, share in shares.items()}
    order = sorted(weights, key=lambda n: (-(shares[n] - result[n]), list(weights).index(n)))
    for name in order[: total - sum(result.values())]:
        result[name] += 1
    for name in [n for n in weights if result[n] == 0]:
        donor = max(result, key=result.get)
        if result[donor] > 1:
            result[donor] -= 1
            result[name] = 1
    return {name: result.get(name, 0) for name in splits}


def default_overlap_ratio() -> float:
    """The overlap ratio of a simulation without ``--overlap-ratio`` or ``--stats-from``."""
    from slimdiar.simulate.config import TurnTakingConfig

    return TurnTakingConfig().overlap_ratio


def add_parser(subparsers) -> None:
    """Add the ``simulate`` command to ``subparsers``."""
    parser = subparsers.add_parser(
        "simulate",
        help="simulate conversations as training data",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", type=output_dir, required=True, help="output directory")
    parser.add_argument(
        "--speakers-from",
        default="TTS",
        metavar="SOURCE",
        help="TTS, TONES, a corpus directory or a speaker list (default: TTS)",
    )
    parser.add_argument(
        "--splits",
        default=DEFAULT_SPLITS,
        help=f"recordings per split, NAME=COUNT,... (default: {DEFAULT_SPLITS})",
    )
    parser.add_argument(
        "--num-recordings",
        type=non_negative_int,
        default=None,
        metavar="N",
        help="total recordings, shared among the splits in their proportions",
    )
    parser.add_argument(
        "--duration-s",
        type=float,
        default=60.0,
        help="length of a recording in seconds (default: %(default)g)",
    )
    parser.add_argument(
        "--speakers-per-recording",
        type=lambda t: parse_range(t, int),
        default=(2, 4),
        metavar="MIN-MAX",
        help="default: 2-4",
    )
    parser.add_argument(
        "--overlap-ratio",
        type=float,
        default=None,
        help="fraction of the speech with two speakers (default: "
        f"{default_overlap_ratio():g}, or the "
        "value measured in --stats-from)",
    )
    parser.add_argument(
        "--stats-from",
        type=Path,
        default=None,
        metavar="RTTM",
        help="estimate pause and overlap distributions from this RTTM file",
    )
    parser.add_argument(
        "--noise-snr-db",
        type=parse_range,
        default=None,
        metavar="LOW-HIGH",
        help="add noise at an SNR drawn from this range in dB (default: none)",
    )
    parser.add_argument(
        "--noise-types",
        nargs="+",
        default=["white", "pink", "babble"],
        choices=["white", "pink", "babble"],
        help="default: all three",
    )
    parser.add_argument(
        "--reverb",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="convolve each speaker with a synthetic room response (default: off)",
    )
    parser.add_argument(
        "--rt60-s",
        type=parse_range,
        default=(0.2, 0.6),
        metavar="LOW-HIGH",
        help="reverberation time range in seconds (default: 0.2-0.6)",
    )
    parser.add_argument(
        "--sample-rate", type=positive_int, default=SAMPLE_RATE, help=f"default: {SAMPLE_RATE}"
    )
    parser.add_argument("--seed", type=int, default=0, help="default: 0")
    parser.add_argument(
        "--cache",
        type=Path,
        default=None,
        metavar="DIR",
        help="voice pool cache (default: ~/.cache/slimdiar/tts)",
    )
    parser.add_argument(
        "--tts-speakers",
        type=positive_int,
        default=None,
        metavar="N",
        help="use the first N voices of the pool (default: all), or N tone "
        "speakers with TONES (default: 24)",
    )
    parser.add_argument(
        "--utterances-per-speaker",
        type=positive_int,
        default=15,
        help="sentences each pool or tone speaker says (default: %(default)s)",
    )
    parser.add_argument(
        "--jobs",
        type=positive_int,
        default=1,
        help="parallel worker processes (the output does not depend on it)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace existing split directories once the new ones are complete",
    )
    parser.set_defaults(func=run)


def _source(args, sample_rate: int):
    from slimdiar.simulate import CorpusSource, ToneSource
    from slimdiar.simulate.tts import TTSVoicePool

    name = args.speakers_from
    if name.upper() == "TTS":
        return TTSVoicePool(
            args.cache,
            num_speakers=args.tts_speakers,
            utterances_per_speaker=args.utterances_per_speaker,
            sample_rate=sample_rate,
        )
    if name.upper() == "TONES":
        return ToneSource(
            num_speakers=args.tts_speakers or 24,
            utterances_per_speaker=args.utterances_per_speaker,
            sample_rate=sample_rate,
            seed=args.seed,
        )
    return CorpusSource(name, sample_rate)


def run(args) -> int:
    """Run ``slimdiar simulate``: write the simulated conversations as a data directory."""
    from dataclasses import replace

    from tqdm import tqdm

    from slimdiar.simulate import (
        SimulationConfig,
        TurnTakingConfig,
        parse_splits,
        simulate_data_dirs,
        turn_taking_from_rttm,
    )
    from slimdiar.simulate.tts import TTSVoicePool

    splits = parse_splits(args.splits)
    if args.num_recordings is not None:
        splits = scale_splits(splits, args.num_recordings)
    turns = TurnTakingConfig()
    if args.stats_from is not None:
        observed = turn_taking_from_rttm(args.stats_from)
        print(f"statistics of {args.stats_from}: {observed.summary()}")
        turns = observed.to_turn_taking_config()
    if args.overlap_ratio is not None:
        turns = replace(turns, overlap_ratio=args.overlap_ratio, overlap_probability=None)
    config = SimulationConfig(
        duration_s=args.duration_s,
        min_speakers=args.speakers_per_recording[0],
        max_speakers=args.speakers_per_recording[1],
        turns=turns,
        sample_rate=args.sample_rate,
        noise_snr_db=args.noise_snr_db,
        noise_types=tuple(args.noise_types),
        reverb=args.reverb,
        rt60_s=args.rt60_s,
    )
    try:
        config.validate()
    except ConfigError as error:
        raise with_flag_names(
            error,
            "duration_s",
            "overlap_ratio",
            "sample_rate",
            "rt60_s",
            "noise_snr_db",
            min_speakers="--speakers-per-recording",
            max_speakers="--speakers-per-recording",
        ) from None

    source = _source(args, args.sample_rate)
    print(f"source: {source.describe()}")
    if isinstance(source, TTSVoicePool):
        missing = {speaker for speaker, _ in source.missing()}
        if missing:
            with tqdm(total=len(missing), desc="voices", unit="speaker") as bar:
                count = source.prepare(max(2, args.jobs), progress=lambda _: bar.update())
            print(f"synthesised {count} utterances into {source.cache_dir}")

    with tqdm(total=sum(splits.values()), desc="recordings", unit="rec") as bar:
        report = simulate_data_dirs(
            source,
            args.out,
            config,
            splits,
            seed=args.seed,
            num_workers=args.jobs,
            overwrite=args.overwrite,
            progress=lambda _: bar.update(),
        )

    for split in report.splits:
        print(
            f"{split.path}: {split.num_recordings} recordings, "
            f"{split.duration_s / 3600:.2f} h, {len(split.speakers)} speakers"
        )
    print(f"\n{'':34}{'configured':>12}{'measured':>12}")
    for name, configured, measured in report.comparison():
        left = "-" if configured is None else f"{configured:.3f}"
        right = "-" if measured is None else f"{measured:.3f}"
        print(f"{name:34}{left:>12}{right:>12}")
    print("(an overlap is cut where it would outlast the current turn or reach a third speaker)")
    return 0
