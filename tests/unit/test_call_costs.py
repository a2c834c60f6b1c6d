"""Savings per call of the WavLM encoder in eval: the kept position bias, the FFT positional conv.

Both must compute what the plain path computes, never act in training or under autograd, stay
bounded, stay out of checkpoints and never serve values of weights that have since changed.
"""

from __future__ import annotations

import copy

import pytest
import torch

from slimdiar.models import WavLM
from slimdiar.models.wavlm import components
from slimdiar.models.wavlm.components import Encoder, PositionalConv

FFT_TOLERANCE = 1e-5


def tiny(seed: int = 0, name: str = "wavlm-tiny") -> WavLM:
    torch.manual_seed(seed)
    model = WavLM.from_preset(name).eval()
    with torch.no_grad():  # a bias that differs per head and offset
        model.encoder.rel_attn_embed.weight.normal_()
    return model


def plain_forward(model: WavLM, waveforms: torch.Tensor) -> list[torch.Tensor]:
    """The forward pass with both savings switched off."""
    model.encoder.cache_position_bias = False
    model.encoder.pos_conv.use_fft = False
    try:
        with torch.no_grad():
            return model(waveforms)
    finally:
        del model.encoder.cache_position_bias, model.encoder.pos_conv.use_fft


def bias_cache(model: WavLM) -> dict:
    return model.encoder.__dict__.get("_bias_cache", {})


def spectrum_cache(model: WavLM) -> dict:
    return model.encoder.pos_conv.__dict__.get("_spectrum_cache", {})


def weight_cache(model: WavLM) -> dict:
    return model.encoder.pos_conv.__dict__.get("_weight_cache", {})


def assert_close_outputs(actual, expected, atol: float) -> None:
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert (a - e).abs().max().item() <= atol


@pytest.mark.parametrize("name", ["wavlm-tiny", "wavlm-tiny-prenorm", "wavlm-mini"])
def test_eval_outputs_equal_the_plain_path_on_repeated_calls(name):
    model = tiny(name=name)
    waveforms = torch.randn(2, 8000)
    expected = plain_forward(model, waveforms)
    with torch.inference_mode():
        first = model(waveforms)
        second = model(waveforms)  # served from both caches
    assert len(bias_cache(model)) == 1 and len(spectrum_cache(model)) == 1
    assert_close_outputs(first, expected, FFT_TOLERANCE)
    assert_close_outputs(second, first, 0.0)


def test_kept_bias_is_bit_identical_to_a_fresh_one():
    model = tiny()
    encoder = model.encoder
    with torch.no_grad():
        fresh = encoder._build_position_bias(37)
        kept = encoder.position_bias(37)
        again = encoder.position_bias(37)
    assert again is kept
    assert torch.equal(kept, fresh)
    # The same values as the per-query gather of the offsets' embeddings, by hand.
    buckets = components.relative_offset_buckets(37, 32, 100)
    table = encoder.rel_attn_embed.weight.detach()
    for query, key in [(0, 0), (0, 36), (36, 0), (5, 9)]:
        assert torch.equal(kept[:, query, key], table[buckets[key - query + 36]])


def biased_conv(embed_dim: int, kernel: int, groups: int, seed: int) -> PositionalConv:
    """An eval-mode positional conv with a random bias."""
    torch.manual_seed(seed)
    conv = PositionalConv(embed_dim, kernel, groups).eval()
    with torch.no_grad():
        conv.bias.normal_()
    return conv


@pytest.mark.parametrize(
    "embed_dim,kernel,groups,frames",
    [
        (768, 128, 16, 60),  # Base+ positional conv (even kernel: the last output is dropped)
        (64, 7, 4, 23),  # an odd kernel
        (64, 16, 8, 5),  # fewer frames than the kernel
    ],
)
def test_fft_positional_conv_matches_the_direct_convolution(embed_dim, kernel, groups, frames):
    conv = biased_conv(embed_dim, kernel, groups, seed=1)
    x = torch.randn(3, frames, embed_dim)
    direct = conv(x)  # autograd on: the direct path
    assert direct.requires_grad
    with torch.no_grad():
        fast = conv(x)
    assert fast.shape == direct.shape == (3, frames, embed_dim)
    assert (fast - direct).abs().max().item() <= FFT_TOLERANCE
    assert len(conv.__dict__["_spectrum_cache"]) == 1


