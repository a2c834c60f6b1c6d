"""Small, deterministic data and models for tests of code built on slimdiar.

Everything here is offline, seeded and quick on a CPU; slimdiar's own tests use it, and so may
yours (``tests/conftest.py`` of this project exposes some of it as pytest fixtures).

- **Tone speakers**: each speaker is a pure tone of its own pitch, silence is faint noise.
  :func:`tone_waveform` renders turns, :func:`write_tone_datadir` writes a data directory of
  random overlapping tone conversations (``wav.scp``, ``rttm``, ``uem``),
  :func:`write_tone_train_dev` a training and a development one, and :class:`ToneEmbedding` is a
  speaker embedding that tells tones apart (band energies), for the pipeline without a trained
  embedding model.
- **Fake corpus releases**: the directory layouts of AMI, AISHELL-4 and AliMeeting with a few
  seconds of random audio (:func:`make_ami_release`, :func:`make_aishell4_release`,
  :func:`make_alimeeting_release`), for ``slimdiar prepare`` and the recipes.
- **Tiny models**: random-init models of the real classes, small enough for a unit test
  (:func:`tiny_eend`, :func:`tiny_ge2e`, :func:`tiny_resnet`), and a tiny teacher fine-tuned on
  tone speakers (:func:`finetune_tiny_teacher`) with the prune setting that brings it to a
  target sparsity on a CPU (:data:`TONE_PRUNE_SETTING`).

Examples
--------
>>> from slimdiar.testing import tone_waveform, ToneEmbedding
>>> waveform = tone_waveform([(0.5, 2.0, "alice"), (2.5, 4.0, "bob")], duration_s=4.5)
>>> waveform.shape
(72000,)
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import soundfile
import torch

from slimdiar.data.formats import write_rttm, write_uem, write_wav_scp
from slimdiar.data.records import Recording, Turn, UEMRegion
from slimdiar.frames import SAMPLE_RATE
from slimdiar.models.eend import EEND, EENDConfig
from slimdiar.models.embeddings.fbank import FbankConfig, wespeaker_fbank
from slimdiar.models.embeddings.ge2e import GE2EConfig, GE2EEmbedding
from slimdiar.models.embeddings.resnet import ResNetConfig, ResNetEmbedding
from slimdiar.models.wavlm.config import WavLMConfig, wavlm_tiny

__all__ = [
    "DATADIR_PITCHES_HZ",
    "TONE_PRUNE_GATE_BOUND",
    "TONE_PRUNE_SETTING",
    "TONE_PRUNE_WARMUP_EPOCHS",
    "TONES_HZ",
    "ToneEmbedding",
    "ami_words_xml",
    "finetune_tiny_teacher",
    "make_aishell4_release",
    "make_alimeeting_release",
    "make_ami_release",
    "praat_textgrid",
    "tiny_eend",
    "tiny_ge2e",
    "tiny_resnet",
    "tiny_resnet_config",
    "tone_waveform",
    "write_pcm_audio",
    "write_tone_datadir",
    "write_tone_train_dev",
]

#: Pitches of the speakers of :func:`tone_waveform` (Hz).
TONES_HZ = {"alice": 350.0, "bob": 1250.0, "carol": 2900.0}
#: Pitches of the speakers of :func:`write_tone_datadir` (Hz).
DATADIR_PITCHES_HZ = {"alice": 220.0, "bob": 520.0, "carol": 1100.0}


# ---------------------------------------------------------------------- tone speakers
def tone_waveform(
    turns: Iterable[tuple[float, float, str]],
    duration_s: float,
    frequencies_hz: Mapping[str, float] = TONES_HZ,
    seed: int = 0,
    amplitude: float = 0.3,
    noise: float = 0.001,
) -> np.ndarray:
    """A recording where each speaker is a pure tone and silence is faint Gaussian noise.

    Parameters
    ----------
    turns
        ``(onset_s, offset_s, speaker)`` triples; a speaker sounds on ``[onset_s, offset_s)``.
    duration_s
        Length of the recording in seconds.
    frequencies_hz
        Pitch of each speaker.
    seed
        Seed of the noise.
    amplitude, noise
        Amplitude of each tone and standard deviation of the noise.

    Returns
    -------
    numpy.ndarray
        ``(int(duration_s * SAMPLE_RATE),)`` float32 at :data:`~slimdiar.frames.SAMPLE_RATE`.
    """
    rng = np.random.default_rng(seed)
    time_s = np.arange(int(duration_s * SAMPLE_RATE)) / SAMPLE_RATE
    waveform = noise * rng.normal(size=len(time_s))
    for onset_s, offset_s, speaker in turns:
        inside = (time_s >= onset_s) & (time_s < offset_s)
        waveform[inside] += amplitude * np.sin(2 * np.pi * frequencies_hz[speaker] * time_s[inside])
    return waveform.astype(np.float32)


def write_tone_datadir(
    root: str | Path, seed: int = 0, num_recordings: int = 2, duration_s: float = 10.0
) -> Path:
    """A data directory of tone conversations with random, sometimes overlapping, turns.

    Three speakers (:data:`DATADIR_PITCHES_HZ`) take turns of 1.5 to 3 s, each after another
    speaker, with gaps of up to 0.4 s or overlaps of up to 0.6 s; the UEM covers each recording.

    Parameters
    ----------
    root
        Directory to write (created); gets ``rec0.wav ...``, ``wav.scp``, ``rttm`` and ``uem``.
    seed
        Seed of the turns and the noise.
    num_recordings
        Number of recordings.
    duration_s
        Length of each recording in seconds.

    Returns
    -------
    pathlib.Path
        ``root``.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    recordings, turns, regions = [], [], []
    for r in range(num_recordings):
        uri = f"rec{r}"
        t = np.arange(int(duration_s * SAMPLE_RATE)) / SAMPLE_RATE
        audio = 0.01 * rng.standard_normal(len(t))
        onset_s, previous = 0.2, None
        while onset_s < duration_s - 0.5:
            speaker = str(rng.choice([s for s in DATADIR_PITCHES_HZ if s != previous]))
            offset_s = min(onset_s + rng.uniform(1.5, 3.0), duration_s)
            active = (t >= onset_s) & (t < offset_s)
            audio[active] += 0.3 * np.sin(2 * np.pi * DATADIR_PITCHES_HZ[speaker] * t[active])
            turns.append(Turn(uri, round(onset_s, 3), round(offset_s - onset_s, 3), speaker))
            previous = speaker
            onset_s = offset_s + rng.uniform(-0.6, 0.4)  # negative: overlapping turns
        soundfile.write(root / f"{uri}.wav", audio.astype(np.float32), SAMPLE_RATE)
        recordings.append(Recording(uri, root / f"{uri}.wav"))
        regions.append(UEMRegion(uri, 0.0, duration_s))
    write_wav_scp(root / "wav.scp", recordings)
    write_rttm(root / "rttm", turns)
    write_uem(root / "uem", regions)
    return root


