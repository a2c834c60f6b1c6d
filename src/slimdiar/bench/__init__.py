"""Benchmarks: parameter and MAC counts, latency and real-time factor, measured honestly."""

from slimdiar.bench.backbone import BackboneResult, benchmark_backbones, load_backbone_for_bench
from slimdiar.bench.pipeline import (
    PipelineBenchResult,
    benchmark_pipeline,
    write_synthetic_conversation,
)

__all__ = [
    "BackboneResult",
    "PipelineBenchResult",
    "benchmark_backbones",
    "benchmark_pipeline",
    "load_backbone_for_bench",
    "write_synthetic_conversation",
]
