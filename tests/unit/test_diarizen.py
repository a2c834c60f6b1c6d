"""DiariZen model directories and WavLM files: parity with outputs of the reference's own code.

The fixtures under ``tests/data/diarizen`` were computed by running DiariZen's code (its README
says how): ``tiny/`` is a pruned-looking model directory with a WavLM file, ``base-s80-md/`` the
released Base+ s80 shape whose weights are regenerated here from the documented recipe.
"""

from __future__ import annotations

import hashlib
import json
import math
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from slimdiar.cli import main
from slimdiar.errors import CheckpointError, ConfigError
from slimdiar.models import WavLM
from slimdiar.models.diarizen import (
    DIARIZEN_WAVLM_SHAPES,
    convert_diarizen_dir,
    diarizen_wavlm_shape,
    is_diarizen_dir,
    load_diarizen_dir,
)
from slimdiar.models.eend import EEND
from slimdiar.models.wavlm.config import WavLMConfig, preset

DATA = Path(__file__).resolve().parents[1] / "data" / "diarizen"
TINY = DATA / "tiny"
BASE_S80 = DATA / "base-s80-md"
TOLERANCE = 1e-4  # the fixtures' README: float32 noise of the reference is 1e-6 .. 1e-5

pytestmark = pytest.mark.usefixtures("one_thread")


def log_probs(model: EEND, name: str) -> np.ndarray:
    waveforms = torch.from_numpy(np.load(name))
    with torch.no_grad():
        return model(waveforms).numpy()


def copy_tiny(tmp_path: Path) -> Path:
    return Path(shutil.copytree(TINY, tmp_path / "tiny"))


def tiny_expected_pipeline() -> dict:
    return {
        "windows": {"duration_s": 3.0, "step_s": 0.3, "batch_size": 2},
        "segmentation": {"median_filter_frames": 11},
        "speakers": {"min_speakers": 1, "max_speakers": 20},
        "clustering": {
            "method": "vbx",
            "ahc_threshold": 0.6,
            "fa": 0.07,
            "fb": 0.8,
            "lda_dim": 128,
            "max_iters": 20,
            "plda_dir": "plda",
        },
    }


# ---------------------------------------------------------------------- tiny/
def test_tiny_log_probabilities_match_the_reference():
    model, _ = load_diarizen_dir(TINY)
    for inputs, expected in [
        ("input.npy", "expected_logprobs.npy"),
        ("input_b.npy", "expected_logprobs_b.npy"),
    ]:
        reference = np.load(TINY / expected)
        ours = log_probs(model, TINY / inputs)
        assert ours.shape == reference.shape
        assert np.abs(ours - reference).max() < TOLERANCE, expected


def test_tiny_hidden_states_match_the_reference():
    model, _ = load_diarizen_dir(TINY)
    # the fixture's WavLM: conv channels and heads of a pruned model, a layer without
    # attention (2), one without FFN (1), the gate constants of the 4 total heads
    config = model.backbone.config
    assert config.use_attention == [True, True, False, True]
    assert config.use_ffn == [True, False, True, True]
    assert config.remaining_heads == [[0, 2, 3], [1], [], [0, 1, 2, 3]]
    assert config.conv_output_scale
    waveforms = torch.from_numpy(np.load(TINY / "input.npy"))[:1]
    reference = np.load(TINY / "expected_hidden_states.npy")
    with torch.no_grad():
        ours = torch.stack(model.backbone(waveforms))[:, 0].numpy()
    assert ours.shape == reference.shape
    assert np.abs(ours - reference).max() < TOLERANCE


def test_diarizen_wavlm_file_loads_alone():
    wavlm = WavLM.from_pretrained(TINY / "wavlm.bin")
    reference = np.load(TINY / "expected_hidden_states.npy")
    waveforms = torch.from_numpy(np.load(TINY / "input.npy"))[:1]
    with torch.no_grad():
        ours = torch.stack(wavlm(waveforms))[:, 0].numpy()
    assert np.abs(ours - reference).max() < TOLERANCE
    # the stored per-channel scale is DiariZen's dummy_weight, not ones
    scale = wavlm.feature_extractor.output_scale
    assert scale.shape == (30,) and (scale >= 0.5).all() and (scale < 1).all()


