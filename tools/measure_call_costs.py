"""Measure the per-call costs of WavLM that MAC counts do not see, and what removes them.

Usage::

    OMP_NUM_THREADS=2 python tools/measure_call_costs.py --out docs/results/call-costs.json

Five measurements, random weights, 8 s windows, threads pinned (``--threads``, default 2):

1. ``encoder``: one backbone forward pass of Base+ (batch 1) and Base+ s80 (batch 1 and 8) with the
   eval-mode savings off (``plain``), with the kept relative position bias only (``bias``) and
   with the FFT positional conv as well (``bias+fft``, the default), plus the largest absolute
   difference of the hidden states from ``plain``;
2. ``positional_conv``: the positional conv alone (Base+ and s80 share its shape) computed
   directly with the weight normalisation on every call (the former path), directly with the
   weight folded once, as unfold + batched matmul, and through the FFT with the kernel spectrum
   kept (the default in eval), each with its largest difference from the first;
3. ``ffn_padding``: the FFNs of Base+ s80 at their pruned widths against the same FFNs with
   zero units appended up to a multiple of 8, 16 and 32 (the same outputs);
4. ``batch_size``: segmentation (WavLM Base+ s80 + Conformer) throughput and peak resident
   memory for batch sizes 1-32, each batch size in a fresh process (peak RSS is per process).
5. ``layouts``: the Conformer self-attention, the EEND layer sum and the ResNet34 trunk in
   their former form and the present one, in float32 and bfloat16 (see ``measure_layouts``).

Each variant runs once to compare its output (which warms it up), then the variants of one
measurement run round-robin inside each repeat, so that load from other work on
the machine falls on all of them alike; the file records medians and the ratios of medians.
``tools/render_benchmarks.py`` turns the file into the per-call cost tables of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from slimdiar.bench.backbone import environment
from slimdiar.fileio import write_json_atomic
from slimdiar.frames import SAMPLE_RATE
from slimdiar.models import WavLM
from slimdiar.models.wavlm.components import FeedForward, PositionalConv

SEGMENTATION_MODEL = "wavlm-base-plus-s80"
#: The measurements, in the order they run (``--only`` picks some).
MEASUREMENTS = ("encoder", "positional_conv", "ffn_padding", "batch_size", "layouts")
BATCH_SIZES = (1, 4, 8, 16, 32)
PAD_MULTIPLES = (8, 16, 32)


def round_robin(
    variants: dict[str, Callable[[], object]], warmup: int, repeats: int
) -> dict[str, float]:
    """Median seconds of each variant, the variants interleaved within every repeat."""
    for run in variants.values():
        for _ in range(warmup):
            run()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, run in variants.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def _max_diff(a, b) -> float:
    if isinstance(a, list):
        return max(_max_diff(x, y) for x, y in zip(a, b))
    return float((a - b).abs().max())


# ---------------------------------------------------------------------- 1. encoder
def _switched(model: WavLM, bias: bool, fft: bool) -> Callable:
    def run(waveforms):
        model.encoder.cache_position_bias = bias
        model.encoder.pos_conv.use_fft = fft
        with torch.inference_mode():
            return model(waveforms)

    return run


def measure_encoder(
    seconds: float, batch_sizes: dict[str, list[int]], warmup: int, repeats: int
) -> list:
    """Measurement 1: backbone forward passes with the eval-mode savings off and on."""
    rows = []
    for name, sizes in batch_sizes.items():
        torch.manual_seed(0)
        model = WavLM.from_preset(name).eval()
        settings = {"plain": (False, False), "bias": (True, False), "bias+fft": (True, True)}
        for batch in sizes:
            waveforms = torch.randn(batch, int(seconds * SAMPLE_RATE))
            runs = {label: _switched(model, *flags) for label, flags in settings.items()}
            reference = runs["plain"](waveforms)
            diffs = {label: _max_diff(run(waveforms), reference) for label, run in runs.items()}
            medians = round_robin(
                {label: (lambda run=run, w=waveforms: run(w)) for label, run in runs.items()},
                warmup,
                repeats,
            )
            rows.append(
                {
                    "model": name,
                    "batch_size": batch,
                    "median_s": medians,
                    "speedup_vs_plain": {k: medians["plain"] / v for k, v in medians.items()},
                    "max_abs_diff": diffs,
                }
            )
            print(
                f"encoder {name} b={batch}: "
                + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in medians.items()),
                file=sys.stderr,
            )
        del model.encoder.cache_position_bias, model.encoder.pos_conv.use_fft
    return rows


# ---------------------------------------------------------------------- 2. positional conv
def _direct(conv: PositionalConv, weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    k = conv.kernel_size
    y = F.conv1d(x.transpose(1, 2), weight, conv.bias, padding=k // 2, groups=conv.groups)
    return F.gelu(y[:, :, :-1] if k % 2 == 0 else y).transpose(1, 2)


def _unfold_bmm(conv: PositionalConv, weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The grouped convolution as one batched matmul per input (columns of ``k`` frames)."""
    _, frames, E = x.shape
    groups, k = conv.groups, conv.kernel_size
    channels = E // groups
    matrix = weight.reshape(groups, channels, channels * k)
    outputs = []
    for item in x:  # (T, E)
        padded = F.pad(item.t(), (k // 2, k // 2))  # (E, T + 2p)
        columns = padded.unfold(1, k, 1)[:, :frames]  # (E, T, k)
        columns = columns.reshape(groups, channels, frames, k).transpose(2, 3)
        outputs.append(torch.bmm(matrix, columns.reshape(groups, channels * k, frames)))
    y = torch.stack(outputs).reshape(len(x), E, frames) + conv.bias[None, :, None]
    return F.gelu(y).transpose(1, 2)


def measure_positional_conv(
    seconds: float, batch_sizes: list[int], warmup: int, repeats: int
) -> list:
    """Measurement 2: the positional conv computed four ways."""
    torch.manual_seed(0)
    model = WavLM.from_preset("wavlm-base-plus")
    conv = model.encoder.pos_conv.eval()
    frames = model.config.conv_lengths(int(seconds * SAMPLE_RATE))[-1]
    rows = []
    with torch.inference_mode():
        folded = conv.weight()

        def normalised_every_call(x):
            return _direct(conv, conv.weight(), x)

        for batch in batch_sizes:
            x = torch.randn(batch, frames, model.config.embed_dim)
            variants = {
                "direct, weight norm per call": lambda x=x: normalised_every_call(x),
                "direct, folded weight": lambda x=x: _direct(conv, folded, x),
                "unfold + bmm": lambda x=x: _unfold_bmm(conv, folded, x),
                "fft, kept spectrum": lambda x=x: conv(x),
            }
            reference = normalised_every_call(x)
            diffs = {label: _max_diff(run(), reference) for label, run in variants.items()}
            medians = round_robin(variants, warmup, repeats)
            first = medians["direct, weight norm per call"]
            rows.append(
                {
                    "batch_size": batch,
                    "frames": frames,
                    "median_s": medians,
                    "speedup_vs_former": {k: first / v for k, v in medians.items()},
                    "max_abs_diff": diffs,
                }
            )
            print(
                f"positional conv b={batch}: "
                + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in medians.items()),
                file=sys.stderr,
            )
    return rows


# ---------------------------------------------------------------------- 3. FFN padding
def _padded(ffn: FeedForward, multiple: int) -> FeedForward:
    """``ffn`` with zero units appended up to a multiple of ``multiple`` (same outputs)."""
    width = ffn.num_units
    target = -(-width // multiple) * multiple
    embed_dim = ffn.output_dense.out_features
    padded = FeedForward(embed_dim, target).eval()
    with torch.no_grad():
        for dense in (padded.intermediate_dense, padded.output_dense):
            dense.weight.zero_()
            dense.bias.zero_()
        padded.intermediate_dense.weight[:width] = ffn.intermediate_dense.weight
        padded.intermediate_dense.bias[:width] = ffn.intermediate_dense.bias
        padded.output_dense.weight[:, :width] = ffn.output_dense.weight
        padded.output_dense.bias.copy_(ffn.output_dense.bias)
    return padded


def measure_ffn_padding(seconds: float, batch_sizes: list[int], warmup: int, repeats: int) -> dict:
    """Measurement 3: Base+ s80's FFNs at their pruned widths and zero-padded."""
    torch.manual_seed(0)
    model = WavLM.from_preset(SEGMENTATION_MODEL).eval()
    ffns = [layer.feed_forward for layer in model.encoder.layers if layer.feed_forward]
    frames = model.config.conv_lengths(int(seconds * SAMPLE_RATE))[-1]
    versions = {"pruned widths": ffns}
    versions.update({f"padded to {m}": [_padded(f, m) for f in ffns] for m in PAD_MULTIPLES})
    rows = []
    with torch.inference_mode():
        for batch in batch_sizes:
            x = torch.randn(batch, frames, model.config.embed_dim)
            variants = {
                label: (lambda stack=stack, x=x: [f(x) for f in stack])
                for label, stack in versions.items()
            }
            reference = variants["pruned widths"]()
            diffs = {label: _max_diff(run(), reference) for label, run in variants.items()}
            medians = round_robin(variants, warmup, repeats)
            first = medians["pruned widths"]
            rows.append(
                {
                    "batch_size": batch,
                    "frames": frames,
                    "median_s": medians,
                    "speedup_vs_pruned": {k: first / v for k, v in medians.items()},
                    "max_abs_diff": diffs,
                }
            )
            print(
                f"ffn padding b={batch}: "
                + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in medians.items()),
                file=sys.stderr,
            )
    return {"widths": [f.num_units for f in ffns], "rows": rows}


# ---------------------------------------------------------------------- 5. pipeline layouts
def _resnet_trunk_contiguous(resnet, fbank: torch.Tensor) -> torch.Tensor:
    """The ResNet trunk on a plain (not channels-last) input: the former layout."""
    x = fbank.transpose(1, 2)[:, None].to(resnet.conv1.weight.dtype)
    x = F.relu(resnet.bn1(resnet.conv1(x)))
    return resnet.layer4(resnet.layer3(resnet.layer2(resnet.layer1(x)))).flatten(1, 2)


def _autocast(dtype: torch.dtype):
    return torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32)