def test_neither_cache_is_used_in_training_or_under_autograd():
    model = tiny()
    waveforms = torch.randn(1, 8000)
    model.train()
    with torch.no_grad():
        model(waveforms)
    model.eval()
    outputs = model(waveforms)  # eval, but autograd on
    assert not bias_cache(model) and not spectrum_cache(model)
    assert not weight_cache(model)
    outputs[-1].sum().backward()
    assert model.encoder.rel_attn_embed.weight.grad.abs().sum() > 0
    assert model.encoder.pos_conv.weight_v.grad.abs().sum() > 0


def test_caches_are_bounded():
    model = tiny()
    with torch.no_grad():
        for num_samples in range(4000, 4000 + 320 * 8, 320):  # eight window lengths
            model(torch.randn(1, num_samples))
    assert len(bias_cache(model)) == components.BIAS_CACHE_ENTRIES
    assert len(spectrum_cache(model)) <= components.SPECTRUM_CACHE_ENTRIES


def test_a_bias_larger_than_the_limit_is_not_kept(monkeypatch):
    model = tiny()
    monkeypatch.setattr(components, "BIAS_CACHE_BYTES", 4 * 20 * 20 * 4 - 1)
    with torch.no_grad():
        model.encoder.position_bias(19)  # 4 heads x 19 x 19 floats: under the limit
        model.encoder.position_bias(20)  # exactly 1 byte over
    assert [key[0] for key in bias_cache(model)] == [19]


def test_checkpoints_do_not_include_the_caches(tmp_path):
    model = tiny()
    keys = set(model.state_dict())
    with torch.no_grad():
        model(torch.randn(1, 8000))
    assert bias_cache(model) and spectrum_cache(model)
    assert set(model.state_dict()) == keys
    model.save_pretrained(tmp_path / "ckpt")
    assert set(WavLM.from_pretrained(tmp_path / "ckpt").state_dict()) == keys


def test_load_state_dict_and_weight_changes_are_seen():
    model, other = tiny(seed=0), tiny(seed=1)
    waveforms = torch.randn(1, 8000)
    with torch.no_grad():
        model(waveforms)  # fill both caches with model's weights
    model.load_state_dict(other.state_dict())
    with torch.no_grad():
        loaded = model(waveforms)
    assert_close_outputs(loaded, plain_forward(other, waveforms), FFT_TOLERANCE)
    with torch.no_grad():  # in-place edits, as an optimizer step makes them
        model.encoder.rel_attn_embed.weight.mul_(2.0)
        model.encoder.pos_conv.weight_g.mul_(0.5)
        edited = model(waveforms)
    assert_close_outputs(edited, plain_forward(model, waveforms), FFT_TOLERANCE)
    assert (edited[-1] - loaded[-1]).abs().max() > 1e-3


def test_a_replaced_bias_table_is_seen():
    model = tiny()
    encoder: Encoder = model.encoder
    with torch.no_grad():
        before = encoder.position_bias(11)
        encoder.rel_attn_embed.weight = torch.nn.Parameter(
            encoder.rel_attn_embed.weight.detach() + 1.0
        )
        after = encoder.position_bias(11)
    assert torch.equal(after, before + 1.0)


def test_a_traced_encoder_keeps_nothing_and_computes_the_same():
    model = tiny()
    with torch.no_grad():
        traced = torch.jit.trace(
            model.encoder, torch.randn(1, 12, 64), check_trace=False, strict=False
        )
        assert not model.encoder.__dict__.get("_bias_cache")
        assert not model.encoder.pos_conv.__dict__.get("_spectrum_cache")
        x = torch.randn(1, 12, 64)
        assert_close_outputs(traced(x), model.encoder(x), FFT_TOLERANCE)


