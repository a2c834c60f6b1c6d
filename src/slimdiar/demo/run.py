"""The embedded demo: the whole method, offline, on a CPU.

With no network, no pretrained weights and no corpus, it runs every stage of the method on
simulated conversations and reports, in the shape of the paper's table, what it measured::

    1 simulate   a small corpus of simulated conversations (TTS voices, disjoint speakers)
    2 finetune   a small WavLM-architecture EEND model, from random initialisation
    3 prune      80 % of its WavLM removed, with distillation from the fine-tuned model
    4 distill    further distillation of the pruned WavLM
    5 finetune   diarization training of the pruned WavLM with a fresh head
    6 diarize    the held-out test set with both models, and score it (DER)
    7 bench      size, MACs and CPU speed of both backbones

Every stage writes under ``out`` and is skipped when its result is already there, so an
interrupted demo continues where it stopped.
"""

from __future__ import annotations

import json
import logging
import shlex
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from slimdiar.config import bundled_config, load_config
from slimdiar.demo.report import NO_PRETRAINING, build_report, render_report
from slimdiar.errors import ConfigError
from slimdiar.fileio import write_json_atomic, write_text_atomic
from slimdiar.models.checkpoint import is_checkpoint_dir

logger = logging.getLogger(__name__)


@dataclass
class DemoSettings:
    """Sizes of one demo run (``quick`` for a smoke test of a few minutes at most).

    Each run's values are a bundled configuration (:func:`demo_settings`); the defaults here are
    those both runs share.
    """

    splits: dict[str, int]
    duration_s: float
    tts_speakers: int
    utterances_per_speaker: int
    chunk_duration_s: float
    shift_s: float
    finetune_epochs: int
    prune_epochs: int
    prune_warmup_epochs: float
    distill_epochs: int
    finetune_pruned_epochs: int
    batch_size: int
    max_steps_per_epoch: int
    sparsity: float = 0.8
    backbone: str = "wavlm-demo"
    lr_backbone: float = 1e-3
    lr_head: float = 2e-3
    lr_gates: float = 0.1
    lr_lambda: float = 0.1
    distill_chunk_duration_s: float = 1.0
    distill_shift_s: float = 0.5
    bench_seconds: float = 8.0
    pipeline_step_s: float = 0.4
    thresholds: tuple[float, ...] = (0.4, 0.45, 0.5)
    head: dict = field(
        default_factory=lambda: {
            "d_model": 128,
            "num_heads": 4,
            "ffn_dim": 256,
            "conv_kernel": 15,
            "num_blocks": 2,
            "dropout": 0.1,
        }
    )


def demo_settings(quick: bool = False) -> DemoSettings:
    """The sizes of the full demo or, with ``quick``, of ``slimdiar demo --quick``.

    They are the bundled configurations ``configs/demo.toml`` and ``configs/demo-quick.toml``.
    """
    return load_config(DemoSettings, bundled_config("demo-quick" if quick else "demo"))


