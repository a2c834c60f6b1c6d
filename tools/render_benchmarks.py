#!/usr/bin/env python3
"""Generate docs/benchmarks.md from the benchmark results in docs/results/*.json.

Usage: .venv/bin/python tools/render_benchmarks.py [--results docs/results]
                                                   [--notes docs/benchmarks-notes.md]
                                                   [--out docs/benchmarks.md]

These kinds of result files are read:

- backbone benchmarks, the JSON written by ``slimdiar bench MODEL... --json FILE`` (a
  ``"models"`` list): one table per file with parameters, MACs per second of audio, latency,
  real-time factor and speed-up against the first model, at batch 1 and at the file's batch size;
  a file measured in several precisions (``--dtype float32 bfloat16``, a ``"dtypes"`` list) gets
  one row per model with the latencies of every precision side by side instead;
- pipeline benchmarks, the JSON written by ``slimdiar bench --pipeline CKPT --json FILE``
  (``"mode": "pipeline"``): one table with a row per file, real-time factor of every stage and
  of the whole pipeline, peak resident memory and its increase over the resident size before
  the run;
- embedding-stage benchmarks, the JSON written by ``tools/bench_embeddings.py``
  (``"mode": "embeddings"``): one row per file, the stage's seconds with one ResNet pass per
  (window, speaker) and with one per window, and the speed-up.

- per-call cost measurements, the JSON written by ``tools/measure_call_costs.py``
  (``"mode": "call-costs"``): speed-ups of the eval-mode savings of the encoder, the
  positional-conv variants, zero-padded FFN widths, and segmentation throughput and peak memory
  per batch size;
- the demo's DER per engine and precision, the JSON written by
  ``tools/measure_demo_engines.py`` (``"mode": "demo-engines"``): per model and variant the
  DER, its components and its change against torch float32, the model time and its ratio, and
  whether the RTTMs are those of torch float32.

Backbone benchmarks measured in both engines (``slimdiar bench MODEL... --engine torch onnx``,
an ``"engines"`` list of both), at the top of RESULTS or in ``RESULTS/onnx/``, get a section of
their own: one table per file with each model's latency per engine and the speed-up of ONNX
Runtime over torch, and the command that produced the file, or a sentence saying that the file
does not record it.

Any other JSON file is skipped with a message. The hand-written commentary of
``--notes`` is appended verbatim, except that a line ``<!-- backbone-profile: FILE -->`` becomes
the table of the time per part of each model in ``RESULTS/FILE``, the JSON written by
``tools/profile_backbones.py``. The output is written atomically; never edit it by hand.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import statistics
import sys
from pathlib import Path

from slimdiar.fileio import write_text_atomic

GENERATED_BY = "python tools/render_benchmarks.py"
#: The sub-folder of RESULTS read besides its top level (backbones timed in both engines).
ENGINE_FOLDER = "onnx"
#: Stage columns of the pipeline table, in the order the pipeline runs them.
STAGE_ORDER = ("segmentation", "speaker_counting", "embeddings", "clustering", "reconstruction")
#: A line of the notes replaced by a profile table, and the labels of that table.
PROFILE_MARKER = re.compile(r"^<!-- backbone-profile: (\S+) -->$", re.MULTILINE)
OP_PROFILE_MARKER = re.compile(r"^<!-- op-profile: (\S+) -->$", re.MULTILINE)
PROFILE_PARTS = {
    "conv layer 0": "conv layer 0",
    "conv layers 1-6": "conv layers 1-6",
    "positional conv": "positional conv",
    "attention": "attention (all layers)",
    "ffn": "FFN (all layers)",
    "other (norms, projection, bias)": "rest (projection, norms)",
    "total_ms": "total",
}
MODEL_LABELS = {
    "wavlm-base-plus": "Base+",
    "wavlm-base-plus-s80": "Base+ s80",
    "wavlm-large": "Large",
    "wavlm-large-s80": "Large s80",
}


class ResultError(ValueError):
    """A result file cannot be read or lacks a field."""


def _read_json(path: Path):
    """The JSON value of ``path``; a :class:`ResultError` when it cannot be read as JSON."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ResultError(f"{path}: cannot read it as JSON: {error}") from error


def load_results(
    results_dir: Path,
) -> tuple[list[tuple[Path, dict]], list[tuple[Path, dict]], list[str]]:
    """Backbone results, pipeline results and messages about skipped files, by file name.

    Embedding-stage and per-call cost results are counted among the pipeline results (see
    :func:`render`).
    """
    backbones, pipelines, skipped = [], [], []
    paths = sorted(results_dir.glob("*.json")) + sorted(results_dir.glob(f"{ENGINE_FOLDER}/*.json"))
    for path in paths:
        data = _read_json(path)
        if isinstance(data, dict) and data.get("mode") in (
            "pipeline",
            "embeddings",
            "call-costs",
            "demo-engines",
        ):
            pipelines.append((path, data))
        elif isinstance(data, dict) and isinstance(data.get("models"), list):
            backbones.append((path, data))
        else:
            skipped.append(f"{path}: neither a backbone nor a pipeline benchmark; skipped")
    return backbones, pipelines, skipped


