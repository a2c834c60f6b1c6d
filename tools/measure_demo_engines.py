#!/usr/bin/env python3
"""The demo's test DER and model time for each engine and precision of its two models.

Usage: .venv/bin/python tools/measure_demo_engines.py [--demo exp/demo] [--quick]
                                                      [--models finetune finetune-pruned]
                                                      [--repeats 3] [--threads 2]
                                                      [--work DIR]
                                                      [--json docs/results/demo-engines.json]

A finished ``slimdiar demo`` directory holds, among its four systems, ``DEMO/finetune/best``
(unpruned, SSL-initialised) and ``DEMO/finetune-pruned/best`` (FBP: pruned, then fine-tuned),
and its test set ``DEMO/data/test``. Each system diarizes the test set as ``slimdiar diarize --model
DEMO/<name>/best --step STEP`` does (the model's saved pipeline settings, the demo's window step
``DemoSettings.pipeline_step_s``, ``--quick`` for a demo run with ``slimdiar demo --quick``, the
default GE2E embedding), once per variant:

- ``torch float32``, the reference;
- ``torch bfloat16`` (``--dtype bfloat16``: both models);
- ``onnx float32`` (``--engine onnx``), with the segmentation model exported first by
  ``slimdiar.pipeline.export.export_pipeline_models`` into ``WORK/<name>/onnx``; GE2E is not
  exported, so the embedding stays on torch.

Every run is ``slimdiar.cli.main(["diarize", ...])`` in this process with ``--threads``
(default 2) torch and ONNX Runtime threads, and every score is ``slimdiar score --ref
DEMO/data/test`` (its UEM, collar 0, the demo's scoring). The model time of a run is the
pipeline's own ``timings_s`` of its segmentation and embedding stages, summed over the
recordings' ``<uri>.json``. Each variant first diarizes one recording untimed (a warm-up), then
the variants run interleaved ``--repeats`` times (default 3) and the median is kept; the DER and
the RTTMs are those of the first timed round. The JSON records per model and variant the DER
and its components (fractions of the reference speech), the DER change against torch float32 in
points, the model time and its ratio to torch float32, and whether the RTTMs are
byte-identical to torch float32's; also the demo's own test DER of each model
(``DEMO/<name>/der.json``) for comparison. ``tools/render_benchmarks.py`` renders it into
docs/benchmarks.md. Nothing is written under DEMO.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shlex
import statistics
import sys
import tempfile
from pathlib import Path

#: The systems of a demo directory: name under DEMO, and whether it is pruned.
MODELS = {"finetune": False, "finetune-pruned": True}
REFERENCE = "torch float32"
#: Variant label -> (engine, dtype).
VARIANTS = {
    REFERENCE: ("torch", "float32"),
    "torch bfloat16": ("torch", "bfloat16"),
    "onnx float32": ("onnx", "float32"),
}
#: The pipeline stages that run the models.
MODEL_STAGES = ("segmentation", "embeddings")


class MeasureError(RuntimeError):
    """A demo directory lacks what the measurement needs, or a command failed."""


def run_cli(argv: list[str]) -> str:
    """Run ``slimdiar ARGV`` in this process; its standard output, or :class:`MeasureError`."""
    from slimdiar.cli import main

    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        status = main(argv)
    if status != 0:
        raise MeasureError(f"`slimdiar {shlex.join(argv)}` exited with status {status}")
    return output.getvalue()


def run_dir(root: Path, variant: str, round_index: int) -> Path:
    """Where one run of a variant writes its RTTMs and JSON (round -1: the warm-up)."""
    name = "warmup" if round_index < 0 else f"round{round_index}"
    return root / variant.replace(" ", "-") / name


def diarize_argv(
    model_dir: Path, inputs: str, out_dir: Path, step_s: float, threads: int, variant: str
) -> list[str]:
    """The ``slimdiar diarize`` command line of one variant (``--onnx`` excluded)."""
    engine, dtype = VARIANTS[variant]
    argv = ["diarize", "--model", str(model_dir), inputs, "--out", str(out_dir)]
    argv += ["--step", f"{step_s:g}", "--threads", str(threads), "--quiet"]
    argv += ["--engine", engine, "--dtype", dtype]
    return argv


def score(test_dir: Path, hyp_dir: Path, json_path: Path) -> dict:
    """``slimdiar score --ref TEST --hyp HYP --json FILE``: the report's ``total``."""
    run_cli(["score", "--ref", str(test_dir), "--hyp", str(hyp_dir), "--json", str(json_path)])
    return json.loads(json_path.read_text())["total"]


