"""Data preparation for the corpora of the paper: AMI, AISHELL-4 and AliMeeting (far field).

Each corpus module reads the official release layout and annotations and returns
:class:`CorpusRecording` records per subset (``train``, ``dev``, ``test``);
:func:`prepare_corpus` writes them as data directories (``wav.scp``, ``rttm``, ``uem``),
optionally with channel 0 copied out to mono files.
"""

from __future__ import annotations

from pathlib import Path

from slimdiar.data.corpora import aishell4, alimeeting, ami
from slimdiar.data.corpora.common import (
    CorpusRecording,
    PreparedSubset,
    clip_turns,
    extract_channel,
    merge_turns,
    speaker_label,
    write_datadir,
)
from slimdiar.data.corpora.textgrid import IntervalTier, TextGrid, read_textgrid, speech_turns
from slimdiar.errors import ConfigError

CORPORA = {"ami": ami, "aishell4": aishell4, "alimeeting": alimeeting}

__all__ = [
    "CORPORA",
    "CorpusRecording",
    "IntervalTier",
    "PreparedSubset",
    "TextGrid",
    "clip_turns",
    "extract_channel",
    "merge_turns",
    "prepare_corpus",
    "read_textgrid",
    "speaker_label",
    "speech_turns",
    "write_datadir",
]


def prepare_corpus(
    corpus: str,
    corpus_dir: str | Path,
    out_dir: str | Path,
    subsets: list[str] | None = None,
    *,
    channel: int = 0,
    extract_channel: bool = False,
    **options,
) -> list[PreparedSubset]:
    """Write ``OUT_DIR/<subset>/`` data directories for a corpus.

    Parameters
    ----------
    corpus
        ``"ami"``, ``"aishell4"`` or ``"alimeeting"``.
    corpus_dir
        Root of the corpus release.
    out_dir
        Where the subset directories go.
    subsets
        Subsets to prepare (default: all of the corpus: ``train``, ``dev``, ``test``).
    channel
        Channel to use (0-based): every recording must have it.
    extract_channel
        Copy that channel to ``OUT_DIR/audio/<uri>.wav`` and list those files in ``wav.scp``.
    **options
        Corpus-specific keyword arguments of the corpus module's ``recordings`` function.

    Returns
    -------
    list of PreparedSubset
        One per subset, in order.

    Raises
    ------
    ConfigError
        On an unknown corpus or subset, or a corpus directory that does not exist.
    DataFormatError
        On missing or malformed corpus files.
    """
    if corpus not in CORPORA:
        raise ConfigError(f"unknown corpus {corpus!r} (choose from {', '.join(CORPORA)})")
    module = CORPORA[corpus]
    subsets = list(module.SUBSETS) if subsets is None else list(subsets)
    unknown = [s for s in subsets if s not in module.SUBSETS]
    if unknown or not subsets:
        raise ConfigError(
            f"unknown {corpus} subset(s) {', '.join(unknown) or '(none given)'} "
            f"(choose from {', '.join(module.SUBSETS)})"
        )
    if not Path(corpus_dir).is_dir():
        raise ConfigError(f"corpus directory {corpus_dir} does not exist")
    out_dir = Path(out_dir)
    extract_to = out_dir / "audio" if extract_channel else None
    prepared = []
    for subset in subsets:
        records = module.recordings(corpus_dir, subset, **options)
        prepared.append(
            write_datadir(records, out_dir / subset, channel=channel, extract_to=extract_to)
        )
    return prepared