def _field(path: Path, data: dict, key: str):
    if key not in data:
        raise ResultError(f"{path}: no {key!r} field")
    return data[key]


def _table(header: list[str], rows: list[list[str]], left: tuple[int, ...] = (0,)) -> list[str]:
    """A Markdown table; the columns of ``left`` are left-aligned, the others right-aligned."""
    align = ["---" if i in left else "---:" for i in range(len(header))]
    return ["| " + " | ".join(cells) + " |" for cells in [header, align, *rows]]


def _environment(data: dict) -> str:
    parts = [f"device {data.get('device', '?')}"]
    if data.get("device_name"):
        parts[0] += f" ({data['device_name']})"
    parts.append(f"{data.get('threads', '?')} threads")
    if data.get("dtype"):
        parts.append(data["dtype"])
    parts.append(f"torch {data.get('torch', '?')}")
    return ", ".join(parts)


def _cpu(data: dict, separator: str = ", ") -> str:
    """``", CPU capability X, native bfloat16: yes (amx_bf16, ...)"`` where the result says."""
    if "cpu_capability" not in data:
        return ""
    native = "yes" if data.get("cpu_native_bf16") else "no"
    if data.get("cpu_bf16_flags"):
        native += f" ({', '.join(data['cpu_bf16_flags'])})"
    return f"{separator}CPU capability {data['cpu_capability']}, native bfloat16: {native}"


def render_backbones(path: Path, data: dict) -> list[str]:
    """Markdown lines for one ``slimdiar bench MODEL...`` result file."""
    models = _field(path, data, "models")
    batch_size = _field(path, data, "batch_size")
    seconds = _field(path, data, "seconds")
    header = [
        "model",
        "params",
        "MACs/s",
        "latency b=1",
        "RTF b=1",
        "speed-up b=1",
        f"latency b={batch_size}",
        f"RTF b={batch_size}",
        f"speed-up b={batch_size}",
    ]
    rows = []
    for model in models:

        def get(key, model=model):
            if key not in model:
                raise ResultError(f"{path}: model {model.get('name', '?')!r} has no {key!r}")
            return model[key]

        rows.append(
            [
                f"`{get('name')}`",
                f"{get('params') / 1e6:.2f}M",
                f"{get('macs_per_second') / 1e9:.2f}G",
                f"{get('latency_s') * 1000:.1f} ms",
                f"{get('rtf'):.4f}",
                f"{get('speedup_vs_first'):.2f}x",
                f"{get('latency_batch_s') * 1000:.1f} ms",
                f"{get('rtf_batch'):.4f}",
                f"{get('speedup_batch_vs_first'):.2f}x",
            ]
        )
    lines = [
        f"### {path.name}",
        "",
        f"{seconds:g} s of audio per input; {_timing(data)}; {_environment(data)}{_cpu(data)}.",
        "",
    ]
    return lines + _table(header, rows) + [""]


def _several_engines(data: dict) -> bool:
    engines = data.get("engines")
    return isinstance(engines, list) and len(set(engines)) > 1


def _json_target(command: str) -> str | None:
    """The file a recorded command wrote with ``--json FILE``, if it names one."""
    try:
        words = shlex.split(command)
    except ValueError:
        return None
    if "--json" in words[:-1]:
        return words[words.index("--json") + 1]
    return None


def render_engines(path: Path, data: dict, results_dir: Path) -> list[str]:
    """Markdown lines for ``slimdiar bench MODEL... --engine torch onnx``: engines side by side."""
    models = _field(path, data, "models")
    batch_size = _field(path, data, "batch_size")
    seconds = _field(path, data, "seconds")
    name = path.relative_to(results_dir).as_posix()
    again = batch_size == 1  # the batch timing is then a second timing at batch 1
    batch = "b=1, again" if again else f"b={batch_size}"
    for model in models:
        for key in ("name", "engine", "latency_s", "latency_batch_s"):
            if key not in model:
                raise ResultError(f"{path}: a model entry has no {key!r}")
    first = {}
    for model in models:
        first.setdefault(model["engine"], model["name"])
    header = [
        "model",
        "engine",
        "latency b=1",
        f"latency {batch}",
        "speed-up vs torch b=1",
        f"speed-up vs torch {batch}",
        "speed-up vs first model b=1",
        f"speed-up vs first model {batch}",
    ]

    def ratio(model: dict, key: str) -> str:
        value = model.get(key)
        return "" if value is None else f"{value:.2f}x"

    rows = [
        [
            f"`{m['name']}`",
            m["engine"],
            f"{m['latency_s'] * 1000:.1f} ms",
            f"{m['latency_batch_s'] * 1000:.1f} ms",
            ratio(m, "speedup_vs_torch"),
            ratio(m, "speedup_batch_vs_torch"),
            ratio(m, "speedup_vs_first"),
            ratio(m, "speedup_batch_vs_first"),
        ]
        for m in models
    ]
    environment = _environment(data) + _cpu(data)
    sentences = [
        f"{seconds:g} s of audio per input; {_timing(data)}; {environment}.",
        (
            "Every model is exported to a temporary ONNX file first, then all of them, in both "
            "engines, are timed in the same rounds; the speed-up vs torch is the median of the "
            "per-round ratios of the torch float32 time of the same model to this one's, the "
            "speed-up vs first model that of the engine's first model"
            if _in_turns(data)
            else "The torch runs come first, then the ONNX Runtime runs (each model exported to "
            "a temporary file first); the speed-up vs torch is the torch float32 latency of the "
            "same model over this one, the speed-up vs first model the latency of the engine's "
            "first model"
        )
        + f" ({', '.join(f'{e}: `{n}`' for e, n in first.items())}) over this one.",
    ]
    if again:
        sentences.append(
            "At batch size 1 the benchmark times batch 1 twice, on two random inputs, each "
            "with its own warm-up and median: both are shown."
        )
    lines = [f"### {name}", "", " ".join(sentences), ""]
    lines += _table(header, rows, left=(0, 1)) + [""]
    command = data.get("command")
    if command:
        target = _json_target(command)
        renamed = (
            f" (it wrote `{target}`; the result is stored as `{path.as_posix()}`)"
            if target is not None and Path(target).name != path.name
            else ""
        )
        lines += [f"Command: `{command}`{renamed}", ""]
    else:
        lines += ["The file does not record the command that produced it.", ""]
    return lines


