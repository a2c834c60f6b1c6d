"""Where a backbone's time goes, by kind of operation: a torch profile of one forward pass.

Usage::

    python tools/profile_ops.py --out docs/results/profiles/op-profile-avx2.json

For each model (default: Base+ and Base+ s80, random weights) and each batch size (default 1 and
32), 8 s of audio: warm-up passes, then one profiled pass (``torch.profiler``, CPU). The self time
of every operator is summed into a few kinds (linear layers, convolutions, attention, GELU,
normalisations, element-wise adds and products, copies, FFT, the rest), so that a speed-up below
the MAC ratio shows which kinds pruning shrinks less than the MACs. ``tools/render_benchmarks.py``
renders the file where docs/benchmarks-notes.md holds ``<!-- op-profile: FILE -->``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections import defaultdict

import torch

from slimdiar.fileio import write_json_atomic
from slimdiar.frames import SAMPLE_RATE
from slimdiar.models import WavLM

#: Operator-name prefixes of each kind, first match wins; anything else is "other".
KINDS = {
    "linear layers": ("aten::addmm", "aten::mm", "aten::bmm", "aten::baddbmm"),
    "convolutions": ("aten::mkldnn_convolution", "aten::convolution", "aten::_convolution"),
    "attention": ("aten::_scaled_dot_product",),
    "GELU": ("aten::gelu",),
    "normalisations": ("aten::native_layer_norm", "aten::native_group_norm"),
    "element-wise add, mul": ("aten::add", "aten::mul", "aten::sub", "aten::div"),
    "copies (bias broadcast, layouts)": ("aten::copy_", "aten::clone", "aten::contiguous"),
    "FFT": ("aten::_fft",),
}


def kind_of(name: str) -> str:
    """The kind of the operator called ``name``."""
    for kind, prefixes in KINDS.items():
        if name.startswith(prefixes):
            return kind
    return "other"


def profile(name: str, batch_size: int, seconds: float, warmup: int) -> dict:
    """Milliseconds per kind (and in all) of one profiled forward pass of preset ``name``."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    model = WavLM.from_preset(name).eval()
    waveforms = torch.randn(
        batch_size, int(seconds * SAMPLE_RATE), generator=torch.Generator().manual_seed(0)
    )
    with torch.inference_mode():
        for _ in range(warmup):
            model(waveforms)
        start = time.perf_counter()
        model(waveforms)
        wall = time.perf_counter() - start
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            model(waveforms)
    kinds: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        kinds[kind_of(event.key)] += event.self_cpu_time_total / 1000.0
    return {
        "batch_size": batch_size,
        "macs_per_second": model.macs(1.0),
        "wall_ms": 1000.0 * wall,
        "profiled_ms": sum(kinds.values()),
        "kinds_ms": {kind: kinds.get(kind, 0.0) for kind in [*KINDS, "other"]},
    }


def main(argv: list[str] | None = None) -> int:
    """Profile the models at each batch size and write the JSON file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--models", nargs="+", default=["wavlm-base-plus", "wavlm-base-plus-s80"])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from slimdiar.models.precision import cpu_facts

    runs = []
    for batch_size in args.batch_sizes:
        for name in args.models:
            result = {"model": name, **profile(name, batch_size, args.seconds, args.warmup)}
            print(name, f"batch {batch_size}:", f"{result['profiled_ms']:.0f} ms profiled")
            runs.append(result)
    write_json_atomic(
        args.out,
        {
            "seconds": args.seconds,
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            **cpu_facts(),
            "runs": runs,
            "command": shlex.join(
                ["python", "tools/profile_ops.py", *(sys.argv[1:] if argv is None else argv)]
            ),
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
