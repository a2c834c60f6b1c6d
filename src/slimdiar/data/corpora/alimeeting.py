"""AliMeeting far-field: 8-channel array recordings of Mandarin meetings, TextGrid per session.

Release layout (only what is read)::

    ALI_DIR/Train_Ali_far/audio_dir/<room>_<meeting>_<array>.wav     e.g. R0003_M0046_MS002.wav
    ALI_DIR/Train_Ali_far/textgrid_dir/<room>_<meeting>.TextGrid      e.g. R0003_M0046.TextGrid
    ALI_DIR/Eval_Ali/Eval_Ali_far/{audio_dir,textgrid_dir}/           (or ALI_DIR/Eval_Ali_far)
    ALI_DIR/Test_Ali/Test_Ali_far/{audio_dir,textgrid_dir}/           (or ALI_DIR/Test_Ali_far)

``Train_Ali_far`` may also sit under ``ALI_DIR/Train_Ali/``. Each session's TextGrid is paired
with the one audio file whose name starts with ``<session>_``; the recording id is the audio
file name without extension (``R8001_M8004_MS801``). Tiers (named like ``R8001_M8004_N_SPK8013``
or ``N_SPK8013``) are speakers; the UEM is the span of the TextGrid clipped to the audio. The
subsets are ``train``, ``dev`` (the official Eval set) and ``test``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from slimdiar.data.corpora.aishell4 import textgrid_recordings
from slimdiar.data.corpora.common import CorpusRecording
from slimdiar.errors import DataFormatError

logger = logging.getLogger(__name__)

PARTS = {"train": "Train", "dev": "Eval", "test": "Test"}
SUBSETS = tuple(PARTS)


def part_dir(corpus_dir: str | Path, subset: str) -> Path:
    """The ``*_Ali_far`` directory of ``subset``.

    Raises
    ------
    DataFormatError
        If none of the accepted locations exists.
    """
    corpus_dir = Path(corpus_dir)
    name = f"{PARTS[subset]}_Ali_far"
    candidates = [corpus_dir / f"{PARTS[subset]}_Ali" / name, corpus_dir / name]
    for candidate in candidates:
        if (candidate / "audio_dir").is_dir():
            return candidate
    raise DataFormatError(
        corpus_dir,
        None,
        None,
        f"no AliMeeting {name} directory with "
        f"audio_dir/ (looked for {', '.join(str(c) for c in candidates)})",
    )


def recordings(
    corpus_dir: str | Path, subset: str, *, skip_invalid: bool = False
) -> list[CorpusRecording]:
    """The far-field recordings of one AliMeeting subset (``train``, ``dev`` or ``test``).

    Raises
    ------
    DataFormatError
        On an unknown subset, a missing directory, a session without exactly one audio file,
        or (unless ``skip_invalid``) a malformed TextGrid.
    """
    if subset not in PARTS:
        raise DataFormatError(
            corpus_dir,
            None,
            None,
            f"unknown AliMeeting subset {subset!r} (choose from {', '.join(SUBSETS)})",
        )
    root = part_dir(corpus_dir, subset)
    textgrid_dir = root / "textgrid_dir"
    textgrids = sorted(textgrid_dir.glob("*.TextGrid"))
    if not textgrids:
        raise DataFormatError(textgrid_dir, None, None, "no *.TextGrid files")
    chosen = []
    for textgrid in textgrids:
        session = textgrid.stem
        audio = sorted((root / "audio_dir").glob(f"{session}_*.wav"))
        if len(audio) != 1:
            found = ", ".join(a.name for a in audio) or "none"
            raise DataFormatError(
                textgrid,
                None,
                None,
                f"expected one audio file "
                f"audio_dir/{session}_*.wav for this session, found {found}",
            )
        chosen.append((audio[0].stem, audio[0], textgrid))
    return textgrid_recordings(chosen, skip_invalid=skip_invalid)
