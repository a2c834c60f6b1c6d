"""Benchmarks: parameter and MAC counts, latency and real-time factor, measured honestly."""

from slimdiar.bench.backbone import BackboneResult, benchmark_backbones, load_backbone_for_bench

__all__ = ["BackboneResult", "benchmark_backbones", "load_backbone_for_bench"]