def write_tone_train_dev(root: str | Path) -> tuple[Path, Path]:
    """``root/train`` (2 recordings of 12 s) and ``root/dev`` (1 of 6 s) of tone speakers."""
    root = Path(root)
    return (
        write_tone_datadir(root / "train", seed=0, num_recordings=2, duration_s=12.0),
        write_tone_datadir(root / "dev", seed=1, num_recordings=1, duration_s=6.0),
    )


class ToneEmbedding:
    """A speaker embedding for tone speakers: band energies of the selected samples.

    It has the interface of the pipeline's embedding models and counts its calls.

    Parameters
    ----------
    dimension
        Number of bands (the embedding size).
    fft_size
        FFT length of the spectrum whose magnitudes are summed per band.
    name
        Name recorded in pipeline results.
    """

    sample_rate = SAMPLE_RATE
    min_num_samples = 400

    def __init__(self, dimension: int = 32, fft_size: int = 4096, name: str = "tone-bands"):
        self.dimension = int(dimension)
        self.fft_size = int(fft_size)
        self.name = name
        self.num_calls = 0

    def __call__(self, waveforms: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """``(batch, dimension)`` unit-norm embeddings of the samples whose weight is > 0.5.

        Parameters
        ----------
        waveforms
            ``(batch, num_samples)`` audio.
        weights
            ``(batch, num_frames)`` frame weights, spread evenly over the samples.
        """
        self.num_calls += 1
        keep = np.repeat(weights, int(np.ceil(waveforms.shape[1] / weights.shape[1])), axis=1)
        keep = keep[:, : waveforms.shape[1]] > 0.5
        rows = []
        for waveform, mask in zip(waveforms, keep):
            spectrum = np.abs(np.fft.rfft(waveform[mask], n=self.fft_size))
            bands = np.array([b.sum() for b in np.array_split(spectrum, self.dimension)])
            rows.append(bands / max(np.linalg.norm(bands), 1e-12))
        return np.stack(rows)


# ---------------------------------------------------------------------- tiny models
def tone_sequence(duration_s: float, rng: np.random.Generator) -> np.ndarray:
    """Audio with structure to learn: runs of harmonic tones from a small set, and pauses."""
    out: list[np.ndarray] = []
    while sum(len(x) for x in out) < duration_s * SAMPLE_RATE:
        length = int(rng.uniform(0.08, 0.3) * SAMPLE_RATE)
        t = np.arange(length) / SAMPLE_RATE
        f0 = rng.choice([0.0, 140.0, 220.0, 330.0, 500.0])
        if f0 == 0:
            segment = 0.003 * rng.standard_normal(length)
        else:
            segment = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in (1, 2, 3)) * 0.2
        out.append(segment)
    return np.concatenate(out)[: int(duration_s * SAMPLE_RATE)].astype(np.float32)


