"""The WavLM backbone: parity with transformers, checkpoint formats, counts, pruning, bad input."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from slimdiar.errors import AudioError, CheckpointError, ConfigError
from slimdiar.models import WavLM, WavLMConfig, preset
from slimdiar.models.wavlm.convert import parse_conv_layers

transformers = pytest.importorskip("transformers")

TINY = dict(
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=128,
    conv_dim=[32] * 7,
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=4,
    num_buckets=32,
    max_bucket_distance=100,
)
BASE_PLUS = dict(feat_extract_norm="group", do_stable_layer_norm=False)
LARGE = dict(
    hidden_size=1024,
    num_hidden_layers=24,
    num_attention_heads=16,
    intermediate_size=4096,
    feat_extract_norm="layer",
    do_stable_layer_norm=True,
)


def make_hf_model(stable: bool, **overrides):
    """A transformers WavLMModel with every parameter randomised (norms and gates included)."""
    kwargs = dict(feat_extract_norm="layer" if stable else "group", do_stable_layer_norm=stable)
    kwargs.update(overrides)
    torch.manual_seed(0)
    model = transformers.WavLMModel(transformers.WavLMConfig(**kwargs)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or "gru_rel_pos" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    return model


def hf_hidden_states(model, waveforms):
    with torch.no_grad():
        return model(waveforms, output_hidden_states=True).hidden_states


def assert_parity(hf, ours, seconds):
    torch.manual_seed(1)
    waveforms = torch.randn(2, int(seconds * 16000)) * 0.1
    if ours.config.normalize_waveform:
        # transformers leaves waveform normalisation to its feature extractor.
        waveforms = F.layer_norm(waveforms, waveforms.shape[-1:], eps=1e-5)
    reference = hf_hidden_states(hf, waveforms)
    with torch.no_grad():
        hidden = ours(waveforms)
    assert len(hidden) == len(reference) == ours.config.num_layers + 1
    for i, (a, b) in enumerate(zip(hidden, reference)):
        assert a.shape == b.shape
        assert (a - b).abs().max().item() < 1e-4, f"hidden state {i} differs"


@pytest.mark.parametrize("stable", [False, True], ids=["post-norm", "pre-norm"])
@pytest.mark.parametrize("seconds", [2.0, 8.0])
def test_parity_tiny(tmp_path, stable, seconds):
    hf = make_hf_model(stable, **TINY)
    hf.save_pretrained(tmp_path)
    ours = WavLM.from_pretrained(tmp_path)
    assert ours.config.layer_norm_first == stable
    assert_parity(hf, ours, seconds)


@pytest.mark.slow
@pytest.mark.parametrize("shape", [BASE_PLUS, LARGE], ids=["base-plus-shape", "large-shape"])
def test_parity_full_size(tmp_path, shape):
    hf = make_hf_model(shape["do_stable_layer_norm"], **shape)
    hf.save_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(
        json.dumps({"do_normalize": shape["do_stable_layer_norm"]})
    )
    ours = WavLM.from_pretrained(tmp_path)
    expected = preset("wavlm-large" if shape["do_stable_layer_norm"] else "wavlm-base-plus")
    with torch.device("meta"):
        assert ours.num_params() == WavLM(expected).num_params()
    assert ours.config.conv_layers == expected.conv_layers
    assert ours.config.embed_dim == expected.embed_dim
    assert ours.config.normalize_waveform == expected.normalize_waveform
    for seconds in (2.0, 8.0):
        assert_parity(hf, ours, seconds)


def test_pytorch_model_bin_and_task_model_prefix(tmp_path):
    hf = make_hf_model(False, **TINY)
    task = transformers.WavLMForAudioFrameClassification(hf.config)
    task.wavlm.load_state_dict(hf.state_dict())
    task.save_pretrained(tmp_path)
    # the older pickle layout: the same tensors in pytorch_model.bin
    from safetensors.torch import load_file

    state = load_file(str(tmp_path / "model.safetensors"))
    (tmp_path / "model.safetensors").unlink()
    torch.save(state, tmp_path / "pytorch_model.bin")
    ours = WavLM.from_pretrained(tmp_path)
    assert_parity(hf, ours, 1.0)


# ------------------------------------------------------------------------- original release
def to_original_layout(hf_model) -> dict:
    """The state dict of an original WavLM release file, built from a transformers model."""
    cfg = hf_model.config
    layer_norm = cfg.feat_extract_norm == "layer"
    out = {"mask_emb": torch.zeros(cfg.hidden_size)}
    for key, value in hf_model.state_dict().items():
        if key == "masked_spec_embed":
            continue
        new = key
        if key.startswith("feature_extractor.conv_layers."):
            i = key.split(".")[2]
            if ".conv." in key:
                new = f"feature_extractor.conv_layers.{i}.0.weight"
            else:
                kind = key.rsplit(".", 1)[1]
                new = f"feature_extractor.conv_layers.{i}.{'2.1' if layer_norm else '2'}.{kind}"
        elif key.startswith("feature_projection.layer_norm."):
            new = key.replace("feature_projection.", "")
        elif key.startswith("feature_projection.projection."):
            new = key.replace("feature_projection.projection.", "post_extract_proj.")
        elif key.startswith("encoder.pos_conv_embed.conv."):
            suffix = {
                "bias": "bias",
                "parametrizations.weight.original0": "weight_g",
                "parametrizations.weight.original1": "weight_v",
            }[key[len("encoder.pos_conv_embed.conv.") :]]
            new = f"encoder.pos_conv.0.{suffix}"
        elif key.startswith("encoder.layers."):
            new = (
                key.replace("attention.rel_attn_embed", "self_attn.relative_attention_bias")
                .replace("attention.gru_rel_pos_linear", "self_attn.grep_linear")
                .replace("attention.gru_rel_pos_const", "self_attn.grep_a")
                .replace("attention.", "self_attn.")
                .replace(".layer_norm.", ".self_attn_layer_norm.")
                .replace("feed_forward.intermediate_dense", "fc1")
                .replace("feed_forward.output_dense", "fc2")
            )
        out[new] = value.clone()
    return out


def original_cfg(hf_config) -> dict:
    return {
        "extractor_mode": "layer_norm" if hf_config.feat_extract_norm == "layer" else "default",
        "encoder_layers": hf_config.num_hidden_layers,
        "encoder_embed_dim": hf_config.hidden_size,
        "encoder_ffn_embed_dim": hf_config.intermediate_size,
        "encoder_attention_heads": hf_config.num_attention_heads,
        "conv_feature_layers": "[(32,10,5)] + [(32,3,2)] * 4 + [(32,2,2)] * 2",
        "conv_pos": hf_config.num_conv_pos_embeddings,
        "conv_pos_groups": hf_config.num_conv_pos_embedding_groups,
        "layer_norm_first": hf_config.do_stable_layer_norm,
        "normalize": hf_config.do_stable_layer_norm,
        "num_buckets": hf_config.num_buckets,
        "max_distance": hf_config.max_bucket_distance,
        "relative_position_embedding": True,
        "gru_rel_pos": True,
        "conv_bias": False,
    }


@pytest.mark.parametrize("stable", [False, True], ids=["post-norm", "pre-norm"])
def test_original_release_format_matches_huggingface(tmp_path, stable):
    hf = make_hf_model(stable, **TINY)
    hf.save_pretrained(tmp_path / "hf")
    path = tmp_path / "WavLM-test.pt"
    torch.save({"cfg": original_cfg(hf.config), "model": to_original_layout(hf)}, path)
    from_original = WavLM.from_pretrained(path)
    from_hf = WavLM.from_pretrained(tmp_path / "hf")
    assert from_original.config.normalize_waveform == stable
    waveforms = torch.randn(2, 16000)
    with torch.no_grad():
        for a, b in zip(from_original(waveforms), from_hf(waveforms)):
            assert torch.equal(a, b)


def test_original_release_unexpected_key_is_listed(tmp_path):
    hf = make_hf_model(False, **TINY)
    state = to_original_layout(hf)
    state["encoder.layers.0.mystery.weight"] = torch.zeros(3)
    path = tmp_path / "bad.pt"
    torch.save({"cfg": original_cfg(hf.config), "model": state}, path)
    with pytest.raises(CheckpointError, match="encoder.layers.0.mystery.weight"):
        WavLM.from_pretrained(path)


def test_conv_layer_spec_is_parsed_without_eval():
    assert parse_conv_layers("[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2")[-1] == (512, 2, 2)
    with pytest.raises(CheckpointError, match="unsupported"):
        parse_conv_layers("__import__('os').system('true')")


# ------------------------------------------------------------------------- slimdiar format
def test_save_and_load_roundtrip(tmp_path):
    model = WavLM.from_preset("wavlm-tiny").eval()
    model.save_pretrained(tmp_path / "ckpt")
    loaded = WavLM.from_pretrained(tmp_path / "ckpt")
    assert loaded.config == model.config
    waveforms = torch.randn(1, 8000)
    with torch.no_grad():
        for a, b in zip(model(waveforms), loaded(waveforms)):
            assert torch.equal(a, b)


def test_checkpoint_with_missing_and_unexpected_keys_lists_them(tmp_path):
    from safetensors.torch import load_file, save_file

    WavLM.from_preset("wavlm-tiny").save_pretrained(tmp_path / "ckpt")
    weights = tmp_path / "ckpt" / "model.safetensors"
    state = load_file(str(weights))
    del state["encoder.layers.1.feed_forward.output_dense.bias"]
    state["encoder.extra"] = torch.zeros(2)
    save_file(state, str(weights))
    with pytest.raises(CheckpointError) as info:
        WavLM.from_pretrained(tmp_path / "ckpt")
    message = str(info.value)
    assert "missing keys: encoder.layers.1.feed_forward.output_dense.bias" in message
    assert "unexpected keys: encoder.extra" in message


DIARIZEN_WAVLM_FILE = (
    Path(__file__).resolve().parents[1] / "data" / "diarizen" / "tiny" / "wavlm.bin"
)


@pytest.mark.parametrize(
    "key, value, message",
    [
        (
            "encoder.transformer.layers.0.attention.q_proj.weight",
            torch.zeros(3, 3),
            r"wavlm\.bin: encoder\.transformer\.layers\.0\.attention\.q_proj\.weight has shape "
            r"\(3, 3\) but the model's encoder\.layers\.0\.attention\.q_proj\.weight needs "
            r"\(24, 32\)",
        ),
        # layer 2 of this file has no attention block
        (
            "encoder.transformer.layers.2.attention.q_proj.weight",
            torch.zeros(24, 32),
            r"key encoder\.transformer\.layers\.2\.attention\.q_proj\.weight has no place in the "
            r"model \(encoder\.layers\.2\.attention\.q_proj\.weight\)",
        ),
        (
            "encoder.transformer.layers.1.attention.gru_rel_pos_const",
            torch.ones(1, 3, 1, 1),
            r"gru_rel_pos_const has shape \(1, 3, 1, 1\) but the model's "
            r"encoder\.layers\.1\.attention\.gru_rel_pos_const needs \(1, 4, 1, 1\)",
        ),
    ],
    ids=["shape", "no-block", "gate-constants"],
)
def test_diarizen_wavlm_file_errors_name_the_file_keys(tmp_path, key, value, message):
    content = torch.load(DIARIZEN_WAVLM_FILE, weights_only=True)
    content["state_dict"][key] = value
    torch.save(content, tmp_path / "wavlm.bin")
    with pytest.raises(CheckpointError, match=message):
        WavLM.from_pretrained(tmp_path / "wavlm.bin")


def test_checkpoint_needing_code_execution_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    path = tmp_path / "evil.pt"
    with open(path, "wb") as stream:
        pickle.dump({"cfg": {}, "model": Payload()}, stream)
    with pytest.raises(CheckpointError, match="refused"):
        WavLM.from_pretrained(path)


def test_missing_checkpoint_path():
    with pytest.raises(CheckpointError, match="no such file"):
        WavLM.from_pretrained("/nonexistent/wavlm")


# ------------------------------------------------------------------------- counts
PUBLISHED = {
    # name: (parameters, MACs for one second of audio)
    "wavlm-base-plus": (94_381_680, 6.91e9),
    "wavlm-large": (315_452_608, 17.81e9),
    "wavlm-base-plus-s80": (18.88e6, 1.13e9),
    "wavlm-large-s80": (63.10e6, 3.68e9),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_counts_match_published_figures(name):
    with torch.device("meta"):
        model = WavLM.from_preset(name)
    params, macs = PUBLISHED[name]
    assert model.num_params() == model.analytic_num_params()
    assert abs(model.num_params() - params) / params < 0.005
    assert abs(model.macs(1.0) - macs) / macs < 0.005


def test_presets_follow_the_shared_anchors():
    from pathlib import Path

    anchors = Path(__file__).resolve().parents[1] / "data" / "anchors"
    assert sorted(p.stem for p in anchors.glob("*.json")) == sorted(PUBLISHED)
    for name in PUBLISHED:
        anchor = WavLMConfig.from_json(anchors / f"{name}.json")
        assert preset(name) == anchor


@pytest.mark.parametrize("name", ["wavlm-tiny", "wavlm-tiny-prenorm"])
def test_analytic_macs_equal_counted_flops(name):
    model = WavLM.from_preset(name).eval()
    # The MACs are those of the direct positional convolution (the FFT path that eval takes
    # computes the same function with fewer).
    model.encoder.pos_conv.use_fft = False
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        with torch.no_grad():
            model(torch.randn(1, 16000))
    counts = counter.get_flop_counts()
    # The relative-position gates are part of the position bias, which the MAC count leaves out.
    gate_flops = sum(
        v
        for key, per_op in counts.items()
        if key.endswith("gru_rel_pos_linear")
        for v in per_op.values()
    )
    assert (counter.get_total_flops() - gate_flops) // 2 == model.macs(1.0)


# ------------------------------------------------------------------------- pruning
def randomised_gated_model(name: str, conv: bool, seed: int = 0, spread: float = 2.0):
    torch.manual_seed(seed)
    model = WavLM.from_preset(name)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model.enable_pruning(conv=conv, heads=True, ffn=True)
    with torch.no_grad():
        for gate in model.gates():
            gate.log_alpha.normal_(1.0, spread)
    return model.eval()


@pytest.mark.parametrize("name", ["wavlm-tiny", "wavlm-tiny-prenorm"])
def test_pruning_heads_and_ffn_is_exact(name):
    model = randomised_gated_model(name, conv=False)
    waveforms = torch.randn(2, 16000)
    with torch.no_grad():
        gated = model(waveforms)
        small = model.prune()
        pruned = small(waveforms)
    assert not small.pruning_enabled
    assert small.num_params() < model.num_params()
    assert small.num_params() == model.deterministic_num_params()
    for a, b in zip(gated, pruned):
        assert (a - b).abs().max().item() < 1e-4


@pytest.mark.parametrize("name", ["wavlm-tiny", "wavlm-tiny-prenorm"])
def test_pruning_conv_channels_deviation_is_bounded(name):
    model = randomised_gated_model(name, conv=True, spread=1.0)
    waveforms = torch.randn(2, 16000)
    with torch.no_grad():
        gated = model(waveforms)
        small = model.prune()
        pruned = small(waveforms)
    assert small.num_params() == model.deterministic_num_params()
    removed = [32 - c for c, _, _ in small.config.conv_layers]
    relative = max(((a - b).norm() / a.norm()).item() for a, b in zip(gated, pruned))
    print(
        f"\n{name}: conv channels removed per layer {removed}; "
        f"relative deviation of hidden states {relative:.4f}"
    )
    assert sum(removed) > 0
    assert relative < 0.5


def test_closed_blocks_are_removed_exactly():
    model = randomised_gated_model("wavlm-tiny-prenorm", conv=False)
    with torch.no_grad():
        model.encoder.layers[0].attention.head_gate.log_alpha.fill_(-20.0)
        model.encoder.layers[1].feed_forward.unit_gate.log_alpha.fill_(-20.0)
    waveforms = torch.randn(1, 16000)
    with torch.no_grad():
        gated = model(waveforms)
        small = model.prune()
        pruned = small(waveforms)
    assert small.config.use_attention == [False, True]
    assert small.config.use_ffn == [True, False]
    assert small.encoder.layers[0].attention is None
    assert small.encoder.layers[1].feed_forward is None
    for a, b in zip(gated, pruned):
        assert (a - b).abs().max().item() < 1e-4


def test_block_gates_fold_into_the_pruned_model():
    torch.manual_seed(0)
    model = WavLM.from_preset("wavlm-tiny")
    model.enable_pruning(conv=False, heads=True, ffn=True, attention_blocks=True, ffn_blocks=True)
    with torch.no_grad():
        for gate in model.gates():
            gate.log_alpha.normal_(1.0, 2.0)
    model.eval()
    waveforms = torch.randn(1, 16000)
    with torch.no_grad():
        gated = model(waveforms)
        pruned = model.prune()(waveforms)
    for a, b in zip(gated, pruned):
        assert (a - b).abs().max().item() < 1e-4


def test_pruned_model_keeps_original_head_indices_and_roundtrips(tmp_path):
    model = randomised_gated_model("wavlm-tiny", conv=True)
    small = model.prune().eval()
    for layer, heads in zip(small.encoder.layers, small.config.remaining_heads):
        if layer.attention is not None:
            assert layer.attention.heads.tolist() == heads
    small.save_pretrained(tmp_path / "pruned")
    loaded = WavLM.from_pretrained(tmp_path / "pruned")
    assert loaded.config == small.config
    waveforms = torch.randn(1, 16000)
    with torch.no_grad():
        for a, b in zip(small(waveforms), loaded(waveforms)):
            assert torch.equal(a, b)
    # pruning a pruned model again (heads index the original heads)
    again = loaded.enable_pruning(conv=False).eval()
    with torch.no_grad():
        for gate in again.gates():
            gate.log_alpha.normal_(2.0, 2.0)
        reference = again(waveforms)
        twice = again.prune()(waveforms)
    for a, b in zip(reference, twice):
        assert (a - b).abs().max().item() < 1e-4


def test_expected_params_are_differentiable_and_track_gates():
    model = WavLM.from_preset("wavlm-tiny").enable_pruning()
    full = model.num_params()
    expected = model.expected_num_params()
    assert expected.requires_grad
    expected.backward()
    assert all(g.log_alpha.grad is not None for g in model.gates())
    # with every gate nearly certainly open the expectation is the full count
    with torch.no_grad():
        for gate in model.gates():
            gate.log_alpha.fill_(20.0)
    assert abs(model.expected_num_params().item() - full) / full < 1e-4
    assert abs(model.expected_macs(1.0).item() - model.macs(1.0)) / model.macs(1.0) < 1e-4


def test_units_list_gates_what_the_keyword_form_gates():
    from slimdiar.models.wavlm import PruneUnit

    torch.manual_seed(3)
    by_keyword = WavLM.from_preset("wavlm-tiny").enable_pruning(
        conv=False, attention_blocks=True, ffn_drop_rate=0.3, block_drop_rate=0.2
    )
    torch.manual_seed(3)
    by_list = WavLM.from_preset("wavlm-tiny").enable_pruning(
        ["heads", PruneUnit.FFN, "attention_blocks"], {PruneUnit.FFN: 0.3, "attention_blocks": 0.2}
    )
    names = [n for n, _ in by_keyword.named_parameters() if "log_alpha" in n]
    assert names == [n for n, _ in by_list.named_parameters() if "log_alpha" in n]
    assert "encoder.layers.0.attention.block_gate.log_alpha" in names
    assert not any("feature_extractor" in n or "feed_forward.block_gate" in n for n in names)
    for a, b in zip(by_keyword.gates(), by_list.gates()):
        assert a.init_drop_rate == b.init_drop_rate
        assert torch.equal(a.log_alpha, b.log_alpha)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m: m.enable_pruning(["channels"]), "unknown pruning unit 'channels'"),
        (lambda m: m.enable_pruning("conv"), "must be a list"),
        (lambda m: m.enable_pruning(["conv"], conv=False), "either as a list"),
        (lambda m: m.enable_pruning(rates={"bias": 0.1}), "unknown pruning unit 'bias'"),
    ],
)
def test_bad_pruning_units_are_clear_errors(call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call(WavLM.from_preset("wavlm-tiny"))


@pytest.mark.parametrize("name", ["wavlm-tiny", "wavlm-tiny-prenorm"])
def test_every_block_counts_its_own_parameters(name):
    from slimdiar.models.wavlm.units import Count

    model = WavLM.from_preset(name)
    extractor = model.feature_extractor
    in_channels = 1
    for layer in extractor.conv_layers:
        own = sum(p.numel() for p in layer.parameters())
        assert layer.num_params(in_channels, layer.dims(Count.EXACT)) == own
        in_channels = layer.out_channels
    for layer in model.encoder.layers:
        for block in (layer.attention, layer.feed_forward):
            assert block.num_params(block.dims(Count.EXACT)) == sum(
                p.numel() for p in block.parameters()
            )
        assert layer.num_params(layer.dims(Count.EXACT)) == sum(
            p.numel() for p in layer.parameters()
        )
    own = sum(p.numel() for p in model.encoder.pos_conv.parameters())
    assert model.encoder.pos_conv.num_params() == own


def test_deterministic_count_is_what_each_block_keeps():
    from slimdiar.models.wavlm.units import Count

    model = randomised_gated_model("wavlm-tiny", conv=True)
    for layer in model.encoder.layers:
        heads, _ = layer.attention.dims(Count.DETERMINISTIC)
        units, _ = layer.feed_forward.dims(Count.DETERMINISTIC)
        attention, feed_forward = layer.kept()
        assert (heads, units) == (len(attention), len(feed_forward))
    for layer in model.feature_extractor.conv_layers:
        assert layer.dims(Count.DETERMINISTIC) == len(layer.kept())


def test_hard_concrete_deterministic_mask_closes_the_expected_number():
    from slimdiar.models.wavlm.hardconcrete import HardConcrete

    gate = HardConcrete(10)
    with torch.no_grad():
        gate.log_alpha.copy_(torch.tensor([-9.0, -8, -7, -6, 5, 6, 7, 8, 9, 10]))
    gate.eval()
    mask = gate()
    assert round(10 - gate.expected_num_open().item()) == 4
    assert (mask[:4] == 0).all() and (mask[4:] > 0.99).all()
    gate.train()
    samples = torch.stack([gate() for _ in range(200)])
    assert samples.min() >= 0 and samples.max() <= 1
    assert (samples[:, :4] == 0).float().mean() > 0.95


# ------------------------------------------------------------------------- bad input
def test_bad_inputs_give_clear_errors():
    model = WavLM.from_preset("wavlm-tiny").eval()
    with pytest.raises(ValueError, match=r"\(batch, num_samples\)"):
        model(torch.randn(16000))
    with pytest.raises(TypeError, match="floating point"):
        model(torch.zeros(1, 16000, dtype=torch.int16))
    with pytest.raises(AudioError, match="receptive field"):
        model(torch.randn(1, 399))
    assert model(torch.randn(1, 400))[0].shape == (1, 1, 64)


def test_unknown_preset_lists_valid_ones():
    with pytest.raises(ConfigError, match="wavlm-base-plus"):
        preset("wavlm-huge")


def test_inconsistent_config_is_rejected():
    data = preset("wavlm-tiny").to_dict()
    data["use_attention"] = [True, False]
    with pytest.raises(ConfigError, match="layer 1"):
        WavLMConfig.from_dict(data)


@pytest.mark.parametrize("layer", [[8, 10], 8, "855", [8, 10, 5, 1]])
def test_malformed_conv_layer_is_a_config_error(layer, tmp_path):
    """A conv layer that is not three numbers is named, in a config and in a checkpoint."""
    data = preset("wavlm-tiny").to_dict()
    data["conv_layers"][1] = layer
    with pytest.raises(ConfigError, match=r"conv_layers\[1\] = .*out_channels, kernel_size"):
        WavLMConfig.from_dict(data)
    WavLM.from_preset("wavlm-tiny").save_pretrained(tmp_path / "ckpt")
    config_file = tmp_path / "ckpt" / "config.json"
    stored = json.loads(config_file.read_text())
    stored["config"]["conv_layers"][1] = layer
    config_file.write_text(json.dumps(stored))
    with pytest.raises(ConfigError, match=r"conv_layers\[1\]"):
        WavLM.from_pretrained(tmp_path / "ckpt")


def test_training_after_inference_mode_in_the_same_process():
    """Regression: state built under torch.inference_mode must not leak into a training step."""
    model = WavLM.from_preset("wavlm-tiny")
    with torch.inference_mode():
        model(torch.randn(1, 16000))
    hidden = model(torch.randn(1, 16000))
    hidden[-1].sum().backward()
    assert model.encoder.rel_attn_embed.weight.grad is not None


# ------------------------------------------------------------------------- conv output scale
def soft_last_conv_gate_model(conv_output_scale: bool):
    """Tiny gated model: some channels of conv layer 2 closed, the last layer's gate all soft."""
    torch.manual_seed(0)
    model = WavLM.from_preset("wavlm-tiny")
    model.enable_pruning(conv=True, heads=False, ffn=False, conv_output_scale=conv_output_scale)
    layers = model.feature_extractor.conv_layers
    with torch.no_grad():
        for layer in layers:
            layer.gate.log_alpha.fill_(6.0)  # open, scale 0.999
        layers[-1].gate.log_alpha[:12].uniform_(1.5, 2.5)  # open, scales 0.86 .. 0.95
        layers[2].gate.log_alpha[:8] = -20.0  # closed (no LayerNorm spans them)
    return model.eval()