def measure_layouts(
    seconds: float, batch_sizes: list[int], warmup: int, repeats: int
) -> list[dict]:
    """Measurement 5: three pipeline operations in their former and their present form.

    - the Conformer self-attention (paper head: d 256, 4 heads) through
      ``nn.MultiheadAttention`` against the batch-first path
      (:meth:`slimdiar.models.conformer.SelfAttention._attend`);
    - the EEND layer sum of Base+ s80's 13 hidden states as a ``Linear(L+1 -> 1)`` over the
      stacked states against the state-by-state sum (:meth:`EEND.combine_layers`);
    - the WeSpeaker ResNet34 trunk on a plain input against a channels-last one
      (:meth:`slimdiar.models.embeddings.resnet.ResNet.forward_frames`);

    each in float32 and in bfloat16 (autocast, as ``--dtype bfloat16``; the ResNet trunk with
    bfloat16 weights, as the pipeline runs it).
    """
    from slimdiar.models.conformer import SelfAttention
    from slimdiar.models.eend import EEND, EENDConfig
    from slimdiar.models.embeddings.resnet import ResNetEmbedding, input_features
    from slimdiar.models.wavlm.config import preset

    torch.manual_seed(0)
    samples = int(seconds * SAMPLE_RATE)
    config = preset(SEGMENTATION_MODEL)
    frames = config.conv_lengths(samples)[-1]
    attention = SelfAttention(d_model=256, num_heads=4, dropout=0.1).eval()
    eend = EEND(EENDConfig(wavlm=config)).eval()
    weight = eend.weight_sum.weight
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        resnet = ResNetEmbedding().eval().set_compute_dtype(dtype).resnet
        for batch in batch_sizes:
            # the Conformer's residual stream is bfloat16 under autocast (its Linear outputs),
            # and so is what its LayerNorm hands the attention
            x = torch.randn(batch, frames, 256).to(dtype)
            states = [
                torch.randn(batch, frames, config.embed_dim).to(dtype)
                for _ in range(config.num_layers + 1)
            ]
            fbank = input_features(torch.randn(batch, samples) * 0.1, resnet.config)
            parts = {
                "conformer self-attention": {
                    "nn.MultiheadAttention": lambda x=x: attention.attention(
                        x, x, x, need_weights=False
                    )[0],
                    "batch-first": lambda x=x: attention._attend(x, None),
                },
                "layer sum of 13 states": {
                    "Linear over stacked states": lambda s=states: F.linear(
                        torch.stack(s, dim=-1), weight
                    ).squeeze(-1),
                    "state by state": lambda s=states: eend.combine_layers(s),
                },
                "ResNet34 trunk": {
                    "plain input": lambda f=fbank: _resnet_trunk_contiguous(resnet, f),
                    "channels last": lambda f=fbank: resnet.forward_frames(f),
                },
            }
            for part, variants in parts.items():
                former, now = list(variants)
                with torch.inference_mode(), _autocast(dtype):
                    reference = variants[former]().float()
                    diff = _max_diff(variants[now]().float(), reference)
                    medians = round_robin(variants, warmup, repeats)
                rows.append(
                    {
                        "part": part,
                        "dtype": str(dtype).replace("torch.", ""),
                        "batch_size": batch,
                        "former": former,
                        "now": now,
                        "median_s": medians,
                        "speedup": medians[former] / medians[now],
                        "max_abs_diff": diff,
                        "reference_max_abs": float(reference.abs().max()),
                    }
                )
                print(
                    f"{part} {dtype} b={batch}: {former} {medians[former] * 1000:.0f} ms, "
                    f"{now} {medians[now] * 1000:.0f} ms",
                    file=sys.stderr,
                )
    return rows