def model_seconds(out_dir: Path, uris: list[str]) -> float:
    """Seconds of the model stages of a diarize run, from the ``<uri>.json`` it wrote."""
    total = 0.0
    for uri in uris:
        timings = json.loads((out_dir / f"{uri}.json").read_text())["timings_s"]
        total += sum(timings.get(stage, 0.0) for stage in MODEL_STAGES)
    return total


def batch_size(out_dir: Path, uris: list[str]) -> int:
    """The ``windows.batch_size`` the run recorded (the same for every recording)."""
    sizes = {
        json.loads((out_dir / f"{uri}.json").read_text())["config"]["windows"]["batch_size"]
        for uri in uris
    }
    if len(sizes) != 1:
        raise MeasureError(f"{out_dir}: recordings ran with several batch sizes {sorted(sizes)}")
    return int(sizes.pop())


def same_rttms(a: Path, b: Path, uris: list[str]) -> bool:
    """Whether ``a/<uri>.rttm`` and ``b/<uri>.rttm`` are byte-identical for every uri."""
    return all((a / f"{u}.rttm").read_bytes() == (b / f"{u}.rttm").read_bytes() for u in uris)


def export_onnx(model_dir: Path, out_dir: Path) -> Path:
    """Export the segmentation model of ``model_dir`` with the project's exporter."""
    from slimdiar.models.eend import EEND
    from slimdiar.pipeline.export import export_pipeline_models, require_exporter

    require_exporter()
    export_pipeline_models(EEND.from_pretrained(model_dir), out_dir, None, str(model_dir))
    return out_dir


def demo_der(model_root: Path) -> float | None:
    """The demo's own test DER of a model (``der.json``), if it wrote one."""
    path = model_root / "der.json"
    if not path.is_file():
        return None
    return float(json.loads(path.read_text())["total"]["der"])