def test_last_conv_gate_acts_before_the_projection_norm_and_survives_as_a_scale():
    model = soft_last_conv_gate_model(conv_output_scale=True)
    assert model.config.conv_output_scale
    last_mask = model.feature_extractor.conv_layers[-1].gate.deterministic_mask().detach()
    assert (last_mask > 0.8).all() and (last_mask < 0.96).sum() == 12
    waveforms = torch.randn(2, 16000)
    with torch.no_grad():
        gated = model(waveforms)
        small = model.prune()
        pruned = small(waveforms)
        # The gate scales the conv output that the projection's LayerNorm normalises.
        conv_out = model.feature_extractor(waveforms).transpose(1, 2)
        projected = model.feature_projection(conv_out, None)
    assert small.config.conv_output_scale and small.config.conv_layers[2][0] == 24
    assert torch.allclose(small.feature_extractor.output_scale, last_mask)
    assert not small.feature_extractor.output_scale.requires_grad
    # the projection keeps its weights: the scale cannot be folded across the LayerNorm
    assert torch.equal(
        small.feature_projection.projection.weight, model.feature_projection.projection.weight
    )
    for a, b in zip(gated, pruned):
        assert (a - b).abs().max().item() < 1e-5
    assert torch.allclose(
        projected,
        F.layer_norm(
            conv_out,
            conv_out.shape[-1:],
            model.feature_projection.layer_norm.weight,
            model.feature_projection.layer_norm.bias,
        )
        @ model.feature_projection.projection.weight.T
        + model.feature_projection.projection.bias,
        atol=1e-5,
    )