def test_tiny_pipeline_settings_become_metadata():
    model, metadata = load_diarizen_dir(TINY)
    assert model.config.layer_sum == "linear" and not model.training
    expected = tiny_expected_pipeline()
    expected["clustering"]["plda_dir"] = str((TINY / "plda").resolve())
    assert metadata["pipeline"] == expected
    assert metadata["source"]["format"] == "diarizen"


def test_convert_writes_a_checkpoint_with_settings_and_plda(tmp_path):
    src = copy_tiny(tmp_path)
    (src / "plda").mkdir()
    (src / "plda" / "plda.npz").write_bytes(b"stand-in")
    (src / "plda" / "xvec_transform.npz").write_bytes(b"stand-in")
    out = tmp_path / "ckpt"
    assert main(["convert", "diarizen", str(src), "--out", str(out)]) == 0
    model = EEND.from_pretrained(out)
    reference = np.load(TINY / "expected_logprobs.npy")
    assert np.abs(log_probs(model, TINY / "input.npy") - reference).max() < TOLERANCE
    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata["pipeline"] == tiny_expected_pipeline()
    assert (out / "plda" / "plda.npz").read_bytes() == b"stand-in"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    # converting again replaces the checkpoint
    assert convert_diarizen_dir(src, out) == out
    assert EEND.from_pretrained(out).config == model.config


def test_diarize_runs_a_diarizen_directory(tmp_path, capsys):
    import soundfile

    src = copy_tiny(tmp_path)
    rng = np.random.default_rng(0)
    soundfile.write(
        tmp_path / "one.wav", (0.1 * rng.normal(size=6 * 16000)).astype(np.float32), 16000
    )
    reference = tmp_path / "ref.rttm"
    reference.write_text(
        "SPEAKER one 1 0.5000 2.0000 <NA> <NA> A <NA> <NA>\n"
        "SPEAKER one 1 3.0000 2.5000 <NA> <NA> B <NA> <NA>\n"
    )
    out = tmp_path / "out"
    status = main(
        [
            "diarize",
            "--model",
            str(src),
            str(tmp_path / "one.wav"),
            "--out",
            str(out),
            "--oracle-clustering",
            str(reference),
            "--quiet",
        ]
    )
    assert status == 0, capsys.readouterr().err
    assert json.loads((out / "one.json").read_text())["segmentation_model"] == str(src)
    assert (out / "one.rttm").is_file()


# ---------------------------------------------------------------------- strictness
def rewrite_weights(directory: Path, change) -> None:
    state = torch.load(directory / "pytorch_model.bin", weights_only=True)
    change(state)
    torch.save(state, directory / "pytorch_model.bin")


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda s: s.update({"conformer.pos_emb.pe_k.weight": torch.zeros(2, 8)}),
            r"key conformer\.pos_emb\.pe_k\.weight has no place in the model",
        ),
        (
            lambda s: s.update(
                {
                    "wavlm_model.encoder.transformer.layers.1.attention."
                    "rel_attn_embed.weight": torch.zeros(320, 4)
                }
            ),
            r"key wavlm_model\.encoder\.transformer\.layers\.1\.attention\.rel_attn_embed\.weight "
            r"has no place in the WavLM",
        ),
        (
            lambda s: s.pop("conformer.conformer_layer.1.conv.bn_norm.running_var"),
            r"no tensor for the model's conformer\.blocks\.1\.conv\.batch_norm\.running_var",
        ),
        (
            lambda s: s.pop("conformer.conformer_layer.0.mha.mha.linearK.bias"),
            r"conformer_layer\.0\.mha\.mha\.linearK\.bias is missing",
        ),
        (
            lambda s: s.update({"proj.weight": torch.zeros(32, 31)}),
            r"proj\.weight has shape \(32, 31\) "
            r"but the model's projection\.weight needs \(32, 32\)",
        ),
        (
            lambda s: s.update({"wavlm_model.feature_extractor.dummy_weight": torch.ones(31)}),
            r"dummy_weight has shape \(31,\)",
        ),
    ],
    ids=["unexpected", "unexpected-wavlm", "missing", "missing-qkv", "shape", "shape-wavlm"],
)
def test_every_key_is_placed_and_checked(tmp_path, change, message):
    src = copy_tiny(tmp_path)
    rewrite_weights(src, change)
    with pytest.raises(CheckpointError, match=message):
        load_diarizen_dir(src)


