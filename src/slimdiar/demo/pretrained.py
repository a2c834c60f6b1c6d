"""The demo's self-supervised WavLM: ``slimdiar pretrain`` on the training speakers' utterances.

The paper prunes a *pre-trained* WavLM. Offline there is none, so the demo makes one at its own
size: masked prediction of k-means clusters of MFCC features (HuBERT's first iteration, with
WavLM's utterance mixing), on the clean voice-pool utterances of the demo's *training*
speakers only — never a conversation, a label, or a dev or test speaker.

The repository carries the result (``slimdiar/demo/pretrained/``: ``model.safetensors``, its
``config.json`` and ``record.json``, what it was made from and how long it took), made by
``make pretrained-demo-backbone``. The demo checks the weights' SHA-256 against the one in
``configs/demo.toml`` and that the record's settings and speakers fit its own corpus; where they
do not (``--quick``, another ``--seed``, other sizes) or with ``slimdiar demo --pretrain`` it
pretrains inside the run instead, and its report says which it was.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

from slimdiar.data.audio import audio_info
from slimdiar.errors import ConfigError
from slimdiar.fileio import write_text_atomic
from slimdiar.models.checkpoint import WEIGHTS_NAME

RECORD_NAME = "record.json"


@dataclass(frozen=True)
class PretrainSettings:
    """The demo's pretraining run (the ``pretrain_*`` keys of the demo configuration)."""

    epochs: int
    steps_per_epoch: int
    batch_size: int
    crop_s: float
    clusters: int
    lr: float
    utterances_per_speaker: int
    proj_dim: int = 128
    seed: int = 0

    def overrides(self) -> list[str]:
        """The ``--set`` overrides of ``slimdiar pretrain`` that make this run."""
        return [
            'model.backbone="wavlm-demo"',
            f"targets.num_clusters={self.clusters}",
            "targets.kmeans_passes=1",
            f"head.proj_dim={self.proj_dim}",
            f"data.crop_duration_s={self.crop_s}",
            f"data.shift_s={self.crop_s}",
            f"data.val_crop_duration_s={self.crop_s}",
            f"data.val_shift_s={self.crop_s}",
            f"optim.lr={self.lr}",
            f"trainer.max_epochs={self.epochs}",
            f"trainer.max_steps_per_epoch={self.steps_per_epoch}",
            f"trainer.batch_size={self.batch_size}",
            "trainer.num_workers=0",
            'trainer.device="cpu"',
            f"trainer.seed={self.seed}",
            "trainer.progress=false",
        ]


def bundled_dir() -> Path:
    """Where the repository's pretrained demo WavLM lies (it may be absent in a checkout)."""
    return Path(str(resources.files("slimdiar.demo") / "pretrained"))


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file, in hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def split_speakers(data: Path, split: str) -> list[str]:
    """The speakers of one simulated split (``data/split/simulation.json``)."""
    return sorted(json.loads((data / split / "simulation.json").read_text())["speakers"])


def source_scp(pool, speakers: list[str], out: Path) -> dict:
    """Write ``out/wav.scp`` of the voice-pool utterances of ``speakers``; return their sizes.

    ``pool`` is a :class:`~slimdiar.simulate.tts.TTSVoicePool` whose utterances are synthesised.
    """
    lines, seconds = [], 0.0
    for speaker in speakers:
        for utterance in pool.utterance_ids(speaker):
            path = pool.cache_path(speaker, utterance)
            lines.append(f"{speaker}-{utterance} {path.resolve()}\n")
            seconds += audio_info(path).duration_s
    if not lines:
        raise ConfigError(f"no voice-pool utterances under {pool.cache_dir} for {speakers}")
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "wav.scp", "".join(lines))
    return {"speakers": len(speakers), "utterances": len(lines), "minutes": seconds / 60}


