"""The embedded demo: the whole method, offline, on a CPU.

With no network, no pretrained weights and no corpus, it runs every stage of the method on
simulated conversations and reports, in the shape of the paper's table, what it measured::

    1 simulate   a small corpus of simulated conversations (TTS voices, disjoint speakers)
    2 pretrain   a small self-supervised WavLM (the bundled one, or pretrained in the run)
    3 finetune   EEND models from random initialisation and from the pretrained WavLM
    4 FBP        prune 80 % of the fine-tuned WavLM (distilling the fine-tuned model),
                 distil further, fine-tune the pruned WavLM with a fresh head
    5 PBF        prune 80 % of the pretrained WavLM (distilling the pretrained WavLM),
                 distil further, fine-tune it for diarization
    6 diarize    the held-out test set with all four models, and score it (DER)
    7 bench      size, MACs and CPU speed of the four backbones

The four rows are the paper's comparison: unpruned from random initialisation, unpruned from
the self-supervised model, fine-tune before pruning (FBP) and prune before fine-tuning (PBF).
``--compare`` repeats the training stages with more seeds (same corpus, same pretrained WavLM)
and reports each row's mean and standard deviation.

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
from pathlib import Path

import torch

from slimdiar.demo.pretrained import bundled_dir, check_bundled, pretrain, unusable_because
from slimdiar.demo.report import build_comparison, build_report, render_report
from slimdiar.demo.settings import SYSTEMS, demo_settings
from slimdiar.errors import ConfigError
from slimdiar.fileio import write_json_atomic, write_text_atomic
from slimdiar.models.checkpoint import is_checkpoint_dir

logger = logging.getLogger(__name__)


class Demo:
    """One demo run writing under ``out``.

    Parameters
    ----------
    out
        Output directory of every artifact.
    quick
        Smoke-test sizes (a few minutes) instead of the full demo.
    seed
        Seed of the simulation and of every training stage.
    jobs
        Worker processes for speech synthesis and simulation.
    say
        Called with one line of progress text per event.
    pretrain
        Pretrain the WavLM inside the run even where the bundled one fits.
    shared
        A demo whose corpus and pretrained WavLM this run reuses (``--compare``'s extra seeds):
        it then trains, diarizes and scores only.
    """

    def __init__(
        self,
        out: str | Path,
        quick: bool = False,
        seed: int = 0,
        jobs: int = 2,
        say: Callable[[str], None] = print,
        pretrain: bool = False,
        shared: Demo | None = None,
    ):
        self.out = Path(out)
        self.quick = quick
        self.settings = demo_settings(quick)
        self.seed = seed
        self.jobs = jobs
        self.say = say
        self.force_pretrain = pretrain
        self.shared = shared
        self.timings: dict[str, float] = {}

    # ------------------------------------------------------------------ paths
    @property
    def data(self) -> Path:
        """The simulated corpus's data directories."""
        return self.shared.data if self.shared else self.out / "data"

    @property
    def voices(self) -> Path:
        """The offline voice pool the corpus was simulated from."""
        return self.shared.voices if self.shared else self.out / "voices"

    @property
    def pretrained_record(self) -> Path:
        """Which pretrained WavLM this run uses (written by the pretrain stage)."""
        return (self.shared or self).out / "pretrained.json"

    @property
    def ssl_backbone(self) -> Path:
        """The self-supervised WavLM: the bundled checkpoint or the one pretrained in the run."""
        record = json.loads(self.pretrained_record.read_text())
        return Path(record["path"])

    def _stage(self, name: str, done: bool, run: Callable[[], None]) -> None:
        if done:
            self.say(f"[{name}] already done, skipped (delete it under {self.out} to redo)")
            return
        self.say(f"[{name}] ...")
        start = time.perf_counter()
        run()
        self.timings[name] = time.perf_counter() - start
        self.say(f"[{name}] done in {self.timings[name]:.0f} s")
        # kept across runs, so the report of a resumed demo still has every stage's time
        owner = self.shared or self
        recorded = self.recorded_timings()
        recorded[f"seed {self.seed} {name}" if self.shared else name] = self.timings[name]
        write_json_atomic(owner.out / "timings.json", recorded)

    def recorded_timings(self) -> dict[str, float]:
        """Seconds of every stage this output directory has run (``out/timings.json``)."""
        path = (self.shared or self).out / "timings.json"
        return json.loads(path.read_text()) if path.exists() else {}

    # ------------------------------------------------------------------ stages
    def simulate(self) -> None:
        """Stage: simulate the train/dev/test meetings from the built-in voices."""
        from slimdiar.simulate import SimulationConfig, simulate_data_dirs
        from slimdiar.simulate.tts import TTSVoicePool

        s = self.settings
        pool = TTSVoicePool(
            self.voices,
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

    def pretrain(self) -> None:
        """Stage: choose the self-supervised WavLM; record the choice in ``pretrained.json``.

        It is the bundled checkpoint unless that does not fit this corpus or ``pretrain`` was
        asked for; then it is pretrained here, into ``out/pretrain``.
        """
        settings = self.settings.pretraining()
        reason = "slimdiar demo --pretrain" if self.force_pretrain else None
        if reason is None and not self.settings.pretrained_sha256:
            reason = "the demo configuration records no bundled checkpoint for its sizes"
        record: dict = {}
        if reason is None:
            bundle = bundled_dir()
            record = check_bundled(bundle, self.settings.pretrained_sha256)
            reason = unusable_because(record, settings, self.data)
        if reason is None:
            choice = {"source": "bundled", "path": str(bundle), **record}
            self.say(
                f"  the bundled pretrained WavLM ({record['steps']} steps on "
                f"{record['audio']['train']['minutes']:.1f} min of the training speakers' "
                f"speech; SHA-256 {record['sha256'][:12]}... checked)"
            )
        else:
            self.say(f"  pretraining the WavLM in this run: {reason}")
            exp = self.out / "pretrain"
            record = pretrain(settings, self.voices, self.data, exp, self.jobs)
            write_json_atomic(exp / "record.json", record)
            choice = {"source": "pretrained in this run", "why": reason, "path": str(exp / "best")}
            choice |= record
        write_json_atomic(self.pretrained_record, choice)

    def _finetune_config(self, epochs: int, lr_backbone: float):
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
            optim=OptimSection(lr_backbone=lr_backbone, lr_head=s.lr_head, weight_decay=0.0),
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

    def finetune(self, name: str, epochs: int, backbone: str | Path | None) -> None:
        """Fine-tune a diarization model into ``out/name`` (a preset or a WavLM checkpoint).

        A random preset's WavLM learns at ``lr_backbone``, a trained one (a checkpoint) at
        ``lr_backbone_pretrained``.
        """
        from slimdiar.stages.finetune import run as finetune

        s = self.settings
        trained = backbone is not None and is_checkpoint_dir(Path(backbone))
        exp = self.out / name
        shutil.rmtree(exp, ignore_errors=True)
        finetune(
            self._finetune_config(epochs, s.lr_backbone_pretrained if trained else s.lr_backbone),
            self.data / "train",
            self.data / "dev",
            exp,
            backbone=None if backbone is None else str(backbone),
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

    def prune(self, teacher: Path, name: str = "prune") -> None:
        """Stage 1: prune the teacher's WavLM to the demo's sparsity into ``out/name``.

        The teacher is the fine-tuned model (FBP) or the pretrained WavLM (PBF); the audio it is
        distilled on is the training conversations' (their labels are not used).
        """
        from slimdiar.stages.common import DistillOptimSection
        from slimdiar.stages.prune import PruneConfig, PruneSection, PruneTrainerConfig
        from slimdiar.stages.prune import run as prune

        s = self.settings
        exp = self.out / name
        shutil.rmtree(exp, ignore_errors=True)
        config = PruneConfig(
            prune=PruneSection(sparsity=s.sparsity, warmup_epochs=s.prune_warmup_epochs),
            data=self._distill_data(),
            optim=DistillOptimSection(lr_gates=s.lr_gates, lr_lambda=s.lr_lambda),
            trainer=self._trainer(PruneTrainerConfig, s.prune_epochs),
        )
        prune(config, teacher, self.data / "train", self.data / "dev", exp)
        report = json.loads((exp / "report.json").read_text())
        self.say(
            f"  {report['teacher']['params'] / 1e6:.3f}M -> "
            f"{report['student']['params'] / 1e6:.3f}M WavLM parameters "
            f"(sparsity {report['reached_sparsity']:.3f}, target {s.sparsity})"
        )

    def distill(self, student: Path, teacher: Path, name: str = "distill") -> None:
        """Stage 2: distil the teacher into the pruned student, into ``out/name``."""
        from slimdiar.stages.distill import DistillConfig, DistillTrainerConfig
        from slimdiar.stages.distill import run as distill

        s = self.settings
        exp = self.out / name
        shutil.rmtree(exp, ignore_errors=True)
        config = DistillConfig(
            data=self._distill_data(),
            trainer=self._trainer(DistillTrainerConfig, s.distill_epochs, average_best=1),
        )
        distill(config, student, teacher, self.data / "train", self.data / "dev", exp)

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
        """Measure the four backbones side by side into ``out/bench.json``."""
        from slimdiar.bench.backbone import benchmark_backbones, environment

        models = [str(self.out / system.name / "best") for system in SYSTEMS]
        results = benchmark_backbones(
            models,
            seconds=self.settings.bench_seconds,
            batch_size=4,
            # a forward of these small models takes milliseconds: many repeats, after enough
            # warm-up, or the first model measured carries the start-up cost
            warmup=1 if self.quick else 5,
            repeats=3 if self.quick else 30,
        )
        write_json_atomic(
            self.out / "bench.json",
            {
                "models": [r.to_dict() for r in results],
                **environment("cpu", torch.float32),
            },
        )

    def next_steps(self) -> str:
        """The checkpoints to diarize with, and the commands that redo the demo's scores.

        The diarize command uses the checkpoint's own settings (its window and the clustering
        threshold the demo tuned on dev, recorded in the checkpoint) and the demo's step; its
        score over the test set is the demo's DER of that system.
        """
        systems = [(system.label, self.out / system.name / "best") for system in SYSTEMS]
        fbp = self.out / "finetune-pruned" / "best"
        test = self.data / "test"
        again = self.out / "finetune-pruned" / "rttm-again"
        lines = ["checkpoints to diarize with:"]
        lines += [f"  {label:21} {path}" for label, path in systems]
        lines += [
            "the demo's test score of the FBP system again:",
            "  "
            + shlex.join(
                [
                    "slimdiar",
                    "diarize",
                    "--model",
                    str(fbp),
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
    def train_and_score(self) -> None:
        """The four systems: every training stage not done yet, then their test scores."""
        s = self.settings
        done = is_checkpoint_dir
        self._stage(
            "finetune-random",
            done(self.out / "finetune-random" / "best"),
            lambda: self.finetune("finetune-random", s.finetune_epochs, s.backbone),
        )
        self._stage(
            "finetune",
            done(self.out / "finetune" / "best"),
            lambda: self.finetune("finetune", s.finetune_epochs, self.ssl_backbone),
        )
        # FBP: prune the fine-tuned model, distilling it
        teacher = self.out / "finetune" / "best"
        self._stage(
            "prune", done(self.out / "prune" / "pruned"), lambda: self.prune(teacher, "prune")
        )
        self._stage(
            "distill",
            done(self.out / "distill" / "best"),
            lambda: self.distill(self.out / "prune" / "pruned", teacher, "distill"),
        )
        self._stage(
            "finetune-pruned",
            done(self.out / "finetune-pruned" / "best"),
            lambda: self.finetune(
                "finetune-pruned", s.finetune_pruned_epochs, self.out / "distill" / "best"
            ),
        )
        # PBF: prune the pretrained WavLM, distilling it, then fine-tune
        self._stage(
            "pbf-prune",
            done(self.out / "pbf-prune" / "pruned"),
            lambda: self.prune(self.ssl_backbone, "pbf-prune"),
        )
        self._stage(
            "pbf-distill",
            done(self.out / "pbf-distill" / "best"),
            lambda: self.distill(
                self.out / "pbf-prune" / "pruned", self.ssl_backbone, "pbf-distill"
            ),
        )
        self._stage(
            "pbf-finetune",
            done(self.out / "pbf-finetune" / "best"),
            lambda: self.finetune(
                "pbf-finetune", s.pbf_finetune_epochs, self.out / "pbf-distill" / "best"
            ),
        )
        for system in SYSTEMS:
            self._stage(
                f"diarize {system.name}",
                (self.out / system.name / "der.json").exists(),
                lambda name=system.name: self.diarize_and_score(name),
            )

    def run(self) -> dict:
        """Run every stage that is not done yet; return the report."""
        self.out.mkdir(parents=True, exist_ok=True)
        self._stage("simulate", (self.data / "test" / "wav.scp").exists(), self.simulate)
        if self.force_pretrain and self.pretrained_record.exists():
            used = json.loads(self.pretrained_record.read_text())
            if used["source"] == "bundled":
                raise ConfigError(
                    f"{self.out} was made with the bundled pretrained WavLM; run "
                    "'slimdiar demo --pretrain' with another --out (its later stages depend on "
                    "the WavLM)"
                )
        self._stage("pretrain", self.pretrained_record.exists(), self.pretrain)
        self.train_and_score()
        self._stage("bench", (self.out / "bench.json").exists(), self.bench)
        report = build_report(self.out, quick=self.quick)
        report["timings_s"] = self.recorded_timings()
        write_json_atomic(self.out / "report.json", report)
        write_text_atomic(self.out / "report.md", render_report(report))
        return report

    def compare(self) -> dict:
        """The demo, then its training stages again with more seeds; the report.

        The report gains each system's mean and standard deviation (``report["compare"]``,
        also ``out/compare.json``).

        The extra seeds (``seed + 1``, ...) share this run's corpus and pretrained WavLM; they
        change every training stage's seed (initialisation, chunk order, dropout, gates).
        """
        self.run()
        runs = [self]
        for k in range(1, self.settings.compare_seeds):
            seed = self.seed + k
            self.say(f"[compare] seed {seed}")
            other = Demo(
                self.out / "compare" / f"seed-{seed}",
                quick=self.quick,
                seed=seed,
                say=self.say,
                shared=self,
            )
            other.out.mkdir(parents=True, exist_ok=True)
            other.train_and_score()
            runs.append(other)
        comparison = build_comparison(
            {run.seed: run.out for run in runs}, [(s.name, s.label) for s in SYSTEMS]
        )
        write_json_atomic(self.out / "compare.json", comparison)
        report = build_report(self.out, quick=self.quick)
        report["timings_s"] = self.recorded_timings()
        report["compare"] = comparison
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