def write_tone_sequence_tree(
    root: str | Path, num_files: int, duration_s: float, seed: int
) -> Path:
    """A tree of :func:`tone_sequence` files (``spk0/utt0.wav``, ...): audio to pretrain on."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for i in range(num_files):
        sub = root / f"spk{i % 2}"
        sub.mkdir(parents=True, exist_ok=True)
        soundfile.write(sub / f"utt{i}.wav", tone_sequence(duration_s, rng), SAMPLE_RATE)
    return root


def tiny_eend(seed: int = 0) -> EEND:
    """A random-init diarization model: ``wavlm-tiny`` and one 32-wide Conformer block (eval)."""
    torch.manual_seed(seed)
    config = EENDConfig(wavlm=wavlm_tiny(), d_model=32, num_heads=2, ffn_dim=64, num_blocks=1)
    return EEND(config).eval()


def pruned_tiny_wavlm_config() -> WavLMConfig:
    """A ``wavlm-tiny`` shape as pruning leaves it.

    Per-layer head lists, one FFN narrowed and one removed, and narrower conv layers.
    """
    return wavlm_tiny().replace(
        remaining_heads=[[0, 2], [1, 2, 3]],
        ffn_dim=[40, 0],
        use_ffn=[True, False],
        conv_layers=[
            (24, 10, 5),
            (32, 3, 2),
            (16, 3, 2),
            (32, 3, 2),
            (32, 3, 2),
            (8, 2, 2),
            (32, 2, 2),
        ],
    )


def tiny_ge2e(seed: int = 0) -> GE2EEmbedding:
    """A random-init GE2E speaker embedding (2 LSTM layers of 8, 6-dimensional; eval)."""
    torch.manual_seed(seed)
    return GE2EEmbedding(GE2EConfig(hidden_size=8, num_layers=2, embedding_dim=6)).eval()


def tiny_resnet_config() -> ResNetConfig:
    """A WeSpeaker ResNet of 4 base channels on 16 mel bins, 8-dimensional embeddings."""
    fbank = FbankConfig(**{**wespeaker_fbank().__dict__, "num_mel_bins": 16})
    return ResNetConfig(num_blocks=[1, 2, 1, 1], base_channels=4, embedding_dim=8, fbank=fbank)


def tiny_resnet(seed: int = 0) -> ResNetEmbedding:
    """A random-init :func:`tiny_resnet_config` ResNet with random batch-norm statistics (eval)."""
    torch.manual_seed(seed)
    model = ResNetEmbedding(tiny_resnet_config())
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("running_var"):
                tensor.uniform_(0.5, 2.0)
            elif name.endswith("running_mean") or name.endswith("bn1.bias"):
                tensor.normal_(0.0, 0.1)
    return model.eval()


# ---------------------------------------------------------------------- a tiny teacher
def finetune_tiny_teacher(
    train: str | Path, dev: str | Path, out: str | Path, config: str | Path = "tiny"
) -> Path:
    """Fine-tune a tiny diarization model on tone data with ``slimdiar finetune``; its ``best/``.

    The WavLM is ``wavlm-mini`` (random init, Base+'s proportions: fine-grained enough for a
    sparsity target of 0.9), trained for 30 epochs in a fresh process.

    Parameters
    ----------
    train, dev
        Data directories (e.g. from :func:`write_tone_train_dev`).
    out
        Experiment directory to write.
    config
        The fine-tuning config of the head and the data: a file or a bundled name (``tiny``).

    Raises
    ------
    RuntimeError
        If the fine-tuning fails (with the end of its error output).
    """
    import slimdiar

    source = str(Path(slimdiar.__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH")) if p)
    command = [
        sys.executable,
        "-m",
        "slimdiar",
        "finetune",
        "--config",
        str(config),
        "--backbone",
        "wavlm-mini",
        "--train",
        str(train),
        "--dev",
        str(dev),
        "--out",
        str(out),
        "--set",
        'model.frontend="wavlm"',
        "--set",
        "trainer.max_epochs=30",
        "--set",
        "trainer.progress=false",
        "--set",
        "trainer.average_best=1",
    ]
    run = subprocess.run(
        command, env={**os.environ, "PYTHONPATH": path}, capture_output=True, text=True
    )
    if run.returncode != 0:
        raise RuntimeError(f"fine-tuning the teacher in {out} failed:\n{run.stderr[-3000:]}")
    return Path(out) / "best"


# One setting for every target: 0.5 s chunks, epochs of 29 steps (half the data: twice as many
# checkpoints to choose from), the target reaches its final value after 10 epochs and 30 more let
# the multipliers settle; learning rates above the method's because a CPU test has ~1200 steps
# where a real run has tens of thousands. With so few steps the multipliers swing the sparsity
# around the target, so this setting bounds the gates' open probabilities, takes the one
# on-target checkpoint as the final model and never stops early (not the reference's defaults:
# no bound, the average of 5 epochs from the loss peak on, patience 5).
#: Epochs over which the target sparsity of :data:`TONE_PRUNE_SETTING` rises.
TONE_PRUNE_WARMUP_EPOCHS = 10
#: Bound on the gates' open probabilities in :data:`TONE_PRUNE_SETTING`.
TONE_PRUNE_GATE_BOUND = 0.001
#: ``slimdiar prune`` options that bring :func:`finetune_tiny_teacher` to its target on a CPU.
TONE_PRUNE_SETTING = [
    "--set",
    "data.chunk_duration_s=0.5",
    "--set",
    "data.shift_s=0.1",
    "--set",
    "data.val_chunk_duration_s=2.0",
    "--set",
    "data.val_shift_s=2.0",
    "--set",
    "trainer.num_workers=0",
    "--set",
    "trainer.progress=false",
    "--set",
    "trainer.batch_size=4",
    "--set",
    "trainer.max_epochs=40",
    "--set",
    "trainer.max_steps_per_epoch=29",
    "--set",
    f"prune.warmup_epochs={TONE_PRUNE_WARMUP_EPOCHS}",
    "--set",
    "optim.lr_gates=0.05",
    "--set",
    "optim.lr_lambda=0.2",
    "--set",
    f"prune.gate_bound={TONE_PRUNE_GATE_BOUND}",
    "--set",
    'prune.final_model="on-target"',
    "--set",
    "trainer.patience=0",
]


# ---------------------------------------------------------------------- fake corpus releases
def write_pcm_audio(
    path: str | Path, duration_s: float, channels: int, seed: int = 0
) -> np.ndarray:
    """Write random 16-bit audio at :data:`~slimdiar.frames.SAMPLE_RATE` to ``path``.

    Parent directories are created; returns the ``(samples, channels)`` int16 array written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    data = rng.integers(-20000, 20000, size=(int(duration_s * SAMPLE_RATE), channels))
    data = data.astype(np.int16)
    soundfile.write(path, data, SAMPLE_RATE, subtype="PCM_16")
    return data