class Demo:
    """One demo run writing under ``out``.

    Parameters
    ----------
    out
        Output directory of every artifact.
    quick
        Smoke-test sizes (a few minutes) instead of the full demo (about twenty).
    seed
        Seed of the simulation and of every training stage.
    jobs
        Worker processes for speech synthesis and simulation.
    say
        Called with one line of progress text per event.
    """

    def __init__(
        self,
        out: str | Path,
        quick: bool = False,
        seed: int = 0,
        jobs: int = 2,
        say: Callable[[str], None] = print,
    ):
        self.out = Path(out)
        self.quick = quick
        self.settings = demo_settings(quick)
        self.seed = seed
        self.jobs = jobs
        self.say = say
        self.timings: dict[str, float] = {}

    # ------------------------------------------------------------------ paths
    @property
    def data(self) -> Path:
        """The simulated corpus's data directories."""
        return self.out / "data"

    def _stage(self, name: str, done: bool, run: Callable[[], None]) -> None:
        if done:
            self.say(f"[{name}] already done, skipped (delete it under {self.out} to redo)")
            return
        self.say(f"[{name}] ...")
        start = time.perf_counter()
        run()
        self.timings[name] = time.perf_counter() - start
        self.say(f"[{name}] done in {self.timings[name]:.0f} s")

    # ------------------------------------------------------------------ stages
    def simulate(self) -> None:
        """Stage: simulate the train/dev/test meetings from the built-in voices."""
        from slimdiar.simulate import SimulationConfig, simulate_data_dirs
        from slimdiar.simulate.tts import TTSVoicePool

        s = self.settings
        pool = TTSVoicePool(
            self.out / "voices",
            num_speakers=s.tts_speakers or None,
            utterances_per_speaker=s.utterances_per_speaker,
        )
        missing = pool.missing()
        if missing:
            self.say(f"  synthesising {len(missing)} utterances with the offline voice pool")
            pool.prepare(max(2, self.jobs))
        config = SimulationConfig(duration_s=s.duration_s, min_speakers=2, max_speakers=3)
        report = simulate_data_dirs(
            pool, self.data, config, s.splits, seed=self.seed, num_workers=self.jobs, overwrite=True
        )
        for split in report.splits:
            self.say(
                f"  {split.path.name}: {split.num_recordings} recordings, "
                f"{split.duration_s / 60:.1f} min, {len(split.speakers)} speakers"
            )

    def _finetune_config(self, epochs: int):
        from slimdiar.stages.common import DataSection
        from slimdiar.stages.finetune import FinetuneConfig, ModelSection, OptimSection
        from slimdiar.train.trainer import TrainerConfig

        s = self.settings
        return FinetuneConfig(
            model=ModelSection(backbone=s.backbone, frontend="wavlm", **s.head),
            data=DataSection(
                chunk_duration_s=s.chunk_duration_s,
                shift_s=s.shift_s,
                val_chunk_duration_s=s.chunk_duration_s,
                val_shift_s=s.chunk_duration_s,
            ),
            optim=OptimSection(lr_backbone=s.lr_backbone, lr_head=s.lr_head, weight_decay=0.0),
            trainer=self._trainer(TrainerConfig, epochs, patience=0, average_best=3),
        )

    def _trainer(self, cls, epochs: int, **overrides):
        s = self.settings
        return cls(
            max_epochs=epochs,
            batch_size=s.batch_size,
            seed=3407 + self.seed,
            num_workers=0,
            device="cpu",
            max_steps_per_epoch=s.max_steps_per_epoch,
            **overrides,
        )

    def finetune(self, name: str, epochs: int, backbone: str | None) -> None:
        """Stage 0 or 3: fine-tune a diarization model into ``out/name``."""
        from slimdiar.stages.finetune import run as finetune

        exp = self.out / name
        shutil.rmtree(exp, ignore_errors=True)
        finetune(
            self._finetune_config(epochs),
            self.data / "train",
            self.data / "dev",
            exp,
            backbone=backbone,
        )

    def _distill_data(self):
        """Short chunks for distillation (no labels): more optimiser steps for the same audio."""
        from slimdiar.stages.common import DataSection

        s = self.settings
        return DataSection(
            chunk_duration_s=s.distill_chunk_duration_s,
            shift_s=s.distill_shift_s,
            val_chunk_duration_s=s.chunk_duration_s,
            val_shift_s=s.chunk_duration_s,
        )

    def prune(self) -> None:
        """Stage 1: prune the fine-tuned WavLM to the demo's sparsity into ``out/prune``."""
        from slimdiar.stages.common import DistillOptimSection
        from slimdiar.stages.prune import PruneConfig, PruneSection, PruneTrainerConfig
        from slimdiar.stages.prune import run as prune

        s = self.settings
        exp = self.out / "prune"
        shutil.rmtree(exp, ignore_errors=True)
        config = PruneConfig(
            prune=PruneSection(sparsity=s.sparsity, warmup_epochs=s.prune_warmup_epochs),
            data=self._distill_data(),
            optim=DistillOptimSection(lr_gates=s.lr_gates, lr_lambda=s.lr_lambda),
            trainer=self._trainer(PruneTrainerConfig, s.prune_epochs),
        )
        prune(config, self.out / "finetune" / "best", self.data / "train", self.data / "dev", exp)
        report = json.loads((exp / "report.json").read_text())
        self.say(
            f"  {report['teacher']['params'] / 1e6:.3f}M -> "
            f"{report['student']['params'] / 1e6:.3f}M WavLM parameters "
            f"(sparsity {report['reached_sparsity']:.3f}, target {s.sparsity})"
        )

    def distill(self) -> None:
        """Stage 2: distil the fine-tuned model into the pruned student, into ``out/distill``."""
        from slimdiar.stages.distill import DistillConfig, DistillTrainerConfig
        from slimdiar.stages.distill import run as distill

        s = self.settings
        exp = self.out / "distill"
        shutil.rmtree(exp, ignore_errors=True)
        config = DistillConfig(
            data=self._distill_data(),
            trainer=self._trainer(DistillTrainerConfig, s.distill_epochs, average_best=1),
        )
        distill(
            config,
            self.out / "prune" / "pruned",
            self.out / "finetune" / "best",
            self.data / "train",
            self.data / "dev",
            exp,
        )

    def pipeline_settings(self, threshold: float | None = None) -> dict:
        """The demo's pipeline settings (windows, and the clustering threshold if given)."""
        settings: dict = {
            "windows": {
                "duration_s": self.settings.chunk_duration_s,
                "step_s": self.settings.pipeline_step_s,
            }
        }
        if threshold is not None:
            settings["clustering"] = {"method": "agglomerative", "threshold": threshold}
        return settings

    def _diarize(
        self, name: str, split: str, settings: dict | None = None, rttm_dir: Path | None = None
    ):
        """Diarize a split with ``out/name/best``; return its score report and the RTF.

        ``settings`` override the model's own pipeline settings (its metadata).
        """
        from slimdiar.data import DataDir, read_rttm
        from slimdiar.pipeline import DiarizationPipeline
        from slimdiar.scoring import (
            annotations_from_turns,
            score_diarization,
            timelines_from_regions,
        )

        data = DataDir.load(self.data / split)
        pipeline = DiarizationPipeline.from_pretrained(self.out / name / "best", settings=settings)
        hypothesis_turns = []
        start = time.perf_counter()
        for uri, recording in sorted(data.recordings.items()):
            result = pipeline(recording.path, uri=uri)
            if rttm_dir is None:
                hypothesis_turns.extend(result.turns)
                continue
            # score what is written, as `slimdiar score` on these files does
            write_text_atomic(rttm_dir / f"{uri}.rttm", result.to_rttm(uri))
            hypothesis_turns.extend(read_rttm(rttm_dir / f"{uri}.rttm"))
        elapsed = time.perf_counter() - start
        audio_s = sum(r.duration_s for r in data.recordings.values())
        report = score_diarization(
            annotations_from_turns(data.all_turns()),
            annotations_from_turns(hypothesis_turns),
            timelines_from_regions(data.all_regions()) if data.has_uem else None,
        )
        return report.to_dict(), elapsed / audio_s

    def tune_threshold(self, name: str) -> float:
        """The clustering threshold with the lowest DER on the dev set (as one tunes a pipeline).

        It is saved with the model, with the window settings, as the model's pipeline
        settings (``metadata["pipeline"]``), so ``slimdiar diarize --model`` uses them.
        """
        from slimdiar.pipeline import save_settings

        ders = {}
        for threshold in self.settings.thresholds:
            scores, _ = self._diarize(name, "dev", self.pipeline_settings(threshold))
            ders[threshold] = scores["total"]["der"]
            self.say(f"  dev DER at clustering threshold {threshold:.2f}: {ders[threshold]:.3f}")
        best = min(ders, key=lambda t: (ders[t], t))
        write_json_atomic(
            self.out / name / "threshold.json",
            {"threshold": best, "dev_der": {str(k): v for k, v in ders.items()}},
        )
        save_settings(self.out / name / "best", self.pipeline_settings(best))
        return best

    def diarize_and_score(self, name: str) -> dict:
        """Tune the clustering threshold on dev, diarize the test set, write RTTMs and der.json.

        The test set is diarized with the model's saved settings alone, exactly as
        ``slimdiar diarize --model out/<name>/best`` does.
        """
        threshold = self.tune_threshold(name)
        rttm_dir = self.out / name / "rttm"
        rttm_dir.mkdir(parents=True, exist_ok=True)
        scores, rtf = self._diarize(name, "test", None, rttm_dir)
        scores["pipeline_rtf"] = rtf
        scores["clustering_threshold"] = threshold
        write_json_atomic(self.out / name / "der.json", scores)
        return scores

    def bench(self) -> None:
        """Measure the unpruned and pruned backbones side by side into ``out/bench.json``."""
        from slimdiar.bench.backbone import benchmark_backbones, environment

        models = [str(self.out / "finetune" / "best"), str(self.out / "finetune-pruned" / "best")]
        results = benchmark_backbones(
            models,
            seconds=self.settings.bench_seconds,
            batch_size=4,
            warmup=1,
            repeats=3 if self.quick else 5,
        )
        write_json_atomic(
            self.out / "bench.json",
            {
                "models": [r.to_dict() for r in results],
                **environment("cpu", torch.float32),
            },
        )

    def next_steps(self) -> str:
        """The two checkpoints to diarize with, and the commands that redo the demo's scores.

        The diarize command uses the checkpoint's own settings (its window and the clustering
        threshold the demo tuned on dev, recorded in the checkpoint) and the demo's step; its
        score over the test set is the demo's DER of that system.
        """
        systems = [
            ("fine-tuned", self.out / "finetune" / "best"),
            ("pruned + fine-tuned", self.out / "finetune-pruned" / "best"),
        ]
        test = self.data / "test"
        again = self.out / "finetune-pruned" / "rttm-again"
        lines = ["checkpoints to diarize with:"]
        lines += [f"  {label:21} {path}" for label, path in systems]
        lines += [
            "the demo's test score of the pruned system again:",
            "  "
            + shlex.join(
                [
                    "slimdiar",
                    "diarize",
                    "--model",
                    str(systems[1][1]),
                    "--step",
                    f"{self.settings.pipeline_step_s:g}",
                    str(test),
                    "--out",
                    str(again),
                ]
            ),
            "  " + shlex.join(["slimdiar", "score", "--ref", str(test), "--hyp", str(again)]),
        ]
        return "\n".join(lines)

    # ------------------------------------------------------------------ the run
    def run(self) -> dict:
        """Run every stage that is not done yet; return the report."""
        s = self.settings
        self.out.mkdir(parents=True, exist_ok=True)
        self.say(NO_PRETRAINING)
        self._stage("simulate", (self.data / "test" / "wav.scp").exists(), self.simulate)
        self._stage(
            "finetune",
            is_checkpoint_dir(self.out / "finetune" / "best"),
            lambda: self.finetune("finetune", s.finetune_epochs, s.backbone),
        )
        self._stage("prune", is_checkpoint_dir(self.out / "prune" / "pruned"), self.prune)
        self._stage("distill", is_checkpoint_dir(self.out / "distill" / "best"), self.distill)
        self._stage(
            "finetune-pruned",
            is_checkpoint_dir(self.out / "finetune-pruned" / "best"),
            lambda: self.finetune(
                "finetune-pruned", s.finetune_pruned_epochs, str(self.out / "distill" / "best")
            ),
        )
        for name in ("finetune", "finetune-pruned"):
            self._stage(
                f"diarize {name}",
                (self.out / name / "der.json").exists(),
                lambda name=name: self.diarize_and_score(name),
            )
        self._stage("bench", (self.out / "bench.json").exists(), self.bench)
        report = build_report(self.out, quick=self.quick)
        report["timings_s"] = self.timings
        write_json_atomic(self.out / "report.json", report)
        write_text_atomic(self.out / "report.md", render_report(report))
        return report


def check_settings() -> None:
    """Fail early when the offline tools the demo needs are missing."""
    missing = [tool for tool in ("espeak-ng",) if shutil.which(tool) is None]
    if missing:
        raise ConfigError(
            f"the demo's offline voice pool needs {', '.join(missing)}; install it with "
            "'apt-get install espeak-ng sox' (make demo does this for you)"
        )