def render_precisions(path: Path, data: dict) -> list[str]:
    """Markdown lines for ``slimdiar bench MODEL... --dtype A B``: precisions side by side."""
    dtypes = _field(path, data, "dtypes")
    models = _field(path, data, "models")
    batch_size = _field(path, data, "batch_size")
    seconds = _field(path, data, "seconds")
    by_model: dict[str, dict[str, dict]] = {}
    for model in models:
        for key in ("name", "dtype", "params", "macs_per_second", "latency_s", "latency_batch_s"):
            if key not in model:
                raise ResultError(f"{path}: a model entry has no {key!r}")
        by_model.setdefault(model["name"], {})[model["dtype"]] = model
    lower = [d for d in dtypes if d != "float32"]
    header = ["model", "params", "MACs/s"]
    header += [f"b=1 {d}" for d in dtypes] + [f"b={batch_size} {d}" for d in dtypes]
    if "float32" in dtypes:
        header += [f"{d} vs float32 b=1" for d in lower]
        header += [f"{d} vs float32 b={batch_size}" for d in lower]
    rows = []
    for name, runs in by_model.items():
        first = next(iter(runs.values()))
        row = [
            f"`{name}`",
            f"{first['params'] / 1e6:.2f}M",
            f"{first['macs_per_second'] / 1e9:.2f}G",
        ]
        for key in ("latency_s", "latency_batch_s"):
            row += [f"{runs[d][key] * 1000:.1f} ms" if d in runs else "" for d in dtypes]
        if "float32" in dtypes:
            for key in ("latency_s", "latency_batch_s"):
                row += [
                    f"{runs['float32'][key] / runs[d][key]:.2f}x"
                    if d in runs and "float32" in runs
                    else ""
                    for d in lower
                ]
        rows.append(row)
    mode = data.get("precision_mode")
    lines = [
        f"### {path.name}",
        "",
        f"Latency per forward pass in each precision, side by side in one process; "
        f"{seconds:g} s of audio per input; {_timing(data)}; {_environment(data)}"
        + (f"; lower precisions applied by {mode}" if mode else "")
        + _cpu(data, separator="; ")
        + ".",
        "",
    ]
    lines += _table(header, rows) + [""]
    if data.get("command"):
        lines += [f"Command: `{data['command']}`", ""]
    return lines


def render_embeddings(results: list[tuple[Path, dict]]) -> list[str]:
    """Markdown lines for all ``tools/bench_embeddings.py`` result files: one row each."""
    header = [
        "file",
        "audio",
        "model",
        "windows",
        "(window, speaker) pairs",
        "per pair",
        "per window",
        "speed-ups",
        "max abs difference",
        "environment",
    ]
    rows = []
    for path, data in results:
        per_pair = _field(path, data, "per_pair_s")
        per_window = _field(path, data, "per_window_s")
        rows.append(
            [
                path.name,
                f"{_field(path, data, 'seconds'):g} s",
                str(data.get("model")),
                str(_field(path, data, "num_windows")),
                str(_field(path, data, "num_pairs")),
                " / ".join(f"{t:.1f} s" for t in per_pair),
                " / ".join(f"{t:.1f} s" for t in per_window),
                " / ".join(f"{x:.2f}x" for x in _field(path, data, "speedups")),
                f"{_field(path, data, 'max_abs_diff'):.1e}",
                _environment(data) + _cpu(data),
            ]
        )
    lines = _table(header, rows, left=(0, 1, 2, len(header) - 1)) + [""]
    commands = [(path.name, data["command"]) for path, data in results if data.get("command")]
    if commands:
        lines += ["Commands:", ""] + [f"- {name}: `{command}`" for name, command in commands]
        lines.append("")
    return lines