def praat_textgrid(xmax: float, tiers: Mapping[str, list[tuple[float, float, str]]]) -> str:
    """A TextGrid in Praat's long text format; gaps between intervals get empty intervals.

    Parameters
    ----------
    xmax
        End of the TextGrid in seconds.
    tiers
        Interval tiers by name, each a list of ``(start_s, end_s, text)``.
    """
    lines = [
        'File type = "ooTextFile"',
        'Object class = "TextGrid"',
        "",
        "xmin = 0 ",
        f"xmax = {xmax} ",
        "tiers? <exists> ",
        f"size = {len(tiers)} ",
        "item []: ",
    ]
    for number, (name, intervals) in enumerate(tiers.items(), start=1):
        filled, cursor = [], 0.0
        for start, end, text in intervals:
            if start > cursor:
                filled.append((cursor, start, ""))
            filled.append((start, end, text))
            cursor = end
        if cursor < xmax:
            filled.append((cursor, xmax, ""))
        lines += [
            f"    item [{number}]:",
            '        class = "IntervalTier" ',
            f'        name = "{name}" ',
            "        xmin = 0 ",
            f"        xmax = {xmax} ",
            f"        intervals: size = {len(filled)} ",
        ]
        for index, (start, end, text) in enumerate(filled, start=1):
            text = text.replace('"', '""')
            lines += [
                f"        intervals [{index}]:",
                f"            xmin = {start} ",
                f"            xmax = {end} ",
                f'            text = "{text}" ',
            ]
    return "\n".join(lines) + "\n"