def test_bad_directories_give_one_line_errors(tmp_path, capsys):
    src = copy_tiny(tmp_path)
    config = (src / "config.toml").read_text()
    (src / "config.toml").write_text(config.replace('"wavlm.bin"', '"wavlm_huge"'))
    with pytest.raises(CheckpointError, match="neither a DiariZen WavLM shape"):
        load_diarizen_dir(src)
    (src / "config.toml").write_text(config.replace("use_posi = false", "use_posi = true"))
    with pytest.raises(CheckpointError, match="use_posi = true"):
        load_diarizen_dir(src)
    (src / "config.toml").write_text(config.replace('"VBxClustering"', '"SpectralClustering"'))
    with pytest.raises(CheckpointError, match="'SpectralClustering' is not one of"):
        load_diarizen_dir(src)
    (src / "config.toml").write_text(config.replace("Fb = 0.8", "Fb = 0.8\nthreshold = 3"))
    with pytest.raises(CheckpointError, match=r"keys \['threshold'\] do not apply"):
        load_diarizen_dir(src)
    (src / "config.toml").write_text("[model\n")
    with pytest.raises(CheckpointError, match="not valid TOML"):
        load_diarizen_dir(src)
    assert not is_diarizen_dir(tmp_path)
    status = main(["convert", "diarizen", str(tmp_path), "--out", str(tmp_path / "ckpt")])
    assert status == 2
    err = capsys.readouterr().err
    assert "not a DiariZen model directory" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "ckpt").exists()


def test_weights_needing_code_execution_are_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    src = copy_tiny(tmp_path)
    with open(src / "pytorch_model.bin", "wb") as stream:
        pickle.dump({"proj.weight": Payload()}, stream)
    with pytest.raises(CheckpointError, match="refused"):
        load_diarizen_dir(src)


def test_pruning_wavlm_file_is_refused(tmp_path):
    content = torch.load(TINY / "wavlm.bin", weights_only=True)
    content["config"]["encoder_prune_attention_heads"] = True
    torch.save(content, tmp_path / "wavlm.bin")
    with pytest.raises(CheckpointError, match="encoder_prune_attention_heads=True"):
        WavLM.from_pretrained(tmp_path / "wavlm.bin")


# ---------------------------------------------------------------------- named shapes
def test_every_named_shape_of_the_reference_is_known():
    assert sorted(DIARIZEN_WAVLM_SHAPES) == [
        "wavlm_base",
        "wavlm_base_s80_md",
        "wavlm_large",
        "wavlm_large_s80_md",
    ]
    anchors = Path(__file__).resolve().parents[1] / "data" / "anchors"
    for name, preset_name in DIARIZEN_WAVLM_SHAPES.items():
        config = diarizen_wavlm_shape(name.upper())
        assert config.conv_output_scale
        assert config.replace(conv_output_scale=False) == preset(preset_name)
        assert config.replace(conv_output_scale=False) == WavLMConfig.from_json(
            anchors / f"{preset_name}.json"
        )
    with torch.device("meta"):
        base = WavLM(diarizen_wavlm_shape("wavlm_base"))
    # the reference's count of Base+, its 512-element scale included (SPEC 1.1)
    assert base.num_params() == base.analytic_num_params() == 94_381_680
    with pytest.raises(ConfigError, match="unknown DiariZen WavLM shape 'wavlm_xl'"):
        diarizen_wavlm_shape("wavlm_xl")


# ---------------------------------------------------------------------- base-s80-md/
def recipe_tensor(index: int, name: str, shape: tuple, dtype: str) -> torch.Tensor:
    """The fixture weights of one state-dict entry, by the recipe of the fixtures' README."""
    if dtype == "int64":
        return torch.zeros(shape, dtype=torch.int64)
    g = torch.Generator().manual_seed(1000 + index)
    if name.endswith("feature_extractor.dummy_weight"):
        return 0.5 + 0.5 * torch.rand(shape, generator=g)
    if name.endswith(".running_var"):
        return 0.5 + torch.rand(shape, generator=g)
    if name.endswith(".running_mean"):
        return 0.1 * torch.randn(shape, generator=g)
    if name.endswith(".gru_rel_pos_const") or name.endswith("parametrizations.weight.original0"):
        return 1 + 0.1 * torch.randn(shape, generator=g)
    if name.endswith("rel_attn_embed.weight"):
        return 0.5 * torch.randn(shape, generator=g)
    if len(shape) == 1 and name.endswith(".weight"):
        return 1 + 0.1 * torch.randn(shape, generator=g)
    if len(shape) == 1 and name.endswith(".bias"):
        return 0.05 * torch.randn(shape, generator=g)
    fan_in = math.prod(shape) // shape[0]
    return torch.randn(shape, generator=g) * (1.0 / math.sqrt(fan_in))