def render_pipelines(results: list[tuple[Path, dict]]) -> list[str]:
    """Markdown lines for all ``slimdiar bench --pipeline`` result files: one row each."""
    stages = [s for s in STAGE_ORDER if any(s in d.get("stages", {}) for _, d in results)]
    stages += sorted({s for _, d in results for s in d.get("stages", {})} - set(stages))
    header = [
        "file",
        "audio",
        "model",
        "embedding",
        *[f"RTF {s}" for s in stages],
        "RTF total",
        "peak RSS",
        "RSS increase",
        "windows",
        "batch",
        "environment",
    ]
    rows = []
    results = sorted(results, key=lambda item: (item[1].get("seconds", 0), item[0]))
    for path, data in results:
        run_stages = _field(path, data, "stages")
        rows.append(
            [
                path.name,
                f"{_field(path, data, 'seconds'):g} s",
                f"`{_field(path, data, 'model')}`",
                str(data.get("embedding")),
                *[f"{run_stages[s]['rtf']:.4f}" if s in run_stages else "" for s in stages],
                f"{_field(path, data, 'rtf'):.4f}",
                f"{_field(path, data, 'peak_rss_mb'):.0f} MiB",
                f"{_field(path, data, 'rss_increase_mb'):.0f} MiB",
                str(data.get("num_chunks", "")),
                str(data.get("batch_size") or "?"),
                _environment(data)
                + (", ONNX Runtime" if data.get("engine") == "onnx" else "")
                + _cpu(data),
            ]
        )
    lines = _table(header, rows, left=(0, 1, 2, 3, len(header) - 1)) + [""]
    commands = [(path.name, data["command"]) for path, data in results if data.get("command")]
    if commands:
        lines += ["Commands:", ""] + [f"- {name}: `{command}`" for name, command in commands]
        lines.append("")
    return lines


def _ratio_table(path: Path, rows: list[dict], ratio_key: str, label: str) -> list[str]:
    """Variants as rows, the speed-up at each batch size and the largest difference as columns."""
    batches = [_field(path, row, "batch_size") for row in rows]
    variants = list(_field(path, rows[0], ratio_key))
    header = [label, *[f"speed-up b={b}" for b in batches], "max abs difference"]
    table = []
    for variant in variants:
        diff = max(_field(path, row, "max_abs_diff")[variant] for row in rows)
        table.append([variant, *[f"{row[ratio_key][variant]:.2f}x" for row in rows], f"{diff:.1e}"])
    return _table(header, table)


def render_call_costs(path: Path, data: dict) -> list[str]:
    """Markdown lines for one ``tools/measure_call_costs.py`` file."""
    seconds = _field(path, data, "seconds")
    lines = [
        f"### {path.name}",
        "",
        f"{seconds:g} s windows, random weights; variants interleaved in each repeat, "
        "medians of the timed runs (`--repeats` for the backbone, 2 more for the "
        "positional conv, 4 more for the FFNs, 1 fewer per batch size, in the command's "
        f"last run of that part); {_environment(data)}. The machine is shared, so the "
        "tables give ratios of times measured side by side.",
        "",
    ]
    if "encoder" in data:
        rows = data["encoder"]
        header = [
            "model",
            "batch",
            "kept bias",
            "kept bias + FFT positional conv",
            "max abs difference",
        ]
        table = [
            [
                MODEL_LABELS.get(_field(path, r, "model"), r["model"]),
                str(_field(path, r, "batch_size")),
                f"{r['speedup_vs_plain']['bias']:.2f}x",
                f"{r['speedup_vs_plain']['bias+fft']:.2f}x",
                f"{max(r['max_abs_diff'].values()):.1e}",
            ]
            for r in rows
        ]
        lines += [
            "Backbone forward pass in eval, speed-up over the same model with both "
            "savings off (hidden states compared with it):",
            "",
        ]
        lines += _table(header, table) + [""]
    if "positional_conv" in data:
        rows = data["positional_conv"]
        lines += [
            f"Positional conv alone (Base+ and Base+ s80 share it: 768 channels, kernel "
            f"128, 16 groups; {rows[0]['frames']} frames), speed-up over the direct "
            "convolution with its weight normalised on every call:",
            "",
        ]
        lines += _ratio_table(path, rows, "speedup_vs_former", "variant") + [""]
    if "ffn_padding" in data:
        ffn = data["ffn_padding"]
        widths = ", ".join(str(w) for w in _field(path, ffn, "widths"))
        lines += [
            f"The FFNs of Base+ s80 (widths {widths}) with zero units appended, "
            "speed-up over the pruned widths:",
            "",
        ]
        lines += _ratio_table(
            path, _field(path, ffn, "rows"), "speedup_vs_pruned", "FFN widths"
        ) + [""]
    if "batch_size" in data:
        batch = data["batch_size"]
        rows = _field(path, batch, "rows")
        first = rows[0]["windows_per_s"]
        header = ["batch", "windows/s", f"throughput vs b={rows[0]['batch_size']}", "peak RSS"]
        table = [
            [
                str(r["batch_size"]),
                f"{r['windows_per_s']:.2f}",
                f"{r['windows_per_s'] / first:.2f}x",
                f"{r['peak_rss_mb']:.0f} MiB",
            ]
            for r in rows
        ]
        lines += [
            f"Segmentation (WavLM {MODEL_LABELS.get(batch['model'], batch['model'])} + "
            "Conformer) per batch size, each in a fresh process (peak RSS of that "
            "process):",
            "",
        ]
        lines += _table(header, table)
        lines += [
            "",
            "Smallest batch within 5 % of the best throughput: "
            f"{_field(path, batch, 'recommended_cpu_batch_size')}.",
            "",
        ]
    if "layouts" in data:
        header = ["operation", "precision", "batch", "former", "now", "speed-up", "max abs diff"]
        table = [
            [
                _field(path, r, "part"),
                r["dtype"],
                str(r["batch_size"]),
                f"{r['former']} {1000 * r['median_s'][r['former']]:.1f} ms",
                f"{r['now']} {1000 * r['median_s'][r['now']]:.1f} ms",
                f"{r['speedup']:.2f}x",
                f"{r['max_abs_diff']:.1e} (of {r['reference_max_abs']:.2g})",
            ]
            for r in data["layouts"]
        ]
        lines += [
            "Pipeline operations in their former and their present form, side by side "
            "(bfloat16: autocast, the ResNet trunk with bfloat16 weights):",
            "",
        ]
        lines += _table(header, table, left=(0, 1, 3, 4)) + [""]
    if data.get("command"):
        lines += [f"Command: `{data['command']}`", ""]
    return lines