def pretrain(
    settings: PretrainSettings, voices: Path, data: Path, exp: Path, jobs: int = 2
) -> dict:
    """Pretrain ``wavlm-demo`` on the training speakers' utterances into ``exp``.

    The speakers are those of the simulated corpus under ``data``; each says
    ``settings.utterances_per_speaker`` sentences of the voice pool (synthesised into the
    pool's cache ``voices`` where missing, usually more than the conversations use). The dev
    speakers' utterances validate it. Returns the record of the run (settings, data
    sizes, the masked-prediction loss at the start and the end, per-epoch validation, time);
    ``exp/best`` is the WavLM.
    """
    from slimdiar.config import load_config
    from slimdiar.simulate.tts import TTSVoicePool, builtin_voices
    from slimdiar.stages.pretrain import PretrainConfig
    from slimdiar.stages.pretrain import run as run_pretrain

    shutil.rmtree(exp, ignore_errors=True)
    train_speakers, dev_speakers = split_speakers(data, "train"), split_speakers(data, "dev")
    needed = set(train_speakers) | set(dev_speakers)
    pool = TTSVoicePool(
        voices,
        utterances_per_speaker=settings.utterances_per_speaker,
        voices=[spec for spec in builtin_voices() if spec.label in needed],
    )
    if pool.missing():
        pool.prepare(max(2, jobs))
    audio = {
        "train": source_scp(pool, train_speakers, exp / "audio" / "train"),
        "dev": source_scp(pool, dev_speakers, exp / "audio" / "dev"),
    }
    config = load_config(PretrainConfig, None, settings.overrides())
    start = time.perf_counter()
    result = run_pretrain(
        config, exp / "audio" / "train" / "wav.scp", exp / "audio" / "dev" / "wav.scp", exp
    )
    seconds = time.perf_counter() - start
    records = [json.loads(line) for line in (exp / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["type"] == "step"]
    epochs = [r for r in records if r["type"] == "epoch"]
    window = max(1, min(20, len(steps) // 4))
    return {
        "settings": asdict(settings),
        "overrides": settings.overrides(),
        "train_speakers": train_speakers,
        "audio": audio,
        "seconds": seconds,
        "steps": result.steps,
        "loss_window_steps": window,
        "train_masked_loss_first": sum(r["masked_loss"] for r in steps[:window]) / window,
        "train_masked_loss_last": sum(r["masked_loss"] for r in steps[-window:]) / window,
        "train_masked_accuracy_last": sum(r["masked_accuracy"] for r in steps[-window:]) / window,
        "val_masked_loss": [r["val/loss"] for r in epochs],
        "val_masked_accuracy": [r["val/masked_accuracy"] for r in epochs],
        "chance_loss": math.log(settings.clusters),
    }


def check_bundled(directory: Path, expected_sha256: str) -> dict:
    """The bundled checkpoint's record, after checking its weights' hash.

    Raises
    ------
    ConfigError
        If the checkpoint is missing or its weights do not have the expected SHA-256.
    """
    weights = directory / WEIGHTS_NAME
    if not weights.is_file() or not (directory / RECORD_NAME).is_file():
        raise ConfigError(
            f"the pretrained demo WavLM is missing under {directory}; make it with "
            "'make pretrained-demo-backbone' or run 'slimdiar demo --pretrain'"
        )
    actual = sha256_of(weights)
    if actual != expected_sha256:
        raise ConfigError(
            f"{weights} has SHA-256 {actual}, not the {expected_sha256} the demo configuration "
            "records: the file is damaged or was replaced. Restore it (git checkout), make it "
            "again with 'make pretrained-demo-backbone', or run 'slimdiar demo --pretrain'"
        )
    record = json.loads((directory / RECORD_NAME).read_text())
    return {**record, "sha256": actual}


def unusable_because(record: dict, settings: PretrainSettings, data: Path) -> str | None:
    """Why a bundled checkpoint does not fit this demo's corpus and sizes (None if it fits).

    It fits when it was made with the same pretraining settings and none of the demo's dev or
    test speakers was among its training speakers.
    """
    if record.get("settings") != asdict(settings):
        return "it was made with other pretraining settings"
    seen = set(record.get("train_speakers", []))
    held_out = {s for split in ("dev", "test") for s in split_speakers(data, split)} & seen
    if held_out:
        return (
            f"{len(held_out)} of this corpus's dev/test speakers were among its training "
            "speakers (another --seed or corpus size)"
        )
    return None
