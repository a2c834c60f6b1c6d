"""Backbone timing in turns: the order of the rounds and the per-round speed-up."""

from __future__ import annotations

import pytest

from slimdiar.bench.backbone import _interleaved_latencies, paired_ratio


def test_rounds_run_every_model_once_starting_one_further_each_round():
    calls: list[str] = []
    runs = [lambda name=name: calls.append(name) for name in "abc"]
    times = _interleaved_latencies(runs, warmup=1, repeats=3, sync=lambda: None)
    assert calls == list("abc" + "abc" + "bca" + "cab")  # warm-up round, then rotated rounds
    assert [len(t) for t in times] == [3, 3, 3]
    assert all(t >= 0 for row in times for t in row)


def test_paired_ratio_is_the_median_of_per_round_ratios():
    # ratios 2, 4 and 3: median 3, where the ratio of the medians would be 4 / 1
    assert paired_ratio([2.0, 4.0, 9.0], [1.0, 1.0, 3.0]) == 3.0
    assert paired_ratio([0.5], [0.25]) == 2.0
    with pytest.raises(ValueError, match="same, non-zero number of rounds"):
        paired_ratio([1.0, 2.0], [1.0])
    with pytest.raises(ValueError):
        paired_ratio([], [])


def test_the_op_profile_sorts_operators_into_kinds():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "tools" / "profile_ops.py"
    spec = importlib.util.spec_from_file_location("profile_ops", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.kind_of("aten::addmm") == "linear layers"  # before the prefix aten::add
    assert module.kind_of("aten::add") == "element-wise add, mul"
    assert module.kind_of("aten::copy_") == "copies (bias broadcast, layouts)"
    assert module.kind_of("aten::_scaled_dot_product_flash_attention_for_cpu") == "attention"
    assert module.kind_of("aten::native_layer_norm") == "normalisations"
    assert module.kind_of("aten::relu") == "other"