# ---------------------------------------------------------------------- 4. batch size
def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def batch_child(batch: int, seconds: float, repeats: int, threads: int) -> dict:
    """Run in a fresh process: segmentation windows per second and peak RSS at ``batch``.

    One warm-up window, then ``repeats`` timed batches (the peak RSS includes them).
    """
    from slimdiar.models.eend import EEND, EENDConfig
    from slimdiar.models.wavlm.config import preset

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = EEND(EENDConfig(wavlm=preset(SEGMENTATION_MODEL))).eval()
    waveforms = torch.randn(batch, int(seconds * SAMPLE_RATE))
    before = _peak_rss_mb()
    times = []
    with torch.inference_mode():
        model(waveforms[:1])  # warm-up
        for _ in range(repeats):
            start = time.perf_counter()
            model(waveforms)
            times.append(time.perf_counter() - start)
    latency = statistics.median(times)
    return {
        "batch_size": batch,
        "median_s": latency,
        "windows_per_s": batch / latency,
        "peak_rss_mb": _peak_rss_mb(),
        "rss_before_mb": before,
    }


def measure_batch_sizes(seconds: float, batch_sizes: list[int], repeats: int, threads: int) -> dict:
    """Measurement 4: segmentation throughput and peak RSS per batch size, a process each."""
    rows = []
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    for batch in batch_sizes:
        command = [
            sys.executable,
            __file__,
            "--child-batch",
            str(batch),
            "--seconds",
            str(seconds),
            "--repeats",
            str(repeats),
            "--threads",
            str(threads),
        ]
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        if done.returncode != 0:
            raise RuntimeError(
                f"batch size {batch}: the measuring process failed:\n{done.stderr[-2000:]}"
            )
        row = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(
            f"segmentation b={batch}: {row['windows_per_s']:.2f} windows/s, "
            f"peak RSS {row['peak_rss_mb']:.0f} MiB",
            file=sys.stderr,
        )
    best = max(row["windows_per_s"] for row in rows)
    # The smallest batch within 5 % of the best throughput: the memory beyond it buys nothing.
    chosen = min(row["batch_size"] for row in rows if row["windows_per_s"] >= 0.95 * best)
    return {"model": SEGMENTATION_MODEL, "rows": rows, "recommended_cpu_batch_size": chosen}


