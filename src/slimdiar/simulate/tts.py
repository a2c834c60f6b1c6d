"""The built-in offline voice pool: Debian text-to-speech engines, shifted in pitch and tempo.

A pool speaker is a :class:`VoiceSpec`: an engine (espeak-ng, flite or festival), one of its
voices, a pitch shift in cents and a tempo factor applied with sox. Which specs form the pool is
not a guess: ``tools/voice_pool.py`` synthesises candidate voices, measures how far apart they
are (:mod:`slimdiar.simulate.similarity`) and keeps only candidates clearly farther apart than a
voice is from itself; it writes the chosen list to the package data file
``slimdiar/simulate/voice-pool.json`` (:data:`POOL_FILE`), which :func:`builtin_voices` reads.

:class:`TTSVoicePool` is a :class:`~slimdiar.simulate.sources.SpeakerSource` over that list:
each speaker says its own subset of :data:`~slimdiar.simulate.sentences.SENTENCES`. Synthesised
utterances are cached on disk as 16 kHz mono 16-bit WAV files (written atomically, so parallel
runs can share a cache); :meth:`TTSVoicePool.prepare` fills the cache with parallel workers.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np

from slimdiar.errors import AudioError, ConfigError
from slimdiar.frames import SAMPLE_RATE
from slimdiar.simulate.sentences import SENTENCES
from slimdiar.simulate.sources import (
    SpeakerSource,
    Utterance,
    read_mono,
    stable_hash,
    trim_to_speech,
)

logger = logging.getLogger(__name__)

CACHE_SAMPLE_RATE = SAMPLE_RATE
CACHE_VERSION = 1
ENGINES = ("espeak-ng", "flite", "festival")
ENGINE_COMMANDS = {"espeak-ng": "espeak-ng", "flite": "flite", "festival": "festival"}
SYNTHESIS_TIMEOUT_S = 120
#: The built-in pool: package data of :mod:`slimdiar.simulate`, written by tools/voice_pool.py.
POOL_FILE = "voice-pool.json"
POOL_ABOUT = (
    "The voices of the built-in pool, chosen by tools/voice_pool.py (do not edit): measured "
    "pairwise distinct, see docs/simulate.md and docs/voice-pool.json; one pitch shift of each "
    "engine voice per round, so that the first voices of the pool are as varied as possible."
)


@dataclass(frozen=True)
class VoiceSpec:
    """One speaker of the voice pool.

    Parameters
    ----------
    engine
        ``"espeak-ng"``, ``"flite"`` or ``"festival"``.
    voice
        The engine's voice: an espeak-ng voice with variant (``"en-us+m3"``), a flite voice
        (``"slt"``) or a festival voice (``"kal_diphone"``).
    pitch_cents
        Pitch shift applied with sox, in cents (100 cents = one semitone).
    tempo
        Tempo factor applied with sox (1 keeps the speaking rate).
    """

    engine: str
    voice: str
    pitch_cents: int = 0
    tempo: float = 1.0

    @property
    def label(self) -> str:
        """Speaker label: engine, voice, pitch shift and tempo, without spaces."""
        short = {"espeak-ng": "esp", "flite": "fli", "festival": "fes"}[self.engine]
        return f"{short}-{self.voice}{self.pitch_cents:+d}c-t{round(self.tempo * 100):d}"


def engine_available(engine: str) -> bool:
    """Whether ``engine`` and sox are installed."""
    return shutil.which(ENGINE_COMMANDS[engine]) is not None and shutil.which("sox") is not None


def available_engines() -> list[str]:
    """The text-to-speech engines installed here (each also needs sox)."""
    return [engine for engine in ENGINES if engine_available(engine)]


@cache
def engine_version(engine: str) -> str:
    """The line of the engine's version output that holds its version (part of the cache key)."""
    flag = {"espeak-ng": "--version", "flite": "--version", "festival": "--version"}[engine]
    try:
        result = subprocess.run(
            [ENGINE_COMMANDS[engine], flag], capture_output=True, text=True, timeout=30, check=False
        )
    except OSError:
        return "unknown"
    lines = [line.strip() for line in (result.stdout or result.stderr).splitlines()]
    for line in lines:
        if re.search(r"\d+\.\d+", line):
            return line.split("Data at:")[0].strip()
    return "unknown"