def make_aishell4_release(root: str | Path) -> dict[str, np.ndarray]:
    """An AISHELL-4 release: 5 sessions of 3 s of 8-channel FLAC with TextGrids.

    Four training sessions in ``train_L``, ``train_M`` and ``train_S`` (the last nested as some
    extractions leave it: ``train_S/train_S/wav``) and one test session; each has four speakers,
    a non-speech mark per tier of two of them and a turn past the end of the audio.

    Returns
    -------
    dict
        The ``(samples, 8)`` int16 audio of each session, by session name.
    """
    root = Path(root)
    sessions = {
        "train_L": ["20200707_L_R001S01C01", "20200708_L_R002S01C01"],
        "train_M": ["20200710_M_R001S01C01"],
        "train_S": ["20200711_S_R001S01C01"],
        "test": ["L_R003S01C02"],
    }
    audio = {}
    for seed, (part, names) in enumerate(sessions.items()):
        part_dir = root / part / part if part == "train_S" else root / part
        for index, name in enumerate(names):
            data = write_pcm_audio(part_dir / "wav" / f"{name}.wav", 3.0, 8, seed=seed + index)
            (part_dir / "wav" / f"{name}.wav").rename(part_dir / "wav" / f"{name}.flac")
            soundfile.write(
                part_dir / "wav" / f"{name}.flac",
                data,
                SAMPLE_RATE,
                format="FLAC",
                subtype="PCM_16",
            )
            audio[name] = data
            # "<%>" and "<$>" are the corpus's non-speech marks.
            tiers = {
                "001": [(0.5, 1.0, "甲"), (1.0, 1.5, "乙"), (2.0, 2.2, "<%>")],
                "002": [(1.25, 2.0, "丙")],
                "003": [(2.5, 3.2, "丁")],
                "004": [(0.1, 0.4, " <$> ")],
            }
            path = part_dir / "TextGrid" / f"{name}.TextGrid"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(praat_textgrid(3.2, tiers), encoding="utf-8")
    return audio