def regenerate_base_s80(directory: Path) -> None:
    keys = json.loads((BASE_S80 / "keys.json").read_text())
    state, digests = {}, []
    for index, entry in enumerate(keys["tensors"]):
        assert entry["index"] == index
        tensor = recipe_tensor(index, entry["name"], tuple(entry["shape"]), entry["dtype"])
        array = tensor.numpy()
        digest = hashlib.sha256(array.astype(array.dtype.newbyteorder("<")).tobytes())
        assert digest.hexdigest() == entry["sha256"], entry["name"]
        digests.append(digest.hexdigest())
        state[entry["name"]] = tensor
    total = hashlib.sha256("".join(digests).encode()).hexdigest()
    assert total == keys["sha256_of_tensor_hashes"]
    directory.mkdir()
    shutil.copy(BASE_S80 / "config.toml", directory / "config.toml")
    torch.save(state, directory / "pytorch_model.bin")


@pytest.mark.slow
def test_released_base_s80_shape_matches_the_reference(tmp_path):
    src = tmp_path / "base-s80-md"
    regenerate_base_s80(src)
    model, metadata = load_diarizen_dir(src)
    assert model.backbone.config.replace(conv_output_scale=False, name="x") == preset(
        "wavlm-base-plus-s80"
    ).replace(name="x")
    reference = np.load(BASE_S80 / "expected_logprobs.npy")
    ours = log_probs(model, BASE_S80 / "input.npy")
    assert ours.shape == reference.shape == (1, 399, 11)
    assert np.abs(ours - reference).max() < TOLERANCE
    summary = json.loads((BASE_S80 / "expected_hidden_summary.json").read_text())["layers"]
    waveforms = torch.from_numpy(np.load(BASE_S80 / "input.npy"))
    with torch.no_grad():
        hidden = [h[0].double() for h in model.backbone(waveforms)]
    assert len(hidden) == len(summary) == 13
    for state, expected in zip(hidden, summary):
        assert list(state.shape) == expected["shape"]
        assert abs(state.mean().item() - expected["mean"]) < TOLERANCE
        assert abs(state.std().item() - expected["std"]) < TOLERANCE
        assert abs(state.abs().max().item() - expected["absmax"]) < TOLERANCE
        np.testing.assert_allclose(
            state[0, :8].numpy(), expected["frame0_first8"], atol=TOLERANCE, rtol=0
        )
    assert metadata["pipeline"]["windows"] == {"duration_s": 16.0, "step_s": 1.6, "batch_size": 32}


# ---------------------------------------------------------------------- a pre-norm WavLM file
def diarizen_kwargs(config: WavLMConfig) -> dict:
    """The builder keywords DiariZen stores for a WavLM of this shape."""
    return {
        "extractor_mode": config.extractor_mode,
        "extractor_conv_layer_config": [tuple(layer) for layer in config.conv_layers],
        "extractor_conv_bias": False,
        "encoder_embed_dim": config.embed_dim,
        "encoder_projection_dropout": 0.1,
        "encoder_pos_conv_kernel": config.pos_conv_kernel,
        "encoder_pos_conv_groups": config.pos_conv_groups,
        "encoder_num_layers": config.num_layers,
        "encoder_use_attention": config.use_attention,
        "encoder_use_feed_forward": config.use_ffn,
        "encoder_total_num_heads": [config.num_heads] * config.num_layers,
        "encoder_remaining_heads": config.remaining_heads,
        "encoder_num_buckets": config.num_buckets,
        "encoder_max_distance": config.max_distance,
        "encoder_attention_dropout": 0.1,
        "encoder_ff_interm_features": config.ffn_dim,
        "encoder_ff_interm_dropout": 0.0,
        "encoder_dropout": 0.1,
        "encoder_layer_norm_first": config.layer_norm_first,
        "encoder_layer_drop": 0.1,
        "aux_num_out": None,
        "normalize_waveform": config.normalize_waveform,
        "extractor_prune_conv_channels": False,
        "encoder_prune_attention_heads": False,
        "encoder_prune_attention_layer": False,
        "encoder_prune_feed_forward_intermediate": False,
        "encoder_prune_feed_forward_layer": False,
    }