def _percent(fraction: float) -> str:
    return f"{100 * fraction:.2f} %"


def render_demo_engines(path: Path, data: dict) -> list[str]:
    """Markdown lines for one ``tools/measure_demo_engines.py`` file."""
    header = [
        "model",
        "variant",
        "DER",
        "missed",
        "false alarm",
        "confusion",
        "DER change",
        "model time",
        "time vs torch float32",
        "RTTMs = torch float32",
    ]
    rows, own = [], []
    for model in _field(path, data, "models"):
        name = _field(path, model, "name")
        pruned = model.get("pruned")
        label = name if pruned is None else f"{name} ({'pruned' if pruned else 'unpruned'})"
        for v in _field(path, model, "variants"):
            rows.append(
                [
                    label,
                    str(_field(path, v, "variant")),
                    _percent(_field(path, v, "der")),
                    _percent(_field(path, v, "missed")),
                    _percent(_field(path, v, "false_alarm")),
                    _percent(_field(path, v, "confusion")),
                    f"{_field(path, v, 'der_change_points'):+.2f} pt",
                    f"{_field(path, v, 'model_s'):.1f} s",
                    f"{_field(path, v, 'model_s_ratio'):.2f}x",
                    "yes" if _field(path, v, "rttm_identical") else "no",
                ]
            )
        if model.get("demo_der") is not None:
            own.append(f"{name} {_percent(model['demo_der'])}")
    stages = " + ".join(data.get("model_stages", ["segmentation", "embeddings"]))
    scored = "over the UEM" if data.get("uem") else "over each reference's extent"
    environment = _environment(data) + _cpu(data)
    if data.get("onnxruntime"):
        environment += f", ONNX Runtime {data['onnxruntime']}"
    sentences = [
        f"The demo's test set (`{_field(path, data, 'test_set')}`: "
        f"{_field(path, data, 'num_recordings')} recordings, "
        f"{_field(path, data, 'audio_s'):.0f} s) diarized by each model with its saved "
        f"pipeline settings and the demo's window step of {_field(path, data, 'step_s'):g} s, "
        f"{data.get('embedding', '?')} embeddings.",
        f"In the ONNX variant ONNX Runtime runs {data.get('onnx_models', 'the models')}.",
        f"DER at collar {data.get('collar_s', 0.0):g} s {scored}, as `slimdiar score` "
        "computes it; missed, false alarm and confusion are shares of the reference speech, "
        "the DER change is in percentage points; a time ratio below 1 is faster.",
        f"Model time: the pipeline's seconds in {stages}, summed over the recordings, median "
        f"of {data.get('repeats', '?')} interleaved rounds after a warm-up; {environment}.",
    ]
    lines = [f"### {path.name}", "", " ".join(sentences), ""]
    lines += _table(header, rows, left=(0, 1)) + [""]
    if own:
        lines += [f"The demo's own test DER (`der.json`): {', '.join(own)}.", ""]
    if data.get("command"):
        lines += [f"Command: `{data['command']}`", ""]
    return lines


