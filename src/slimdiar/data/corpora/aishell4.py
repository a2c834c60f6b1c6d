"""AISHELL-4: 8-channel array recordings of Mandarin meetings, one TextGrid tier per speaker.

Release layout (only what is read)::

    AISHELL4_DIR/{train_L,train_M,train_S,test}/wav/<session>.flac         8 channels, 16 kHz
    AISHELL4_DIR/{train_L,train_M,train_S,test}/TextGrid/<session>.TextGrid
    (or AISHELL4_DIR/train_L/train_L/wav/..., as some extractions nest them)

The recording id is the file name without extension (``20200707_L_R001S01C01``,
``L_R003S01C02``). Each interval tier is a speaker and each interval with text is a turn, except
intervals that hold only one of the corpus's non-speech marks ``<%>`` and ``<$>`` (which the
corpus's own preparation scripts also leave out); the UEM is the span of the TextGrid clipped
to the audio.

AISHELL-4 has no development set. ``dev`` holds ``dev_sessions`` training sessions spread evenly
over the sorted list of all training sessions (so every room size is represented) and ``train``
is the rest: the two never share a session, whatever subsets are prepared.
"""

from __future__ import annotations

import logging
from pathlib import Path

from slimdiar.data.corpora.common import CorpusRecording
from slimdiar.data.corpora.textgrid import read_textgrid, speech_turns
from slimdiar.errors import DataFormatError

logger = logging.getLogger(__name__)

TRAIN_PARTS = ("train_L", "train_M", "train_S")
TEST_PARTS = ("test",)
SUBSETS = ("train", "dev", "test")
DEFAULT_DEV_SESSIONS = 10
# Interval texts of AISHELL-4 TextGrids that are not speech.
NON_SPEECH_MARKS = frozenset({"<%>", "<$>"})


def sessions(corpus_dir: str | Path, parts: tuple[str, ...]) -> list[tuple[str, Path, Path]]:
    """``(session, audio, textgrid)`` of every session of ``parts``, sorted by session.

    Raises
    ------
    DataFormatError
        If a part has no ``wav`` directory, or an audio file has no TextGrid.
    """
    corpus_dir = Path(corpus_dir)
    found = []
    for part in parts:
        # The archives unpack to PART/ (or, extracted into a directory of the same name,
        # PART/PART/).
        part_dir = next(
            (d for d in (corpus_dir / part, corpus_dir / part / part) if (d / "wav").is_dir()), None
        )
        if part_dir is None:
            raise DataFormatError(
                corpus_dir / part / "wav",
                None,
                None,
                f"missing: AISHELL-4 part {part!r} holds wav/*.flac and TextGrid/*.TextGrid",
            )
        for audio in sorted((part_dir / "wav").glob("*.flac")):
            textgrid = part_dir / "TextGrid" / f"{audio.stem}.TextGrid"
            if not textgrid.is_file():
                raise DataFormatError(textgrid, None, None, f"missing: the annotation of {audio}")
            found.append((audio.stem, audio, textgrid))
    if not found:
        raise DataFormatError(
            corpus_dir, None, None, f"no AISHELL-4 audio (*.flac) in {', '.join(parts)}"
        )
    return sorted(found)


def dev_indices(num_sessions: int, num_dev: int) -> list[int]:
    """Indices of ``num_dev`` sessions spread evenly over ``num_sessions`` (sorted, distinct)."""
    if not 0 <= num_dev < num_sessions:
        raise DataFormatError(
            "AISHELL-4",
            None,
            None,
            f"cannot hold out {num_dev} of {num_sessions} training sessions for dev",
        )
    return sorted({int((i + 0.5) * num_sessions / num_dev) for i in range(num_dev)})


def recordings(
    corpus_dir: str | Path,
    subset: str,
    *,
    dev_sessions: int = DEFAULT_DEV_SESSIONS,
    skip_invalid: bool = False,
) -> list[CorpusRecording]:
    """The recordings of one AISHELL-4 subset (``train``, ``dev`` or ``test``).

    Parameters
    ----------
    corpus_dir
        Directory holding ``train_L``, ``train_M``, ``train_S`` and ``test``.
    subset
        ``"train"``, ``"dev"`` (held-out training sessions) or ``"test"``.
    dev_sessions
        Number of training sessions held out as ``dev``.
    skip_invalid
        Skip (with a warning) sessions whose TextGrid is malformed instead of failing.

    Raises
    ------
    DataFormatError
        On a missing file or (unless ``skip_invalid``) a malformed TextGrid.
    """
    if subset not in SUBSETS:
        raise DataFormatError(
            corpus_dir,
            None,
            None,
            f"unknown AISHELL-4 subset {subset!r} (choose from {', '.join(SUBSETS)})",
        )
    if subset == "test":
        chosen = sessions(corpus_dir, TEST_PARTS)
    else:
        train = sessions(corpus_dir, TRAIN_PARTS)
        held_out = set(dev_indices(len(train), dev_sessions))
        chosen = [s for i, s in enumerate(train) if (i in held_out) == (subset == "dev")]
    return textgrid_recordings(chosen, skip_invalid=skip_invalid, non_speech=NON_SPEECH_MARKS)


def textgrid_recordings(
    chosen: list[tuple[str, Path, Path]],
    *,
    skip_invalid: bool,
    non_speech: frozenset[str] = frozenset(),
) -> list[CorpusRecording]:
    """Read the TextGrid of each ``(uri, audio, textgrid)`` into a :class:`CorpusRecording`.

    ``non_speech`` lists interval texts that are not speech (see :func:`speech_turns`).
    """
    out = []
    for uri, audio, textgrid_path in chosen:
        try:
            textgrid = read_textgrid(textgrid_path)
        except DataFormatError as error:
            if not skip_invalid:
                raise
            logger.warning("skipped %s: %s", uri, error)
            continue
        turns = speech_turns(textgrid, uri, non_speech)
        if not turns:
            logger.warning("%s: the TextGrid holds no speech", textgrid_path)
        out.append(CorpusRecording(uri, audio, turns, (textgrid.start_s, textgrid.end_s)))
    return out