def make_alimeeting_release(root: str | Path) -> None:
    """An AliMeeting release: far-field 8-channel sessions of 2 s in Train, Eval and Test."""
    root = Path(root)
    layout = {
        "Train_Ali_far": ["R0003_M0046", "R0015_M0151"],
        "Eval_Ali/Eval_Ali_far": ["R8001_M8004"],
        "Test_Ali/Test_Ali_far": ["R8003_M8001"],
    }
    for part, sessions in layout.items():
        for index, session in enumerate(sessions):
            write_pcm_audio(root / part / "audio_dir" / f"{session}_MS{801 + index}.wav", 2.0, 8)
            tiers = {
                f"{session}_F_SPK0093": [(0.1, 0.9, "好")],
                "M_SPK0094": [(0.5, 1.2, "对"), (1.5, 1.9, "嗯")],
            }
            path = root / part / "textgrid_dir" / f"{session}.TextGrid"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(praat_textgrid(2.0, tiers), encoding="utf-8")


AMI_MEETINGS_XML = """<?xml version="1.0" encoding="ISO-8859-1"?>
<nite:root xmlns:nite="http://nite.sourceforge.net/">
  <meeting observation="ES2002a" type="scenario">
    <speaker nxt_agent="A" global_name="FEE005" channel="1"/>
    <speaker nxt_agent="B" global_name="MEE006" channel="0"/>
  </meeting>
  <meeting observation="ES2004a" type="scenario">
    <speaker nxt_agent="A" global_name="FEE013" channel="0"/>
  </meeting>
</nite:root>
"""


def ami_words_xml(meeting: str, agent: str, words: list[str]) -> str:
    """An AMI NXT ``words.xml`` file of one speaker holding the given XML elements."""
    body = "\n".join(f"  {w}" for w in words)
    return (
        f'<?xml version="1.0" encoding="ISO-8859-1"?>\n<nite:root nite:id="{meeting}.'
        f'{agent}.words" xmlns:nite="http://nite.sourceforge.net/">\n{body}\n</nite:root>\n'
    )


def make_ami_release(root: str | Path) -> Path:
    """An AMI release: two meetings of 5 s (``Array1-01``) with NXT word annotations.

    ES2002a has speakers A (words, a vocal sound, an untimed word, a word past the audio's end)
    and B (one word and a gap); ES2004a has one word of speaker A.

    Returns
    -------
    pathlib.Path
        The annotations directory (``root/annotations``).
    """
    root = Path(root)
    for meeting in ("ES2002a", "ES2004a"):
        write_pcm_audio(root / "amicorpus" / meeting / "audio" / f"{meeting}.Array1-01.wav", 5.0, 1)
    annotations = root / "annotations"
    (annotations / "corpusResources").mkdir(parents=True)
    (annotations / "corpusResources" / "meetings.xml").write_text(AMI_MEETINGS_XML)
    (annotations / "words").mkdir()
    (annotations / "words" / "ES2002a.A.words.xml").write_text(
        ami_words_xml(
            "ES2002a",
            "A",
            [
                '<w nite:id="a0" starttime="0.50" endtime="0.80">Okay</w>',
                '<w nite:id="a1" starttime="0.80" endtime="0.80" punc="true">.</w>',
                '<w nite:id="a2" starttime="0.80" endtime="1.10">so</w>',
                '<vocalsound nite:id="a3" starttime="1.10" endtime="1.60" type="laugh"/>',
                '<w nite:id="a4" starttime="1.70" endtime="2.00">right</w>',
                '<w nite:id="a5">untimed</w>',
                '<disfmarker nite:id="a6" starttime="2.00" endtime="2.00"/>',
                '<w nite:id="a7" starttime="4.90" endtime="5.40">late</w>',
            ],
        )
    )
    (annotations / "words" / "ES2002a.B.words.xml").write_text(
        ami_words_xml(
            "ES2002a",
            "B",
            [
                '<w nite:id="b0" starttime="1.00" endtime="1.50">yeah</w>',
                '<gap nite:id="b1" starttime="1.50" endtime="2.50"/>',
            ],
        )
    )
    (annotations / "words" / "ES2004a.A.words.xml").write_text(
        ami_words_xml(
            "ES2004a",
            "A",
            [
                '<w nite:id="c0" starttime="0.25" endtime="0.75">hello</w>',
            ],
        )
    )
    return annotations
