"""Time each part of WavLM backbones (forward hooks), to explain speed-ups that MACs do not.

Usage::

    python tools/profile_backbones.py --out docs/results/profiles/backbone-profile.json

One forward pass of 8 s at batch 1 per preset, random weights, median of 3 after a warm-up.
``tools/render_benchmarks.py`` turns the file into the profile table of docs/benchmarks.md, where
docs/benchmarks-notes.md holds ``<!-- backbone-profile: profiles/backbone-profile.json -->``.
"""

from __future__ import annotations

import argparse
import time

import torch

from slimdiar.fileio import write_json_atomic
from slimdiar.models import WavLM

PRESETS = ["wavlm-base-plus", "wavlm-base-plus-s80", "wavlm-large", "wavlm-large-s80"]


def profile(name: str, seconds: float, repeats: int) -> dict:
    model = WavLM.from_preset(name).eval()
    times: dict[str, float] = {}

    def timed(module, part):
        def pre(mod, args):
            mod._start = time.perf_counter()

        def post(mod, args, output):
            times[part] = times.get(part, 0.0) + time.perf_counter() - mod._start

        module.register_forward_pre_hook(pre)
        module.register_forward_hook(post)

    for i, layer in enumerate(model.feature_extractor.conv_layers):
        timed(layer, "conv layer 0" if i == 0 else "conv layers 1-6")
    timed(model.encoder.pos_conv, "positional conv")
    for layer in model.encoder.layers:
        if layer.attention is not None:
            timed(layer.attention, "attention")
        if layer.feed_forward is not None:
            timed(layer.feed_forward, "ffn")
    waveforms = torch.randn(1, int(seconds * 16000))
    runs = []
    with torch.inference_mode():
        model(waveforms)
        for _ in range(repeats):
            times.clear()
            start = time.perf_counter()
            model(waveforms)
            total = time.perf_counter() - start
            runs.append((total, dict(times)))
    total, parts = sorted(runs, key=lambda run: run[0])[len(runs) // 2]
    parts["other (norms, projection, bias)"] = total - sum(parts.values())
    return {"total_ms": round(total * 1000, 1), **{k: round(v * 1000, 1) for k, v in parts.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    results = {name: profile(name, args.seconds, args.repeats) for name in PRESETS}
    for name, parts in results.items():
        print(name, parts)
    write_json_atomic(
        args.out,
        {
            "seconds": args.seconds,
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "models": results,
        },
    )


if __name__ == "__main__":
    main()
