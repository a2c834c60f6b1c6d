"""AMI meeting corpus: far-field single distant microphone, Full-corpus-ASR partition.

Release layout (only what is read)::

    AMI_DIR/amicorpus/<meeting>/audio/<meeting>.Array1-01.wav     (or AMI_DIR/<meeting>/audio/...)

References come from one of two places:

- the RTTM and UEM files of the community AMI diarization setup (``only_words`` references):
  ``RTTM_DIR/<subset>/<meeting>.rttm`` (or ``RTTM_DIR/<meeting>.rttm``) and likewise
  ``UEM_DIR``; without ``UEM_DIR`` the whole recording is scored;
- the manual annotations (NXT release, ``ami_public_manual_1.6.2``): every ``<w>`` element with
  times in ``words/<meeting>.<agent>.words.xml`` is speech of that agent (punctuation, vocal
  sounds, gaps and pauses are not), the words of a speaker that touch or lie at most
  ``merge_gap_s`` apart are merged, and ``corpusResources/meetings.xml`` maps agents (A, B, ...)
  to the global speaker names (``FEE013``); the UEM is the whole recording.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ElementTree
from pathlib import Path

from slimdiar.data.corpora.common import CorpusRecording, merge_turns, speaker_label
from slimdiar.data.formats import read_rttm, read_uem
from slimdiar.data.records import Turn
from slimdiar.errors import DataFormatError

logger = logging.getLogger(__name__)

NITE_ID = "{http://nite.sourceforge.net/}id"

# The Full-corpus-ASR partition of AMI: the meetings of each subset.
_PARTITION_TEXT = {
    "train": (
        "IS1000a IS1000b IS1000c IS1000d IS1001a IS1001b IS1001c IS1001d IS1002b IS1002c "
        "IS1002d IS1003a IS1003b IS1003c IS1003d IS1004a IS1004b IS1004c IS1004d IS1005a "
        "IS1005b IS1005c IS1006a IS1006b IS1006c IS1006d IS1007a IS1007b IS1007c IS1007d "
        "ES2002a ES2002b ES2002c ES2002d ES2003a ES2003b ES2003c ES2003d ES2005a ES2005b "
        "ES2005c ES2005d ES2006a ES2006b ES2006c ES2006d ES2007a ES2007b ES2007c ES2007d "
        "ES2008a ES2008b ES2008c ES2008d ES2009a ES2009b ES2009c ES2009d ES2010a ES2010b "
        "ES2010c ES2010d ES2012a ES2012b ES2012c ES2012d ES2013a ES2013b ES2013c ES2013d "
        "ES2014a ES2014b ES2014c ES2014d ES2015a ES2015b ES2015c ES2015d ES2016a ES2016b "
        "ES2016c ES2016d TS3005a TS3005b TS3005c TS3005d TS3006a TS3006b TS3006c TS3006d "
        "TS3007a TS3007b TS3007c TS3007d TS3008a TS3008b TS3008c TS3008d TS3009a TS3009b "
        "TS3009c TS3009d TS3010a TS3010b TS3010c TS3010d TS3011a TS3011b TS3011c TS3011d "
        "TS3012a TS3012b TS3012c TS3012d IN1001 IN1002 IN1005 IN1007 IN1008 IN1009 IN1012 "
        "IN1013 IN1014 IN1016 EN2001a EN2001b EN2001d EN2001e EN2003a EN2004a EN2005a "
        "EN2006a EN2006b EN2009b EN2009c EN2009d"
    ),
    "dev": (
        "IS1008a IS1008b IS1008c IS1008d ES2011a ES2011b ES2011c ES2011d TS3004a TS3004b "
        "TS3004c TS3004d IB4001 IB4002 IB4003 IB4004 IB4010 IB4011"
    ),
    "test": (
        "IS1009a IS1009b IS1009c IS1009d ES2004a ES2004b ES2004c ES2004d TS3003a TS3003b "
        "TS3003c TS3003d EN2002a EN2002b EN2002c EN2002d"
    ),
}
PARTITION: dict[str, tuple[str, ...]] = {
    subset: tuple(text.split()) for subset, text in _PARTITION_TEXT.items()
}
SUBSETS = tuple(PARTITION)
AUDIO_SUFFIX = ".Array1-01.wav"


def audio_path(corpus_dir: Path, meeting: str) -> Path | None:
    """The single-distant-microphone file of ``meeting``, or ``None`` when it is missing."""
    for root in (corpus_dir / "amicorpus", corpus_dir):
        path = root / meeting / "audio" / f"{meeting}{AUDIO_SUFFIX}"
        if path.is_file():
            return path
    return None


def _find(directory: Path, subset: str, name: str) -> Path | None:
    for path in (directory / subset / name, directory / name):
        if path.is_file():
            return path
    return None


def read_meeting_speakers(path: str | Path) -> dict[str, dict[str, str]]:
    """Read ``corpusResources/meetings.xml``: meeting -> agent letter -> global speaker name.

    Raises
    ------
    DataFormatError
        If the file is not well-formed XML or a ``<speaker>`` lacks ``nxt_agent``.
    """
    path = Path(path)
    root = _parse_xml(path)
    speakers: dict[str, dict[str, str]] = {}
    for meeting in root.iter():
        if _local(meeting.tag) != "meeting":
            continue
        observation = meeting.get("observation")
        if not observation:
            raise DataFormatError(path, None, None, "a <meeting> element lacks 'observation'")
        agents = speakers.setdefault(observation, {})
        for speaker in meeting:
            if _local(speaker.tag) != "speaker":
                continue
            agent = speaker.get("nxt_agent")
            if not agent:
                raise DataFormatError(
                    path, None, None, f"a <speaker> of meeting {observation!r} lacks 'nxt_agent'"
                )
            agents[agent] = speaker.get("global_name") or f"{observation}_{agent}"
    return speakers


def read_words(path: str | Path, uri: str, speaker: str) -> list[Turn]:
    """Read the timed words of one speaker from an NXT ``*.words.xml`` file.

    Only ``<w>`` elements count as speech; punctuation (``punc="true"``) and words without
    times are skipped, as are words whose end is not after their start.

    Parameters
    ----------
    path
        The ``<meeting>.<agent>.words.xml`` file.
    uri
        Recording id of the turns.
    speaker
        Speaker label of the turns.

    Returns
    -------
    list of Turn
        One turn per word, in file order.

    Raises
    ------
    DataFormatError
        If the file is not well-formed XML or a time is not a number.
    """
    path = Path(path)
    root = _parse_xml(path)
    turns, untimed, empty = [], 0, 0
    for element in root.iter():
        if _local(element.tag) != "w" or element.get("punc") == "true":
            continue
        start, end = element.get("starttime"), element.get("endtime")
        if start is None or end is None:
            untimed += 1
            continue
        times = []
        for name, text in (("starttime", start), ("endtime", end)):
            try:
                times.append(float(text))
            except ValueError:
                raise DataFormatError(
                    path,
                    None,
                    None,
                    f"element <w nite:id={element.get(NITE_ID)!r}>: {name} "
                    f"{text!r} is not a number",
                ) from None
        if times[1] <= times[0] or times[0] < 0:
            empty += 1
            continue
        turns.append(Turn(uri, times[0], times[1] - times[0], speaker))
    if untimed or empty:
        logger.info(
            "%s: skipped %d word(s) without times and %d with end <= start", path, untimed, empty
        )
    return turns


def _parse_xml(path: Path) -> ElementTree.Element:
    try:
        return ElementTree.parse(path).getroot()
    except FileNotFoundError:
        raise DataFormatError(path, None, None, "no such file") from None
    except ElementTree.ParseError as error:
        line = error.position[0] if error.position else None
        raise DataFormatError(path, line, None, f"malformed XML ({error})") from None
    except OSError as error:
        raise DataFormatError(path, None, None, f"cannot read ({error.strerror})") from None


def _local(tag) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def recordings(
    corpus_dir: str | Path,
    subset: str,
    *,
    annotations_dir: str | Path | None = None,
    rttm_dir: str | Path | None = None,
    uem_dir: str | Path | None = None,
    merge_gap_s: float = 0.0,
    skip_missing: bool = False,
) -> list[CorpusRecording]:
    """The recordings of one AMI subset with their reference turns.

    Parameters
    ----------
    corpus_dir
        Directory holding ``amicorpus/`` (or the meeting directories themselves).
    subset
        ``"train"``, ``"dev"`` or ``"test"`` (Full-corpus-ASR partition).
    annotations_dir
        The NXT manual annotations (``words/``, ``corpusResources/``); used when ``rttm_dir`` is
        not given.
    rttm_dir, uem_dir
        RTTM / UEM files of the AMI diarization setup (per subset or flat).
    merge_gap_s
        Words of one speaker at most this far apart (seconds) become one turn (NXT only).
    skip_missing
        Skip meetings whose audio or reference is missing (with a warning) instead of failing.

    Raises
    ------
    DataFormatError
        On a missing file (unless ``skip_missing``) or a malformed annotation.
    """
    if subset not in PARTITION:
        raise DataFormatError(
            corpus_dir,
            None,
            None,
            f"unknown AMI subset {subset!r} (choose from {', '.join(SUBSETS)})",
        )
    # The references: RTTM files of the diarization setup, else the NXT annotations.
    if rttm_dir is not None:
        use_rttm, reference_dir = True, Path(rttm_dir)
    elif annotations_dir is not None:
        use_rttm, reference_dir = False, Path(annotations_dir)
    else:
        raise DataFormatError(
            corpus_dir,
            None,
            None,
            "AMI references need --rttm-dir (RTTM "
            "files of the AMI diarization setup) or --annotations-dir (the "
            "NXT manual annotations)",
        )
    corpus_dir = Path(corpus_dir)
    speakers = {}
    if not use_rttm:
        meetings_xml = reference_dir / "corpusResources" / "meetings.xml"
        if meetings_xml.is_file():
            speakers = read_meeting_speakers(meetings_xml)
        else:
            logger.warning("%s is missing: speakers are named <meeting>_<agent>", meetings_xml)
    out, missing = [], []
    for meeting in PARTITION[subset]:
        audio = audio_path(corpus_dir, meeting)
        if audio is None:
            missing.append(f"{meeting} (audio {meeting}{AUDIO_SUFFIX})")
            continue
        if use_rttm:
            turns = _setup_turns(reference_dir, subset, meeting)
            if turns is None:
                missing.append(f"{meeting} (RTTM {meeting}.rttm)")
                continue
        else:
            turns = _nxt_turns(reference_dir, meeting, speakers.get(meeting, {}), merge_gap_s)
            if turns is None:
                missing.append(f"{meeting} (words/{meeting}.*.words.xml)")
                continue
        span_s = None
        if uem_dir is not None:
            span_s = _setup_span(Path(uem_dir), subset, meeting)
            if span_s is None:
                missing.append(f"{meeting} (UEM {meeting}.uem)")
                continue
        out.append(CorpusRecording(meeting, audio, turns, span_s))
    if missing:
        listed = ", ".join(missing[:8]) + (" ..." if len(missing) > 8 else "")
        if not skip_missing:
            raise DataFormatError(
                corpus_dir,
                None,
                None,
                f"AMI {subset}: {len(missing)} meeting(s) incomplete: {listed} "
                "(use --skip-missing to prepare the rest)",
            )
        logger.warning("AMI %s: skipped %d incomplete meeting(s): %s", subset, len(missing), listed)
    return out


def _setup_turns(rttm_dir: Path, subset: str, meeting: str) -> list[Turn] | None:
    path = _find(rttm_dir, subset, f"{meeting}.rttm")
    if path is None:
        return None
    turns = read_rttm(path)
    for turn in turns:
        if turn.uri != meeting:
            raise DataFormatError(
                path,
                turn.line_number,
                None,
                f"recording {turn.uri!r} in the RTTM file of {meeting!r}",
            )
    return turns


def _setup_span(uem_dir: Path, subset: str, meeting: str) -> tuple[float, float] | None:
    path = _find(uem_dir, subset, f"{meeting}.uem")
    if path is None:
        return None
    regions = [r for r in read_uem(path) if r.uri == meeting]
    if len(regions) != 1:
        raise DataFormatError(
            path, None, None, f"expected one region of {meeting!r}, found {len(regions)}"
        )
    return regions[0].start_s, regions[0].end_s


def _nxt_turns(
    annotations_dir: Path, meeting: str, agents: dict[str, str], merge_gap_s: float
) -> list[Turn] | None:
    files = sorted((annotations_dir / "words").glob(f"{meeting}.*.words.xml"))
    if not files:
        return None
    turns: list[Turn] = []
    for path in files:
        agent = path.name[len(meeting) + 1 : -len(".words.xml")]
        name = speaker_label(agents.get(agent, f"{meeting}_{agent}"))
        turns.extend(read_words(path, meeting, name))
    return merge_turns(turns, merge_gap_s)