def test_without_the_scale_the_last_gate_folds_into_the_projection():
    model = soft_last_conv_gate_model(conv_output_scale=False)
    assert not model.config.conv_output_scale
    waveforms = torch.randn(1, 16000)
    with torch.no_grad():
        gated = model(waveforms)
        small = model.prune()
        pruned = small(waveforms)
    assert small.feature_extractor.output_scale is None
    assert "feature_extractor.output_scale" not in small.state_dict()
    for a, b in zip(gated, pruned):
        assert (a - b).abs().max().item() < 1e-5


def test_the_two_gate_placements_compute_different_models():
    with torch.no_grad():
        waveforms = torch.randn(1, 16000)
        before_norm = soft_last_conv_gate_model(conv_output_scale=True)(waveforms)
        after_norm = soft_last_conv_gate_model(conv_output_scale=False)(waveforms)
    assert (before_norm[0] - after_norm[0]).abs().max().item() > 1e-3


def test_output_scale_counts_and_old_configs_load(tmp_path):
    with torch.device("meta"):
        plain = WavLM(preset("wavlm-base-plus"))
        scaled = WavLM(preset("wavlm-base-plus").replace(conv_output_scale=True))
    assert plain.num_params() == plain.analytic_num_params() == 94_381_168
    assert scaled.num_params() == scaled.analytic_num_params() == 94_381_680
    assert scaled.macs(1.0) == plain.macs(1.0)
    gated = WavLM.from_preset("wavlm-tiny").enable_pruning()
    with torch.no_grad():
        for gate in gated.gates():
            gate.log_alpha.fill_(20.0)
    assert abs(gated.expected_num_params().item() - gated.num_params()) < 1.0
    # a checkpoint whose config predates the flag loads as a model without the scale
    model = WavLM.from_preset("wavlm-tiny").eval()
    path = model.save_pretrained(tmp_path / "old")
    header = json.loads((path / "config.json").read_text())
    del header["config"]["conv_output_scale"]
    (path / "config.json").write_text(json.dumps(header))
    loaded = WavLM.from_pretrained(path)
    assert not loaded.config.conv_output_scale
    assert loaded.feature_extractor.output_scale is None


def test_stage_1_takes_every_pruning_unit_by_its_config_name():
    """``prune.units`` names come from units.py, so a new kind needs no change in the stage."""
    from slimdiar.models.wavlm.units import CONFIG_NAMES, PruneUnit
    from slimdiar.stages.prune import UNITS

    assert set(CONFIG_NAMES) == set(PruneUnit)
    for unit, name in CONFIG_NAMES.items():
        assert PruneUnit(name) is unit and PruneUnit(unit.value) is unit
    assert set(UNITS) == set(CONFIG_NAMES.values())
    with pytest.raises(ValueError):
        PruneUnit("heads_of_state")