def _run(command: list[str], what: str, stdin: str | None = None) -> None:
    try:
        result = subprocess.run(
            command,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=SYNTHESIS_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise AudioError(f"{what}: {command[0]} failed ({error})") from None
    if result.returncode != 0:
        message = (result.stderr or result.stdout).strip().splitlines()
        raise AudioError(
            f"{what}: {' '.join(command[:3])} ... exited with status {result.returncode}"
            + (f": {message[-1]}" if message else "")
        )


def _scheme_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def synthesize(spec: VoiceSpec, texts: Sequence[str], paths: Sequence[Path]) -> None:
    """Synthesise ``texts[i]`` with ``spec`` into ``paths[i]`` (16 kHz mono 16-bit WAV).

    Each file is written through a temporary file in its directory and renamed, so a reader never
    sees a partial file.

    Parameters
    ----------
    spec
        The voice.
    texts
        Sentences to say.
    paths
        Destination WAV files, one per sentence.

    Raises
    ------
    AudioError
        When the engine or sox fails.
    """
    if not engine_available(spec.engine):
        raise ConfigError(
            f"{spec.engine} or sox is not installed: apt-get install {spec.engine} sox "
            "(or run tools/setup-env.sh demo)"
        )
    with tempfile.TemporaryDirectory(prefix="slimdiar-tts-") as work:
        raw = [Path(work) / f"raw{i}.wav" for i in range(len(texts))]
        if spec.engine == "espeak-ng":
            for text, path in zip(texts, raw):
                _run(
                    ["espeak-ng", "-v", spec.voice, "-w", str(path), "--stdin"],
                    spec.label,
                    stdin=text,
                )
        elif spec.engine == "flite":
            for text, path in zip(texts, raw):
                _run(["flite", "-voice", spec.voice, "-t", text, "-o", str(path)], spec.label)
        else:
            script = Path(work) / "say.scm"
            lines = [f"(voice_{spec.voice})"]
            lines += [
                f"(utt.save.wave (utt.synth (Utterance Text {_scheme_string(text)})) "
                f"{_scheme_string(str(path))} 'riff)"
                for text, path in zip(texts, raw)
            ]
            script.write_text("\n".join(lines) + "\n", encoding="utf-8")
            _run(["festival", "--batch", str(script)], spec.label)
        for source, destination in zip(raw, paths):
            if not source.is_file() or source.stat().st_size <= 44:
                raise AudioError(f"{spec.label}: the engine wrote no audio for {destination.name}")
            destination.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(
                prefix=f".{destination.stem}.", suffix=".wav", dir=destination.parent
            )
            os.close(handle)
            effects = []
            if spec.pitch_cents:
                effects += ["pitch", str(spec.pitch_cents)]
            if spec.tempo != 1.0:
                effects += ["tempo", f"{spec.tempo:g}"]
            try:
                # -R: repeatable, -D: no dither, so the same input gives the same bytes.
                _run(
                    [
                        "sox",
                        "-R",
                        "-D",
                        str(source),
                        "-r",
                        str(CACHE_SAMPLE_RATE),
                        "-c",
                        "1",
                        "-b",
                        "16",
                        "-e",
                        "signed-integer",
                        temporary,
                        *effects,
                    ],
                    spec.label,
                )
                os.replace(temporary, destination)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise


def sentence_indices(spec: VoiceSpec, count: int) -> list[int]:
    """Which sentences of :data:`SENTENCES` the speaker says: its own seeded choice of ``count``."""
    rng = np.random.default_rng(int(stable_hash("sentences", spec.label), 16))
    return sorted(int(i) for i in rng.permutation(len(SENTENCES))[: min(count, len(SENTENCES))])


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/slimdiar/tts`` (``~/.cache/slimdiar/tts`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "slimdiar" / "tts"


def pool_json(voices: Sequence[VoiceSpec]) -> str:
    """The text of :data:`POOL_FILE` for ``voices``, in pool order (one voice per line)."""
    lines = [
        json.dumps(
            {"engine": v.engine, "voice": v.voice, "pitch_cents": v.pitch_cents, "tempo": v.tempo}
        )
        for v in voices
    ]
    return (
        '{\n "about": '
        + json.dumps(POOL_ABOUT)
        + ',\n "voices": [\n  '
        + ",\n  ".join(lines)
        + "\n ]\n}\n"
    )


@cache
def builtin_voices() -> tuple[VoiceSpec, ...]:
    """The voices of the built-in pool, in pool order, read from :data:`POOL_FILE`."""
    text = (resources.files(__package__) / POOL_FILE).read_text(encoding="utf-8")
    return tuple(VoiceSpec(**voice) for voice in json.loads(text)["voices"])


class TTSVoicePool(SpeakerSource):
    """Speakers of the built-in voice pool.

    Parameters
    ----------
    cache_dir
        Where synthesised utterances are kept (default :func:`default_cache_dir`).
    num_speakers
        Use the first this many pool speakers whose engine is installed (default: all).
    utterances_per_speaker
        Sentences each speaker says.
    sample_rate
        Sample rate in Hz of the loaded utterances (the cache holds 16 kHz audio).
    voices
        The pool (default: :func:`builtin_voices`).

    Raises
    ------
    ConfigError
        When no engine is installed or fewer speakers are available than asked for.
    """

    def __init__(
        self,
        cache_dir: str | Path | None = None,
        *,
        num_speakers: int | None = None,
        utterances_per_speaker: int = 15,
        sample_rate: int = SAMPLE_RATE,
        voices: Sequence[VoiceSpec] | None = None,
    ):
        super().__init__(sample_rate)
        if voices is None:
            voices = builtin_voices()
        installed = set(available_engines())
        usable = [spec for spec in voices if spec.engine in installed]
        if not usable:
            raise ConfigError(
                "no text-to-speech engine of the voice pool is installed (need sox and one of "
                f"{', '.join(ENGINES)}): run tools/setup-env.sh demo or apt-get install "
                "espeak-ng sox"
            )
        if len(usable) < len(voices):
            missing = sorted({spec.engine for spec in voices} - installed)
            logger.warning(
                "%d pool voices need %s, which is not installed; using %d",
                len(voices) - len(usable),
                ", ".join(missing),
                len(usable),
            )
        if num_speakers is not None:
            if num_speakers > len(usable):
                raise ConfigError(
                    f"asked for {num_speakers} pool speakers but only {len(usable)} are "
                    f"available with the installed engines ({', '.join(sorted(installed))})"
                )
            usable = usable[:num_speakers]
        if not 1 <= utterances_per_speaker <= len(SENTENCES):
            raise ConfigError(
                f"utterances_per_speaker must be in 1..{len(SENTENCES)}, "
                f"got {utterances_per_speaker}"
            )
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.utterances_per_speaker = utterances_per_speaker
        self._specs = {spec.label: spec for spec in usable}

    def speakers(self) -> list[str]:
        """Labels of the usable voices, sorted."""
        return sorted(self._specs)

    def spec(self, speaker: str) -> VoiceSpec:
        """The voice of ``speaker``."""
        return self._specs[speaker]

    def utterance_ids(self, speaker: str) -> list[str]:
        """Identifiers ``s<index>`` of the sentences that ``speaker`` says."""
        spec = self._specs[speaker]
        return [f"s{index:03d}" for index in sentence_indices(spec, self.utterances_per_speaker)]

    def cache_path(self, speaker: str, utterance_id: str) -> Path:
        """Cache file of one utterance (keyed by voice, engine version and sentence)."""
        spec = self._specs[speaker]
        index = int(utterance_id[1:])
        key = stable_hash(CACHE_VERSION, spec, engine_version(spec.engine), SENTENCES[index])
        return self.cache_dir / spec.label / f"{utterance_id}-{key}.wav"

    def missing(self) -> list[tuple[str, str]]:
        """``(speaker, utterance_id)`` of the utterances not in the cache yet."""
        return [
            (speaker, utterance)
            for speaker in self.speakers()
            for utterance in self.utterance_ids(speaker)
            if not self.cache_path(speaker, utterance).is_file()
        ]

    def prepare(self, num_workers: int = 2, progress: Callable[[str], None] | None = None) -> int:
        """Synthesise every utterance that is not cached yet.

        Parameters
        ----------
        num_workers
            Speakers synthesised at the same time (engines run as subprocesses).
        progress
            Called with the speaker label after each speaker is done.

        Returns
        -------
        int
            Number of utterances synthesised.
        """
        todo: dict[str, list[str]] = {}
        for speaker, utterance in self.missing():
            todo.setdefault(speaker, []).append(utterance)

        def run(speaker: str) -> str:
            self._synthesize(speaker, todo[speaker])
            return speaker

        if todo:
            logger.info(
                "synthesising %d utterances of %d speakers into %s",
                sum(len(v) for v in todo.values()),
                len(todo),
                self.cache_dir,
            )
        with ThreadPoolExecutor(max(1, num_workers)) as pool:
            for speaker in pool.map(run, sorted(todo)):
                if progress is not None:
                    progress(speaker)
        return sum(len(v) for v in todo.values())

    def _synthesize(self, speaker: str, utterance_ids: Sequence[str]) -> None:
        spec = self._specs[speaker]
        texts = [SENTENCES[int(u[1:])] for u in utterance_ids]
        synthesize(spec, texts, [self.cache_path(speaker, u) for u in utterance_ids])

    def load(self, speaker: str, utterance_id: str) -> Utterance | None:
        """Read one utterance from the cache (synthesising it first if needed), trimmed to speech.

        ``None`` when it holds no speech.
        """
        path = self.cache_path(speaker, utterance_id)
        if not path.is_file():
            self._synthesize(speaker, [utterance_id])
        audio = read_mono(path, self.sample_rate)
        return trim_to_speech(speaker, utterance_id, audio, self.sample_rate)

    def describe(self) -> str:
        """One line with the number of voices and of utterances per voice."""
        return (
            f"built-in voice pool ({len(self._specs)} speakers, "
            f"{self.utterances_per_speaker} utterances each)"
        )