def render_profile(path: Path) -> list[str]:
    """Markdown lines for one ``tools/profile_backbones.py`` file: milliseconds per model part."""
    data = _read_json(path)
    models = _field(path, data, "models")
    header = ["part", *[f"{MODEL_LABELS.get(name, name)} ms" for name in models]]
    rows = []
    for key, label in PROFILE_PARTS.items():
        for name, parts in models.items():
            if key not in parts:
                raise ResultError(f"{path}: model {name!r} has no {key!r}")
        rows.append([label, *[f"{parts[key]:.0f}" for parts in models.values()]])
    return _table(header, rows) + [
        "",
        f"One forward pass of {_field(path, data, 'seconds'):g} s at batch 1; "
        f"{data.get('threads', '?')} threads, torch {data.get('torch', '?')} "
        f"(`{path.name}`).",
    ]


def render_op_profile(path: Path) -> list[str]:
    """Markdown lines for one ``tools/profile_ops.py`` file: milliseconds per kind of operation.

    One column pair per batch size (the first model, the second, and their ratio): the ratio of a
    kind against the MAC ratio shows what pruning shrinks less than its MACs.
    """
    data = _read_json(path)
    runs = _field(path, data, "runs")
    sizes = list(dict.fromkeys(run["batch_size"] for run in runs))
    models = list(dict.fromkeys(run["model"] for run in runs))
    if len(models) != 2:
        raise ResultError(f"{path}: the op profile compares two models, it has {len(models)}")
    by = {(run["model"], run["batch_size"]): run for run in runs}
    full, pruned = (MODEL_LABELS.get(name, name) for name in models)
    header = ["kind of operation"]
    for size in sizes:
        header += [f"{full} b={size} ms", f"{pruned} b={size} ms", f"ratio b={size}"]
    kinds = list(by[(models[0], sizes[0])]["kinds_ms"])

    def cells(key) -> list[str]:
        row = []
        for size in sizes:
            a, b = (key(by[(model, size)]) for model in models)
            row += [f"{a:.0f}", f"{b:.0f}", f"{a / b:.1f}×" if b > 0 else ""]
        return row

    rows = [[kind, *cells(lambda run, kind=kind: run["kinds_ms"][kind])] for kind in kinds]
    rows.append(["all (profiled)", *cells(lambda run: run["profiled_ms"])])
    rows.append(["all (unprofiled pass)", *cells(lambda run: run["wall_ms"])])
    first = by[(models[0], sizes[0])]
    second = by[(models[1], sizes[0])]
    macs = first["macs_per_second"] / second["macs_per_second"]
    return _table(header, rows) + [
        "",
        f"Self time of the operators of one profiled forward pass of "
        f"{_field(path, data, 'seconds'):g} s per input, summed by kind, after a warm-up; the "
        f"last row is a pass without the profiler. MAC ratio {full} / {pruned}: {macs:.1f}×. "
        f"{data.get('threads', '?')} threads, torch {data.get('torch', '?')}{_cpu(data)} "
        f"(`{path.name}`; `{data.get('command', '?')}`).",
    ]


def fill_profiles(text: str, results_dir: Path) -> str:
    """``text`` with each ``<!-- backbone-profile: FILE -->`` or ``op-profile`` line as its table."""
    text = PROFILE_MARKER.sub(
        lambda match: "\n".join(render_profile(results_dir / match.group(1))), text
    )
    return OP_PROFILE_MARKER.sub(
        lambda match: "\n".join(render_op_profile(results_dir / match.group(1))), text
    )


#: The files of the targets section (docs/results/...), by role.
TARGET_FILES = {
    "pipeline": [
        "pipeline-s80-resnet34-600s.json",
        "pipeline-s80-resnet34-600s-bf16.json",
        "pipeline-s80-resnet34-600s-onnx.json",
        "pipeline-s80-resnet34-600s-avx2.json",
        "pipeline-s80-resnet34-600s-onnx-avx2.json",
        "pipeline-s80-resnet34-600s-epyc.json",
        "pipeline-s80-resnet34-600s-bf16-epyc.json",
    ],
    "hour": [
        "pipeline-s80-resnet34-3600s.json",
        "pipeline-s80-resnet34-3600s-bf16.json",
        "pipeline-s80-resnet34-3600s-onnx.json",
    ],
    "backbones": [
        "backbone-targets-base-plus-precision.json",
        "backbone-targets-base-plus-weights.json",
        "onnx/targets-base-plus-engines.json",
        "onnx/targets-base-plus-engines-avx2.json",
        "onnx/targets-base-plus-engines-avx2-unsliced.json",
        "backbone-targets-base-plus-precision-epyc.json",
        "onnx/targets-base-plus-engines-epyc.json",
    ],
}
FULL, PRUNED = "wavlm-base-plus", "wavlm-base-plus-s80"


def _in_turns(data: dict) -> bool:
    """Whether a backbone file timed its models in turns (every model keeps its rounds)."""
    return bool(data.get("models")) and all(m.get("times_s") for m in data["models"])