def measure(args: argparse.Namespace, argv: list[str]) -> dict:
    """Diarize, score and time every model and variant; the JSON record."""
    import torch

    from slimdiar.bench.backbone import environment
    from slimdiar.data import DataDir
    from slimdiar.demo.run import demo_settings
    from slimdiar.models.checkpoint import is_checkpoint_dir

    demo = Path(args.demo)
    test_dir = demo / "data" / "test"
    if not (test_dir / "wav.scp").is_file():
        raise MeasureError(f"{test_dir}: no wav.scp (is {demo} a finished demo directory?)")
    for name in args.models:
        if not is_checkpoint_dir(demo / name / "best"):
            raise MeasureError(f"{demo / name / 'best'}: not a checkpoint directory")
    data = DataDir.load(test_dir)
    uris = sorted(data.recordings)
    audio_s = sum(r.duration_s or 0.0 for r in data.recordings.values())
    step_s = demo_settings(quick=args.quick).pipeline_step_s
    torch.set_num_threads(args.threads)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="demo-engines-"))
    print(f"exports, RTTMs and scores go to {work}", file=sys.stderr)

    models = []
    for name in args.models:
        model_dir = demo / name / "best"
        root = work / name
        print(f"{name}: exporting the segmentation model to ONNX", file=sys.stderr)
        onnx_dir = export_onnx(model_dir, root / "onnx")
        times: dict[str, list[float]] = {v: [] for v in VARIANTS}
        first = str(data.recordings[uris[0]].path)
        for round_index in range(-1, args.repeats):  # round -1: a warm-up on one recording
            for variant in VARIANTS:
                out = run_dir(root, variant, round_index)
                inputs = first if round_index < 0 else str(test_dir)
                cli = diarize_argv(model_dir, inputs, out, step_s, args.threads, variant)
                if VARIANTS[variant][0] == "onnx":
                    cli += ["--onnx", str(onnx_dir)]
                what = "warm-up" if round_index < 0 else f"round {round_index + 1}"
                print(f"{name}: {variant} ({what})", file=sys.stderr)
                run_cli(cli)
                if round_index >= 0:
                    times[variant].append(model_seconds(out, uris))
        reference_dir = run_dir(root, REFERENCE, 0)
        reference: dict = {}
        variants = []
        for variant, (engine, dtype) in VARIANTS.items():
            out = run_dir(root, variant, 0)
            total = score(test_dir, out, out.parent / "der.json")
            speech_s = total["total"]
            entry = {
                "variant": variant,
                "engine": engine,
                "dtype": dtype,
                "der": total["der"],
                "missed": total["missed"] / speech_s,
                "false_alarm": total["false_alarm"] / speech_s,
                "confusion": total["confusion"] / speech_s,
                "model_s": statistics.median(times[variant]),
                "model_s_runs": times[variant],
                "batch_size": batch_size(out, uris),
                "rttm_identical": same_rttms(out, reference_dir, uris),
            }
            if variant == REFERENCE:  # the first of VARIANTS
                reference = entry
            entry["der_change_points"] = 100 * (entry["der"] - reference["der"])
            entry["model_s_ratio"] = entry["model_s"] / reference["model_s"]
            variants.append(entry)
        models.append(
            {
                "name": name,
                "pruned": MODELS.get(name),
                "checkpoint": str(model_dir),
                "demo_der": demo_der(demo / name),
                "variants": variants,
            }
        )

    import onnxruntime

    facts = environment("cpu", [torch.float32, torch.bfloat16])
    del facts["dtype"]  # "several": the variants name theirs, "dtypes" lists them
    return {
        "mode": "demo-engines",
        "demo": str(demo),
        "test_set": str(test_dir),
        "num_recordings": len(uris),
        "audio_s": audio_s,
        "step_s": step_s,
        "collar_s": 0.0,
        "uem": data.has_uem,
        "embedding": "ge2e",
        "onnx_models": "the segmentation model (GE2E is not exported: it runs on torch in "
        "every variant)",
        "model_stages": list(MODEL_STAGES),
        "repeats": args.repeats,
        "models": models,
        **facts,
        "onnxruntime": onnxruntime.__version__,
        "command": shlex.join(["python", "tools/measure_demo_engines.py", *argv]),
    }


def main(argv: list[str] | None = None) -> int:
    """Measure and write the JSON; 0 on success, 1 with one line on stderr otherwise."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", default="exp/demo", help="demo directory (default: exp/demo)")
    parser.add_argument(
        "--quick", action="store_true", help="the demo ran with --quick (its window step)"
    )
    parser.add_argument(
        "--models",
        nargs="+",
        default=list(MODELS),
        help="systems under DEMO to measure (default: finetune finetune-pruned)",
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed rounds, interleaved (default: 3)"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch and ONNX Runtime threads")
    parser.add_argument(
        "--work",
        help="where the exports, RTTMs and scores go (default: a new temporary directory, kept)",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=Path("docs/results/demo-engines.json"),
        help="result file (default: docs/results/demo-engines.json)",
    )
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.threads < 1:
        print("measure_demo_engines: error: --repeats and --threads must be >= 1", file=sys.stderr)
        return 1
    from slimdiar.errors import SlimdiarError
    from slimdiar.fileio import write_json_atomic

    try:
        result = measure(args, argv)
    except (MeasureError, SlimdiarError) as error:
        print(f"measure_demo_engines: error: {error}", file=sys.stderr)
        return 1
    write_json_atomic(args.json, result)
    print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