def main(argv: list[str] | None = None) -> int:
    """Run the chosen measurements and write the result file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/results/call-costs.json"))
    parser.add_argument("--seconds", type=float, default=8.0, help="window length (default 8)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per variant")
    parser.add_argument(
        "--warmup",
        type=int,
        default=0,
        help="untimed runs per variant besides the one that compares its output (default 0)",
    )
    parser.add_argument(
        "--batch-sizes",
        type=int,
        nargs="+",
        default=[1, 8],
        help="batch sizes of measurements 1-3 (default 1 8)",
    )
    parser.add_argument(
        "--base-plus-batch-sizes",
        type=int,
        nargs="+",
        default=[1],
        help="batch sizes of Base+ in measurement 1 (default 1; Base+ s80 takes --batch-sizes)",
    )
    parser.add_argument(
        "--segmentation-batch-sizes",
        type=int,
        nargs="+",
        default=list(BATCH_SIZES),
        help="batch sizes of measurement 4",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=MEASUREMENTS,
        help="run only these measurements (the others are kept from --out)",
    )
    parser.add_argument("--child-batch", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_batch is not None:
        print(json.dumps(batch_child(args.child_batch, args.seconds, args.repeats, args.threads)))
        return 0
    torch.set_num_threads(args.threads)
    chosen = set(args.only or MEASUREMENTS)
    result = json.loads(args.out.read_text()) if args.only and args.out.is_file() else {}
    started = time.perf_counter()
    if "encoder" in chosen:
        sizes = {
            "wavlm-base-plus": args.base_plus_batch_sizes,
            "wavlm-base-plus-s80": args.batch_sizes,
        }
        result["encoder"] = measure_encoder(args.seconds, sizes, args.warmup, args.repeats)
    if "positional_conv" in chosen:
        result["positional_conv"] = measure_positional_conv(
            args.seconds, args.batch_sizes, args.warmup, args.repeats + 2
        )
    if "ffn_padding" in chosen:
        result["ffn_padding"] = measure_ffn_padding(
            args.seconds, args.batch_sizes, args.warmup, args.repeats + 4
        )
    if "batch_size" in chosen:
        result["batch_size"] = measure_batch_sizes(
            args.seconds, args.segmentation_batch_sizes, max(1, args.repeats - 1), args.threads
        )
    if "layouts" in chosen:
        result["layouts"] = measure_layouts(
            args.seconds, args.batch_sizes, args.warmup, args.repeats
        )
    command = "OMP_NUM_THREADS=2 python tools/measure_call_costs.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    if args.only and result.get("command"):  # a re-run of some measurements
        command = f"{result['command']}, then {command}"
    result.update(
        {
            "mode": "call-costs",
            "seconds": args.seconds,
            "repeats": args.repeats,
            "warmup": args.warmup,
            **environment("cpu", torch.float32),
            "command": command,
            "wall_s": round(time.perf_counter() - started + result.get("wall_s", 0.0), 1),
        }
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out, result)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