def _timing(data: dict) -> str:
    """How a backbone file was timed: rounds in turns (files with ``times_s``) or runs."""
    repeats, warmup = data.get("repeats", "?"), data.get("warmup", "?")
    if _in_turns(data):
        return (
            f"medians of {repeats} rounds after {warmup} warm-up rounds, every model once per "
            "round in turns (speed-ups: medians of the per-round ratios)"
        )
    return f"medians of {repeats} runs after {warmup} warm-up runs"


def _speedup(slower: dict, faster: dict, batch: bool) -> float:
    """``slower``'s time over ``faster``'s, at batch 1 or at the file's batch size.

    The median of the per-round ratios where both models were timed in the same rounds (files
    that keep ``times_s``), else the ratio of the medians.
    """
    times, latency = ("times_batch_s", "latency_batch_s") if batch else ("times_s", "latency_s")
    a, b = slower.get(times), faster.get(times)
    if a and b and len(a) == len(b):
        return statistics.median(x / y for x, y in zip(a, b, strict=True))
    return slower[latency] / faster[latency]


def _verdict(value: float, limit: float, at_most: bool) -> str:
    return "met" if (value <= limit if at_most else value >= limit) else "missed"


def render_targets(results_dir: Path) -> list[str]:
    """The performance targets on this machine, checked from the target files that exist."""

    def read(name: str) -> dict | None:
        path = results_dir / name
        return json.loads(path.read_text()) if path.is_file() else None

    def machine(data: dict) -> str:
        if "cpu_capability" not in data:
            return "?"
        flags = ", ".join(data.get("cpu_bf16_flags") or [])
        return f"{data['cpu_capability']}" + (f" ({flags})" if flags else "")

    rows: list[list[str]] = []
    for name in TARGET_FILES["pipeline"]:
        data = read(name)
        if data is None:
            continue
        stages = data["stages"]
        split = ", ".join(
            f"{stage} {100 * stages[stage]['seconds'] / data['total_s']:.0f} %"
            for stage in ("segmentation", "embeddings")
        )
        rows.append(
            [
                "whole pipeline, Base+ s80 + ResNet34, paper windows, 10 min: RTF ≤ 0.25",
                f"{data['rtf']:.3f} ({data.get('engine', 'torch')} {data['dtype']}; time: {split})",
                _verdict(data["rtf"], 0.25, at_most=True),
                machine(data),
                f"`{name}`",
            ]
        )
    for name in TARGET_FILES["backbones"]:
        data = read(name)
        if data is None:
            continue
        models = data["models"]
        groups = sorted({(m.get("engine") or "torch", m["dtype"]) for m in models})
        for engine, dtype in groups:
            same = {
                m["name"]: m
                for m in models
                if (m.get("engine") or "torch", m["dtype"]) == (engine, dtype)
            }
            if FULL in same and PRUNED in same:
                b1 = _speedup(same[FULL], same[PRUNED], batch=False)
                bn = _speedup(same[FULL], same[PRUNED], batch=True)
                mode = same[PRUNED].get("precision_mode")
                path = f"{engine} {dtype}" + (f", {mode}" if mode else "")
                rows.append(
                    [
                        f"backbone Base+ s80 vs Base+, same engine ({path}): ≥ 6×",
                        f"{b1:.2f}× b=1, {bn:.2f}× b={data['batch_size']}",
                        _verdict(min(b1, bn), 6.0, at_most=False),
                        machine(data),
                        f"`{name}`",
                    ]
                )
        eager = [
            m
            for m in models
            if m["name"] == FULL
            and (m.get("engine") or "torch") == "torch"
            and m["dtype"] == "float32"
        ]
        pruned = [m for m in models if m["name"] == PRUNED]
        if eager and pruned:
            fastest = max(pruned, key=lambda m: _speedup(eager[0], m, batch=False))
            b1 = _speedup(eager[0], fastest, batch=False)
            fastest_n = max(pruned, key=lambda m: _speedup(eager[0], m, batch=True))
            bn = _speedup(eager[0], fastest_n, batch=True)
            label = lambda m: " ".join(  # noqa: E731
                [m.get("engine") or "torch", m["dtype"]]
                + ([f"({m['precision_mode']})"] if m.get("precision_mode") else [])
            )
            rows.append(
                [
                    "fastest Base+ s80 path vs Base+ float32 eager: ≥ 10×",
                    f"{b1:.2f}× b=1 ({label(fastest)}), {bn:.2f}× b={data['batch_size']} "
                    f"({label(fastest_n)})",
                    _verdict(min(b1, bn), 10.0, at_most=False),
                    machine(data),
                    f"`{name}`",
                ]
            )
    hour = [(name, read(name)) for name in TARGET_FILES["hour"]]
    hour = [(name, data) for name, data in hour if data is not None]
    for name, data in hour:
        rows.append(
            [
                "peak RSS of the pipeline on 1 h: ≤ 1.5 GB",
                f"{data['peak_rss_mb']:.0f} MiB ({data.get('engine', 'torch')} {data['dtype']}; "
                f"RTF {data['rtf']:.3f})",
                _verdict(data["peak_rss_mb"] * 2**20, 1.5e9, at_most=True),
                machine(data),
                f"`{name}`",
            ]
        )
    if not rows:
        return []
    if not hour:
        ten = [read(name) for name in TARGET_FILES["pipeline"]]
        peaks = ", ".join(f"{d['peak_rss_mb']:.0f} MiB ({d['dtype']})" for d in ten if d)
        rows.append(
            [
                "peak RSS of the pipeline on 1 h: ≤ 1.5 GB",
                f"not measured on 1 h; on 10 min: {peaks or 'not measured'}",
                "not measured",
                "",
                "",
            ]
        )
    return [
        "## Targets, per machine",
        "",
        "Each ratio is measured side by side in one run (one file), 2 threads; random weights; "
        "the commands are in the sections below. CPU: torch's vector capability and the "
        "processor's native bfloat16 flags (AMX or AVX-512-BF16) of the machine that measured it; "
        "files ending in `-epyc` come from an earlier machine (AMD EPYC, AVX-512-BF16 without "
        "AMX, which recorded no flags) and an earlier version of the pipeline (batch 16, before "
        "the layout changes of the notes); files ending in `-avx2` from an AMD EPYC on which "
        "torch reports AVX2 and no native bfloat16, timed with the models in turns (the "
        "ratios are medians of per-round ratios); `-unsliced` before WavLM ran large CPU "
        "batches in slices of 4.",
        "",
        *_table(["target", "measured", "", "CPU", "file"], rows, left=(0, 1, 2, 3, 4)),
        "",
    ]