def test_weights_made_under_inference_mode_are_never_kept():
    # Their in-place changes leave no version trace, so nothing computed from them is kept.
    with torch.inference_mode():
        model = tiny()
        waveforms = torch.randn(1, 8000)
        first = model(waveforms)
        model.encoder.rel_attn_embed.weight.mul_(2.0)
        model.encoder.pos_conv.weight_g.mul_(0.5)
        edited = model(waveforms)
    assert not bias_cache(model) and not spectrum_cache(model)
    assert (edited[-1] - first[-1]).abs().max() > 1e-3
    assert_close_outputs(edited, plain_forward(model, waveforms), 0.0)


def measuring_tool():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "tools" / "measure_call_costs.py"
    spec = importlib.util.spec_from_file_location("measure_call_costs", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_measured_alternatives_compute_the_same_function():
    tool = measuring_tool()
    torch.manual_seed(2)
    conv = PositionalConv(64, 16, 8).eval()
    x = torch.randn(2, 30, 64)
    with torch.no_grad():
        folded = conv.weight()
        direct = tool._direct(conv, folded, x)
        assert (tool._unfold_bmm(conv, folded, x) - direct).abs().max() <= FFT_TOLERANCE
        assert (conv(x) - direct).abs().max() <= FFT_TOLERANCE
        ffn = components.FeedForward(64, 53).eval()
        h = torch.randn(2, 30, 64)
        for multiple in (8, 16, 32):
            padded = tool._padded(ffn, multiple)
            assert padded.num_units % multiple == 0 and padded.num_units >= 53
            assert (padded(h) - ffn(h)).abs().max() <= 1e-6


def test_the_direct_path_keeps_the_normalised_kernel_and_sees_its_changes():
    model = tiny()
    conv = model.encoder.pos_conv
    conv.use_fft = False
    x = torch.randn(2, 9, 64)
    with torch.no_grad():
        first = conv(x)
        (key,) = weight_cache(model)
        kept = weight_cache(model)[key][1]
        assert torch.equal(kept, conv.weight())
        assert torch.equal(conv(x), first) and weight_cache(model)[key][1] is kept
        conv.weight_g.mul_(0.5)  # in place, as an optimizer step
        edited = conv(x)
    assert torch.equal(weight_cache(model)[key][1], conv.weight())
    assert (edited - first).abs().max() > 1e-3
    with torch.enable_grad():
        assert torch.equal(conv(x).detach(), edited)  # the fresh kernel, the same values


def gated_tiny(extractor_mode: str, output_scale: bool) -> WavLM:
    from dataclasses import replace

    from slimdiar.models.wavlm.config import wavlm_tiny

    torch.manual_seed(3)
    model = WavLM(replace(wavlm_tiny(), extractor_mode=extractor_mode))
    model.enable_pruning(conv_output_scale=output_scale)
    with torch.no_grad():  # gates and norms away from their initial values
        for name, param in model.feature_extractor.named_parameters():
            if "norm" in name or "log_alpha" in name:
                param.add_(torch.randn_like(param))
    return model


@pytest.mark.parametrize("mode,output_scale", [("group_norm", True), ("layer_norm", False)])
def test_the_channels_last_extractor_is_the_same_function(mode, output_scale):
    """Values and gradients (gates included) of the CPU layout equal the channels-first one."""
    model = gated_tiny(mode, output_scale).eval()
    waveforms = torch.randn(2, 4000)
    results = []
    for channels_last in (True, False):
        model.feature_extractor.channels_last = channels_last
        model.zero_grad()
        features = model.feature_extractor(waveforms)  # (B, C, T)
        (features.square().sum() + model.project(waveforms).sum()).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((features.detach(), grads))
    (fast, fast_grads), (plain, plain_grads) = results
    assert fast.shape == plain.shape and fast.transpose(1, 2).is_contiguous()
    assert (fast - plain).abs().max() <= 1e-5 * plain.abs().max()
    assert fast_grads.keys() == plain_grads.keys()
    assert any("log_alpha" in name for name in plain_grads)
    for name, grad in plain_grads.items():
        assert (fast_grads[name] - grad).abs().max() <= 1e-4 * grad.abs().max(), name


def test_the_channels_last_extractor_in_bfloat16():
    """Under CPU autocast and with bfloat16 weights it follows the channels-first path."""
    model = gated_tiny("group_norm", True).eval()
    waveforms = torch.randn(2, 4000)
    outputs = {}
    with torch.no_grad():
        for channels_last in (True, False):
            model.feature_extractor.channels_last = channels_last
            with torch.autocast("cpu", dtype=torch.bfloat16):
                outputs["autocast", channels_last] = model.feature_extractor(waveforms)
            cast = copy.deepcopy(model).to(torch.bfloat16)
            cast.feature_extractor.channels_last = channels_last
            outputs["weights", channels_last] = cast.feature_extractor(waveforms.bfloat16())
    assert outputs["weights", True].dtype == torch.bfloat16
    for mode in ("autocast", "weights"):
        fast, plain = outputs[mode, True], outputs[mode, False]
        assert fast.dtype == plain.dtype
        assert (fast.float() - plain.float()).abs().max() <= 0.02 * plain.float().abs().max()


@pytest.mark.parametrize(
    "embed_dim,kernel,groups,frames",
    [
        (768, 128, 16, 399),  # Base+ at 8 s: 4 blocks of 129 outputs, the last one partial
        (64, 7, 4, 50),  # an odd kernel
        (64, 8, 8, 10),  # one frame more than a block
    ],
)
def test_one_window_goes_through_the_blockwise_fft(embed_dim, kernel, groups, frames):
    conv = biased_conv(embed_dim, kernel, groups, seed=4)
    x = torch.randn(1, frames, embed_dim)
    direct = conv(x)  # autograd on: the direct path
    with torch.no_grad():
        assert conv._blockwise(x) and not conv._blockwise(x.expand(2, -1, -1))
        fast = conv(x)
        (key,) = conv.__dict__["_spectrum_cache"]
        assert key[0] == conv.block_fft_size and conv.block_fft_size >= 2 * kernel
        with torch.autocast("cpu", dtype=torch.bfloat16):  # computed in float32, then cast
            low = conv(x.bfloat16())
    assert (fast - direct).abs().max().item() <= FFT_TOLERANCE
    assert low.dtype == torch.bfloat16
    assert (low.float() - direct).abs().max().item() <= 0.01 * direct.abs().max().item()
    assert not conv._blockwise(x[:, : conv.block_fft_size - kernel + 1])  # a single block


@pytest.mark.parametrize("name", ["wavlm-tiny", "wavlm-base-plus-s80"])
def test_a_large_cpu_batch_in_slices_computes_what_one_pass_computes(name):
    model = tiny(name=name)
    waveforms = torch.randn(9, 8000, generator=torch.Generator().manual_seed(1))
    calls = []
    model.encoder.register_forward_pre_hook(lambda module, args: calls.append(len(args[0])))
    with torch.inference_mode():
        sliced = model(waveforms)
        model.cpu_batch_slice = None
        whole = model(waveforms)
    assert calls == [4, 4, 1, 9]  # slices of 4 (the last one short), then one pass
    assert len(sliced) == len(whole)
    for a, b in zip(sliced, whole, strict=True):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=0, atol=FFT_TOLERANCE)


def test_batch_slices_are_not_used_in_training_or_under_autograd():
    model = tiny()
    calls = []
    model.encoder.register_forward_pre_hook(lambda module, args: calls.append(len(args[0])))
    waveforms = torch.randn(6, 4000)
    model(waveforms)  # eval, autograd on
    model.train()
    with torch.no_grad():
        model(waveforms)
    assert calls == [6, 6]