def diarizen_state(model: WavLM) -> dict:
    """Our WavLM's tensors under DiariZen's names, plus what DiariZen stores and never uses."""
    config, state = model.config, {}
    for key, value in model.state_dict().items():
        name = key
        if key == "feature_extractor.output_scale":
            name = "feature_extractor.dummy_weight"
        elif key.startswith("feature_extractor.conv_layers.") and ".norm." in key:
            name = key.replace(".norm.", ".layer_norm.")
        elif key.startswith("feature_projection."):
            name = "encoder." + key
        elif key.startswith("encoder.pos_conv."):
            part = {
                "bias": "bias",
                "weight_g": "parametrizations.weight.original0",
                "weight_v": "parametrizations.weight.original1",
            }[key.rsplit(".", 1)[1]]
            name = f"encoder.transformer.pos_conv_embed.conv.{part}"
        elif key == "encoder.rel_attn_embed.weight":
            name = "encoder.transformer.layers.0.attention.rel_attn_embed.weight"
        elif key.startswith("encoder."):
            name = "encoder.transformer." + key[len("encoder.") :]
        if name.endswith("gru_rel_pos_const"):
            layer = int(key.split(".")[2])
            full = torch.full((config.num_heads,), 7.0)  # removed heads: never used
            full[config.remaining_heads[layer]] = value
            value = full.reshape(1, -1, 1, 1)
        state[name] = value
    for i in range(config.num_layers):
        for norm, present in (
            ("layer_norm", config.use_attention[i]),
            ("final_layer_norm", config.use_ffn[i]),
        ):
            if not present:
                for kind in ("weight", "bias"):
                    key = f"encoder.transformer.layers.{i}.{norm}.{kind}"
                    state[key] = torch.full((config.embed_dim,), 3.0)
    return state


def test_pre_norm_wavlm_file_with_removed_blocks(tmp_path):
    config = preset("wavlm-tiny-prenorm").replace(
        remaining_heads=[[1, 3], []],
        use_attention=[True, False],
        ffn_dim=[0, 40],
        use_ffn=[False, True],
        conv_output_scale=True,
    )
    torch.manual_seed(0)
    model = WavLM(config).eval()
    with torch.no_grad():
        model.feature_extractor.output_scale.uniform_(0.5, 1.0)
        for name, p in model.named_parameters():
            if "norm" in name or "gru_rel_pos" in name:
                p.add_(torch.randn_like(p) * 0.1)
    state = diarizen_state(model)
    assert "encoder.transformer.layers.1.layer_norm.weight" in state  # no attention in layer 1
    torch.save({"config": diarizen_kwargs(config), "state_dict": state}, tmp_path / "wavlm.bin")
    loaded = WavLM.from_pretrained(tmp_path / "wavlm.bin")
    assert loaded.config.replace(name="x") == config.replace(name="x")
    waveforms = torch.randn(2, 8000)
    with torch.no_grad():
        for a, b in zip(model(waveforms), loaded(waveforms)):
            assert torch.equal(a, b)
    # an unused LayerNorm is tolerated only where the layer lacks the block it would feed
    state["encoder.transformer.layers.0.attention.extra.weight"] = torch.zeros(2)
    torch.save({"config": diarizen_kwargs(config), "state_dict": state}, tmp_path / "bad.bin")
    with pytest.raises(CheckpointError, match=r"layers\.0\.attention\.extra\.weight has no place"):
        WavLM.from_pretrained(tmp_path / "bad.bin")
    del state["encoder.transformer.layers.0.attention.extra.weight"]
    del state["encoder.transformer.layers.0.attention.q_proj.bias"]
    torch.save({"config": diarizen_kwargs(config), "state_dict": state}, tmp_path / "bad.bin")
    with pytest.raises(
        CheckpointError,
        match=r"no tensor for the model's "
        r"encoder\.layers\.0\.attention\.q_proj\.bias",
    ):
        WavLM.from_pretrained(tmp_path / "bad.bin")