def render(results_dir: Path, notes: Path | None) -> tuple[str, list[str]]:
    """The text of docs/benchmarks.md and the messages about skipped files."""
    backbones, pipelines, skipped = load_results(results_dir)
    lines = [
        f"<!-- Generated by `{GENERATED_BY}` from {results_dir.as_posix()}/*.json. Do not edit: "
        f"change the results or {notes.as_posix() if notes else 'the notes file'}. -->",
        "",
        "# Benchmarks",
        "",
        "Real-time factor (RTF) = processing time / audio duration; lower is faster.",
        "",
        *render_targets(results_dir),
        "## Backbones",
        "",
    ]
    engines = [(path, data) for path, data in backbones if _several_engines(data)]
    backbones = [(path, data) for path, data in backbones if not _several_engines(data)]
    if backbones:
        for path, data in backbones:
            several = isinstance(data.get("dtypes"), list) and len(data["dtypes"]) > 1
            lines += (render_precisions if several else render_backbones)(path, data)
    else:
        lines += ["No backbone results yet (`slimdiar bench MODEL... --json FILE`).", ""]
    if engines:
        lines += ["## Backbones in two engines: torch and ONNX Runtime", ""]
        for path, data in engines:
            lines += render_engines(path, data, results_dir)
    embeddings = [(path, data) for path, data in pipelines if data.get("mode") == "embeddings"]
    call_costs = [(path, data) for path, data in pipelines if data.get("mode") == "call-costs"]
    demo_engines = [(p, d) for p, d in pipelines if d.get("mode") == "demo-engines"]
    pipelines = [(path, data) for path, data in pipelines if data.get("mode") == "pipeline"]
    lines += ["## Diarization pipeline", ""]
    if pipelines:
        lines += render_pipelines(pipelines)
    else:
        lines += ["No pipeline results yet (`slimdiar bench --pipeline CKPT --json FILE`).", ""]
    if embeddings:
        lines += [
            "### Embedding stage: one ResNet pass per window against one per (window, speaker)",
            "",
        ]
        lines += render_embeddings(embeddings)
    if demo_engines:
        lines += ["## The demo's DER per engine and precision", ""]
        for path, data in demo_engines:
            lines += render_demo_engines(path, data)
    if call_costs:
        lines += ["## Per-call costs that MACs do not count", ""]
        for path, data in call_costs:
            lines += render_call_costs(path, data)
    text = "\n".join(lines)
    if notes is not None:
        if not notes.is_file():
            raise ResultError(f"{notes}: no such notes file")
        text += "\n" + fill_profiles(notes.read_text(), results_dir)
    return text.rstrip("\n") + "\n", skipped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--results",
        type=Path,
        default=Path("docs/results"),
        help="folder of result JSON files (default: docs/results)",
    )
    parser.add_argument(
        "--notes",
        type=Path,
        default=Path("docs/benchmarks-notes.md"),
        help="hand-written Markdown appended verbatim (default: docs/benchmarks-notes.md)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("docs/benchmarks.md"),
        help="Markdown file to write (default: docs/benchmarks.md)",
    )
    args = parser.parse_args(argv)
    if not args.results.is_dir():
        print(f"render_benchmarks: error: {args.results}: no such folder", file=sys.stderr)
        return 1
    try:
        text, skipped = render(args.results, args.notes)
    except ResultError as error:
        print(f"render_benchmarks: error: {error}", file=sys.stderr)
        return 1
    for message in skipped:
        print(f"render_benchmarks: {message}", file=sys.stderr)
    write_text_atomic(args.out, text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
