"""DiariZen model directories and WavLM files, read into slimdiar models.

A DiariZen model directory (as its authors release them) holds::

    config.toml         [model.args] the architecture, [inference.args] and [clustering.args]
                        the pipeline settings that go with the model
    pytorch_model.bin   the whole model's state dict (WavLM, weighted layer sum, Conformer head)
    plda/               optional: xvec_transform.npz and plda.npz for VBx clustering

``[model.args].wavlm_src`` names the WavLM either by a shape name (:data:`DIARIZEN_WAVLM_SHAPES`)
or by a DiariZen WavLM file (``{"config": <builder kwargs>, "state_dict": ...}``; a relative path
is resolved against the model directory).

Loading is strict: every tensor of ``pytorch_model.bin`` gets a place in the slimdiar model or is
one of the few that the reference model stores but never uses (a pre-norm layer's LayerNorm in
front of a block it does not have, the gate constants of removed heads), every parameter of the
slimdiar model is filled, shapes are checked, and the first offending key is named. Nothing is
executed: ``.bin`` files are read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import logging
import re
import shutil
import sys
from pathlib import Path

import torch

from slimdiar.errors import CheckpointError, ConfigError
from slimdiar.frames import SAMPLE_RATE
from slimdiar.models.wavlm.config import WavLMConfig, preset

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.toml"
WEIGHTS_NAME = "pytorch_model.bin"
PLDA_NAME = "plda"
WAVLM_PREFIX = "wavlm_model."

#: Every WavLM shape name DiariZen's model config accepts, and the slimdiar preset of that shape.
#: DiariZen's WavLM always carries the per-channel scale before the feature-projection LayerNorm.
DIARIZEN_WAVLM_SHAPES = {
    "wavlm_base": "wavlm-base-plus",
    "wavlm_large": "wavlm-large",
    "wavlm_base_s80_md": "wavlm-base-plus-s80",
    "wavlm_large_s80_md": "wavlm-large-s80",
}

#: Clustering method names of DiariZen's config and slimdiar's.
CLUSTERING_METHODS = {"VBxClustering": "vbx", "AgglomerativeClustering": "agglomerative"}

MEDIAN_FILTER_FRAMES = 11


# ---------------------------------------------------------------------------- WavLM shape
def diarizen_wavlm_shape(name: str) -> WavLMConfig:
    """The WavLM config of one of DiariZen's named shapes (case-insensitive, as DiariZen)."""
    key = name.lower()
    if key not in DIARIZEN_WAVLM_SHAPES:
        raise ConfigError(
            f"unknown DiariZen WavLM shape {name!r}; known shapes: "
            f"{', '.join(DIARIZEN_WAVLM_SHAPES)} (or give the path of a DiariZen WavLM file)"
        )
    config = preset(DIARIZEN_WAVLM_SHAPES[key]).replace(conv_output_scale=True)
    config.name = key
    return config


# Builder keywords of a DiariZen WavLM file and what they must be for a plain (unpruning) model.
_REQUIRED_KWARGS = (
    "extractor_mode", "extractor_conv_layer_config", "encoder_embed_dim",
    "encoder_num_layers", "encoder_use_attention", "encoder_use_feed_forward",
    "encoder_total_num_heads", "encoder_remaining_heads", "encoder_ff_interm_features",
    "encoder_layer_norm_first", "normalize_waveform",
)
_TRAINING_ONLY_KWARGS = (
    "encoder_projection_dropout", "encoder_attention_dropout", "encoder_ff_interm_dropout",
    "encoder_dropout", "encoder_layer_drop", "limit_l", "limit_r", "temperature",
)
_OPTIONAL_KWARGS = (
    "extractor_conv_bias", "encoder_pos_conv_kernel", "encoder_pos_conv_groups",
    "encoder_num_buckets", "encoder_max_distance", "aux_num_out", "use_layerwise_prune",
)


def wavlm_config_from_diarizen(kwargs: dict, source) -> WavLMConfig:
    """Our WavLM config from the builder keywords stored in a DiariZen WavLM file.

    Parameters
    ----------
    kwargs
        The file's ``config`` mapping.
    source
        Named in error messages.
    """
    if not isinstance(kwargs, dict):
        raise CheckpointError(f"{source}: 'config' must be a mapping, got {type(kwargs).__name__}")
    prune_keys = [k for k in kwargs if "prune" in k and k != "use_layerwise_prune"]
    known = set(_REQUIRED_KWARGS) | set(_TRAINING_ONLY_KWARGS) | set(_OPTIONAL_KWARGS)
    unknown = sorted(set(kwargs) - known - set(prune_keys))
    if unknown:
        raise CheckpointError(f"{source}: unknown DiariZen WavLM config keys {unknown}")
    missing = [k for k in _REQUIRED_KWARGS if k not in kwargs]
    if missing:
        raise CheckpointError(f"{source}: DiariZen WavLM config lacks {missing}")
    for key in prune_keys + ["use_layerwise_prune"]:
        if kwargs.get(key, False) is not False:
            raise CheckpointError(
                f"{source}: {key}={kwargs[key]!r}: a WavLM with pruning gates cannot be loaded; "
                "prune it first"
            )
    if kwargs.get("extractor_conv_bias", False):
        raise CheckpointError(f"{source}: conv layers with bias are not supported by this WavLM")
    if kwargs.get("aux_num_out") is not None:
        raise CheckpointError(f"{source}: a WavLM with an auxiliary output layer is not supported")
    total = kwargs["encoder_total_num_heads"]
    if not isinstance(total, list) or not total or len(set(total)) != 1:
        raise CheckpointError(
            f"{source}: encoder_total_num_heads must list one and the same head count per "
            f"layer, got {total!r}"
        )
    num_heads, embed_dim = int(total[0]), int(kwargs["encoder_embed_dim"])
    if embed_dim % num_heads:
        raise CheckpointError(
            f"{source}: encoder_embed_dim {embed_dim} is not divisible by {num_heads} heads"
        )
    if kwargs["extractor_mode"] not in ("group_norm", "layer_norm"):
        raise CheckpointError(
            f"{source}: extractor_mode {kwargs['extractor_mode']!r} is not group_norm/layer_norm"
        )
    use_attention = [bool(v) for v in kwargs["encoder_use_attention"]]
    if use_attention and not use_attention[0]:
        raise CheckpointError(
            f"{source}: layer 0 has no attention block, so this WavLM has no relative position "
            "embedding; such a model is not supported"
        )
    remaining = [list(heads) if use else []
                 for heads, use in zip(kwargs["encoder_remaining_heads"], use_attention)]
    use_ffn = [bool(v) for v in kwargs["encoder_use_feed_forward"]]
    ffn_dim = [int(f) if use else 0
               for f, use in zip(kwargs["encoder_ff_interm_features"], use_ffn)]
    try:
        return WavLMConfig(
            conv_layers=[tuple(layer) for layer in kwargs["extractor_conv_layer_config"]],
            extractor_mode=kwargs["extractor_mode"],
            embed_dim=embed_dim,
            num_layers=int(kwargs["encoder_num_layers"]),
            num_heads=num_heads,
            head_dim=embed_dim // num_heads,
            ffn_dim=ffn_dim,
            remaining_heads=remaining,
            use_attention=[bool(h) for h in remaining],
            use_ffn=[f > 0 for f in ffn_dim],
            layer_norm_first=bool(kwargs["encoder_layer_norm_first"]),
            normalize_waveform=bool(kwargs["normalize_waveform"]),
            pos_conv_kernel=int(kwargs.get("encoder_pos_conv_kernel", 128)),
            pos_conv_groups=int(kwargs.get("encoder_pos_conv_groups", 16)),
            num_buckets=int(kwargs.get("encoder_num_buckets", 320)),
            max_distance=int(kwargs.get("encoder_max_distance", 800)),
            conv_output_scale=True,
            name=Path(str(source)).stem,
        )
    except (ConfigError, TypeError, ValueError) as error:
        raise CheckpointError(f"{source}: invalid DiariZen WavLM config ({error})") from None


# ---------------------------------------------------------------------------- key maps
_WAVLM_FIXED = {
    "feature_extractor.dummy_weight": "feature_extractor.output_scale",
    "encoder.transformer.pos_conv_embed.conv.bias": "encoder.pos_conv.bias",
    "encoder.transformer.pos_conv_embed.conv.parametrizations.weight.original0":
        "encoder.pos_conv.weight_g",
    "encoder.transformer.pos_conv_embed.conv.parametrizations.weight.original1":
        "encoder.pos_conv.weight_v",
    "encoder.transformer.pos_conv_embed.conv.weight_g": "encoder.pos_conv.weight_g",
    "encoder.transformer.pos_conv_embed.conv.weight_v": "encoder.pos_conv.weight_v",
    "encoder.transformer.layer_norm.weight": "encoder.layer_norm.weight",
    "encoder.transformer.layer_norm.bias": "encoder.layer_norm.bias",
    "encoder.transformer.layers.0.attention.rel_attn_embed.weight":
        "encoder.rel_attn_embed.weight",
}
_CONV_KEY = re.compile(r"^feature_extractor\.conv_layers\.(\d+)\.(conv|layer_norm)\.(weight|bias)$")
_LAYER_KEY = re.compile(
    r"^encoder\.transformer\.layers\.(\d+)\.("
    r"attention\.(?:q_proj|k_proj|v_proj|out_proj|gru_rel_pos_linear)\.(?:weight|bias)"
    r"|attention\.gru_rel_pos_const"
    r"|feed_forward\.(?:intermediate_dense|output_dense)\.(?:weight|bias)"
    r"|(?:layer_norm|final_layer_norm)\.(?:weight|bias))$"
)
_UNUSED_NORM = re.compile(r"^encoder\.layers\.\d+\.(layer_norm|final_layer_norm)\.(weight|bias)$")


def _wavlm_key(key: str) -> str | None:
    """Our WavLM key for a DiariZen WavLM key, or ``None``."""
    if key in _WAVLM_FIXED:
        return _WAVLM_FIXED[key]
    match = _CONV_KEY.match(key)
    if match:
        i, part, kind = match.groups()
        return f"feature_extractor.conv_layers.{i}.{'conv' if part == 'conv' else 'norm'}.{kind}"
    if key.startswith("encoder.feature_projection."):
        return key[len("encoder."):]
    match = _LAYER_KEY.match(key)
    if match:
        return f"encoder.layers.{match.group(1)}.{match.group(2)}"
    return None


_BLOCK_PARTS = {
    "ffn1.ln_norm": "ffn1.norm", "ffn1.w_1": "ffn1.linear1", "ffn1.w_2": "ffn1.linear2",
    "ffn2.ln_norm": "ffn2.norm", "ffn2.w_1": "ffn2.linear1", "ffn2.w_2": "ffn2.linear2",
    "mha.ln_norm": "attention.norm", "mha.mha.linearO": "attention.attention.out_proj",
    "conv.ln_norm": "conv.norm", "conv.pointwise_conv1": "conv.pointwise1",
    "conv.depthwise_conv": "conv.depthwise", "conv.bn_norm": "conv.batch_norm",
    "conv.pointwise_conv2": "conv.pointwise2", "ln_norm": "norm",
}
_HEAD_FIXED = {
    "weight_sum.weight": "weight_sum.weight",
    "proj.weight": "projection.weight", "proj.bias": "projection.bias",
    "lnorm.weight": "norm.weight", "lnorm.bias": "norm.bias",
    "classifier.weight": "classifier.weight", "classifier.bias": "classifier.bias",
}
_BLOCK_KEY = re.compile(
    r"^conformer\.conformer_layer\.(\d+)\.(.+)\."
    r"(weight|bias|running_mean|running_var|num_batches_tracked)$"
)
_QKV = {"mha.mha.linearQ": 0, "mha.mha.linearK": 1, "mha.mha.linearV": 2}


def _mismatch(source, key: str, value: torch.Tensor, target: str, expected: torch.Size):
    return CheckpointError(
        f"{source}: {key} has shape {tuple(value.shape)} but the model's {target} needs "
        f"{tuple(expected)}"
    )


def _map_wavlm(raw: dict, config: WavLMConfig, expected: dict, source, prefix: str = "",
               target_prefix: str = "") -> dict:
    """Our WavLM tensors (keys with ``target_prefix``) from DiariZen's (keys with ``prefix``)."""
    state = {}
    for key, value in raw.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix):]
        ours = _wavlm_key(name)
        if ours is None:
            raise CheckpointError(f"{source}: key {key} has no place in the WavLM")
        if ours.endswith("gru_rel_pos_const"):
            layer = int(ours.split(".")[2])
            if value.numel() != config.num_heads:
                raise _mismatch(source, key, value, target_prefix + ours,
                                torch.Size([1, config.num_heads, 1, 1]))
            # one constant per head of the unpruned layer: keep those of the remaining heads
            value = value.reshape(-1)[torch.tensor(config.remaining_heads[layer],
                                                   dtype=torch.long)]
        target = target_prefix + ours
        if target not in expected:
            if config.layer_norm_first and _UNUSED_NORM.match(ours):
                # a pre-norm layer's LayerNorm in front of a block the layer does not have
                logger.debug("%s: %s is never used by the model; dropped", source, key)
                continue
            raise CheckpointError(f"{source}: key {key} has no place in the WavLM ({target})")
        if value.shape != expected[target].shape:
            raise _mismatch(source, key, value, target, expected[target].shape)
        state[target] = value
    return state


def _map_head(raw: dict, expected: dict, source) -> dict:
    """Our EEND head tensors from DiariZen's (every key outside ``wavlm_model.``)."""
    state: dict[str, torch.Tensor] = {}
    # (block, "weight" or "bias") -> the (key, tensor) of Q, K and V as they turn up
    qkv: dict[tuple[str, str], list[tuple[str, torch.Tensor] | None]] = {}
    for key, value in raw.items():
        if key.startswith(WAVLM_PREFIX):
            continue
        target = _HEAD_FIXED.get(key)
        match = _BLOCK_KEY.match(key)
        if target is None and match:
            block, part, kind = match.groups()
            if part in _QKV:
                if kind not in ("weight", "bias"):
                    raise CheckpointError(f"{source}: key {key} has no place in the model")
                qkv.setdefault((block, kind), [None, None, None])[_QKV[part]] = (key, value)
                continue
            if part in _BLOCK_PARTS:
                target = f"conformer.blocks.{block}.{_BLOCK_PARTS[part]}.{kind}"
        if target is None or target not in expected:
            raise CheckpointError(f"{source}: key {key} has no place in the model")
        if value.shape != expected[target].shape:
            raise _mismatch(source, key, value, target, expected[target].shape)
        state[target] = value
    for (block, kind), parts in qkv.items():
        names = ("linearQ", "linearK", "linearV")
        for part, name in zip(parts, names):
            if part is None:
                raise CheckpointError(
                    f"{source}: conformer.conformer_layer.{block}.mha.mha.{name}.{kind} is "
                    "missing (the attention needs Q, K and V)"
                )
        found = [part for part in parts if part is not None]  # Q, K and V: checked above
        target = f"conformer.blocks.{block}.attention.attention.in_proj_{kind}"
        value = torch.cat([value for _, value in found], dim=0)
        if target not in expected:
            raise CheckpointError(f"{source}: key {found[0][0]} has no place in the model")
        if value.shape != expected[target].shape:
            raise _mismatch(source, found[0][0], found[0][1], target, expected[target].shape)
        state[target] = value
    return state


def _check_complete(state: dict, expected: dict, source) -> None:
    missing = [k for k in expected if k not in state]
    if missing:
        raise CheckpointError(
            f"{source}: no tensor for the model's {missing[0]}"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
        )


# ---------------------------------------------------------------------------- WavLM files
def _torch_load(path: Path):
    from slimdiar.models.wavlm.convert import torch_load_safely

    return torch_load_safely(path)


def is_diarizen_wavlm_file(content) -> bool:
    """Whether a loaded file's content looks like a DiariZen WavLM file."""
    return (isinstance(content, dict) and set(content) == {"config", "state_dict"}
            and isinstance(content["config"], dict)
            and "encoder_remaining_heads" in content["config"])


def read_diarizen_wavlm_file(path: str | Path, content=None) -> tuple[WavLMConfig, dict]:
    """The config and our state dict of a DiariZen WavLM file ``{config, state_dict}``.

    Parameters
    ----------
    path
        The file.
    content
        Its already loaded content, if the caller read it.
    """
    path = Path(path)
    content = _torch_load(path) if content is None else content
    if not is_diarizen_wavlm_file(content):
        raise CheckpointError(
            f"{path}: not a DiariZen WavLM file (expected a dict with 'config' holding "
            "encoder_remaining_heads and 'state_dict')"
        )
    config = wavlm_config_from_diarizen(content["config"], path)
    from slimdiar.models.wavlm import WavLM

    expected = WavLM(config).state_dict()
    state_dict = content["state_dict"]
    if not isinstance(state_dict, dict):
        raise CheckpointError(f"{path}: 'state_dict' must be a mapping of tensors")
    state = _map_wavlm(state_dict, config, expected, path)
    _check_complete(state, expected, path)
    return config, state


# ---------------------------------------------------------------------------- model directories
def is_diarizen_dir(path: str | Path) -> bool:
    """Whether ``path`` is a DiariZen model directory (``config.toml`` + ``pytorch_model.bin``)."""
    path = Path(path)
    return (path / CONFIG_NAME).is_file() and (path / WEIGHTS_NAME).is_file()


def read_diarizen_config(directory: str | Path) -> dict:
    """The parsed ``config.toml`` of a DiariZen model directory."""
    path = Path(directory) / CONFIG_NAME
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path}: not valid TOML ({error})") from None
    args = data.get("model", {}).get("args") if isinstance(data.get("model"), dict) else None
    if not isinstance(args, dict):
        raise CheckpointError(f"{path}: no [model.args] table")
    return data


_MODEL_ARGS = {
    "wavlm_src", "wavlm_layer_num", "wavlm_feat_dim", "attention_in", "ffn_hidden", "num_head",
    "num_layer", "kernel_size", "dropout", "use_posi", "output_activate_function",
    "max_speakers_per_chunk", "max_speakers_per_frame", "chunk_size", "num_channels",
    "selected_channel", "sample_rate",
}


def _wavlm_of(args: dict, directory: Path) -> tuple[WavLMConfig, str]:
    """The WavLM config named by ``wavlm_src`` and a description of the source."""
    source = args.get("wavlm_src", "wavlm_base")
    if not isinstance(source, str) or not source:
        raise CheckpointError(f"{directory / CONFIG_NAME}: wavlm_src must be a non-empty string")
    if source.lower() in DIARIZEN_WAVLM_SHAPES:
        return diarizen_wavlm_shape(source), source.lower()
    path = Path(source)
    path = path if path.is_absolute() else directory / path
    if not path.is_file():
        raise CheckpointError(
            f"{directory / CONFIG_NAME}: wavlm_src {source!r} is neither a DiariZen WavLM shape "
            f"({', '.join(DIARIZEN_WAVLM_SHAPES)}) nor a file (looked for {path})"
        )
    content = _torch_load(path)
    if not is_diarizen_wavlm_file(content):
        raise CheckpointError(f"{path}: not a DiariZen WavLM file ({{config, state_dict}})")
    # Its tensors are also in pytorch_model.bin (which DiariZen loads over them): only the
    # shape is taken from here.
    return wavlm_config_from_diarizen(content["config"], path), path.name


def eend_config_from_diarizen(args: dict, wavlm: WavLMConfig, source):
    """Our :class:`~slimdiar.models.eend.EENDConfig` from DiariZen's ``[model.args]``."""
    from slimdiar.models.eend import EENDConfig

    unknown = sorted(set(args) - _MODEL_ARGS)
    if unknown:
        raise CheckpointError(f"{source}: unknown [model.args] keys {unknown}")
    if args.get("use_posi", False):
        raise CheckpointError(f"{source}: use_posi = true (relative positions in the Conformer) "
                              "is not supported")
    if args.get("output_activate_function", False):
        raise CheckpointError(
            f"{source}: output_activate_function = {args['output_activate_function']!r} is not "
            "supported (only false, as in the released models)"
        )
    if int(args.get("sample_rate", SAMPLE_RATE)) != SAMPLE_RATE:
        raise CheckpointError(
            f"{source}: sample_rate must be {SAMPLE_RATE}, got {args['sample_rate']}"
        )
    layers = int(args.get("wavlm_layer_num", wavlm.num_layers + 1))
    if layers != wavlm.num_layers + 1:
        raise CheckpointError(
            f"{source}: wavlm_layer_num = {layers} but the WavLM has {wavlm.num_layers} layers "
            f"({wavlm.num_layers + 1} hidden states)"
        )
    width = int(args.get("wavlm_feat_dim", wavlm.embed_dim))
    if width != wavlm.embed_dim:
        raise CheckpointError(
            f"{source}: wavlm_feat_dim = {width} but the WavLM's width is {wavlm.embed_dim}"
        )
    try:
        return EENDConfig(
            frontend="wavlm",
            wavlm=wavlm,
            d_model=int(args.get("attention_in", 256)),
            num_heads=int(args.get("num_head", 4)),
            ffn_dim=int(args.get("ffn_hidden", 1024)),
            conv_kernel=int(args.get("kernel_size", 31)),
            num_blocks=int(args.get("num_layer", 4)),
            dropout=float(args.get("dropout", 0.1)),
            max_speakers_per_chunk=int(args.get("max_speakers_per_chunk", 4)),
            max_speakers_per_frame=int(args.get("max_speakers_per_frame", 2)),
            layer_sum="linear",
        )
    except ConfigError as error:
        raise CheckpointError(f"{source}: invalid [model.args] ({error})") from None


_INFERENCE_ARGS = {"seg_duration", "segmentation_step", "batch_size", "apply_median_filtering"}
_CLUSTERING_ARGS = {
    "vbx": {"ahc_threshold": "ahc_threshold", "Fa": "fa", "Fb": "fb", "lda_dim": "lda_dim",
            "max_iters": "max_iters"},
    "agglomerative": {"ahc_threshold": "threshold", "min_cluster_size": "min_cluster_size"},
}


def pipeline_settings(data: dict, source, chunk_size_s: float | None = None) -> dict:
    """The ``metadata["pipeline"]`` section from DiariZen's ``[inference]`` and ``[clustering]``.

    Parameters
    ----------
    data
        The parsed ``config.toml``.
    source
        Named in error messages.
    chunk_size_s
        The model's training chunk, the window length when ``seg_duration`` is absent.

    Returns
    -------
    dict
        ``{"windows": ..., "segmentation": ..., "clustering": ..., "speakers": ...}`` with the
        sections the config has; a VBx ``plda_dir`` is ``"plda"`` (relative to the model).
    """
    pipeline: dict = {}
    inference = (data.get("inference") or {}).get("args") or {}
    unknown = sorted(set(inference) - _INFERENCE_ARGS)
    if unknown:
        raise CheckpointError(f"{source}: unknown [inference.args] keys {unknown}")
    windows = {}
    duration_s = inference.get("seg_duration", chunk_size_s)
    if "seg_duration" in inference:
        windows["duration_s"] = float(inference["seg_duration"])
    if "segmentation_step" in inference:
        if duration_s is None:
            raise CheckpointError(f"{source}: segmentation_step needs seg_duration")
        # a fraction of the window, as pyannote's segmentation_step
        windows["step_s"] = round(float(inference["segmentation_step"]) * float(duration_s), 6)
    if "batch_size" in inference:
        windows["batch_size"] = int(inference["batch_size"])
    if windows:
        pipeline["windows"] = windows
    if "apply_median_filtering" in inference:
        frames = MEDIAN_FILTER_FRAMES if inference["apply_median_filtering"] else 1
        pipeline["segmentation"] = {"median_filter_frames": frames}
    clustering = dict((data.get("clustering") or {}).get("args") or {})
    speakers = {k: int(clustering.pop(k)) for k in ("min_speakers", "max_speakers")
                if k in clustering}
    if speakers:
        pipeline["speakers"] = speakers
    if clustering:
        method_name = clustering.pop("method", None)
        if method_name not in CLUSTERING_METHODS:
            raise CheckpointError(
                f"{source}: [clustering.args] method {method_name!r} is not one of "
                f"{', '.join(CLUSTERING_METHODS)}"
            )
        method = CLUSTERING_METHODS[method_name]
        criterion = clustering.pop("ahc_criterion", "distance")
        if criterion != "distance":
            raise CheckpointError(
                f"{source}: ahc_criterion {criterion!r} is not supported (only 'distance')"
            )
        names = _CLUSTERING_ARGS[method]
        unknown = sorted(set(clustering) - set(names))
        if unknown:
            raise CheckpointError(
                f"{source}: [clustering.args] keys {unknown} do not apply to {method_name}"
            )
        options = {"method": method}
        for key, value in clustering.items():
            options[names[key]] = value
        if method == "vbx":
            options["plda_dir"] = PLDA_NAME
        pipeline["clustering"] = options
    return pipeline


def _read_weights(directory: Path) -> dict:
    raw = _torch_load(directory / WEIGHTS_NAME)
    if not isinstance(raw, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in raw.items()
    ):
        raise CheckpointError(
            f"{directory / WEIGHTS_NAME}: expected a state dict (a mapping of names to tensors)"
        )
    return raw


def load_diarizen_dir(src: str | Path):
    """Load a DiariZen model directory as an :class:`~slimdiar.models.eend.EEND`.

    Parameters
    ----------
    src
        Directory with ``config.toml`` and ``pytorch_model.bin`` (and optionally ``plda/``).

    Returns
    -------
    tuple
        ``(model, metadata)``: the model in eval mode and its metadata, whose ``"pipeline"``
        holds the pipeline settings of ``config.toml`` (a VBx ``plda_dir`` made absolute).
    """
    from slimdiar.models.eend import EEND

    directory = Path(src)
    if not is_diarizen_dir(directory):
        raise CheckpointError(
            f"{directory}: not a DiariZen model directory (expected {CONFIG_NAME} and "
            f"{WEIGHTS_NAME})"
        )
    data = read_diarizen_config(directory)
    args = data["model"]["args"]
    source = directory / CONFIG_NAME
    wavlm, wavlm_source = _wavlm_of(args, directory)
    config = eend_config_from_diarizen(args, wavlm, source)
    if int(args.get("selected_channel", 0)) != 0:
        logger.info("%s: selected_channel %s is not used; the pipeline picks the channel",
                    source, args["selected_channel"])
    raw = _read_weights(directory)
    weights = directory / WEIGHTS_NAME
    model = EEND(config)
    expected = model.state_dict()
    state = _map_wavlm(raw, wavlm, expected, weights, prefix=WAVLM_PREFIX,
                       target_prefix="backbone.")
    state.update(_map_head(raw, expected, weights))
    _check_complete(state, expected, weights)
    model.load_state_dict(state, strict=True)
    model.eval()
    chunk = args.get("chunk_size")
    pipeline = pipeline_settings(data, source, None if chunk is None else float(chunk))
    clustering = pipeline.get("clustering", {})
    if "plda_dir" in clustering:
        plda = (directory / clustering["plda_dir"]).resolve()
        if not plda.is_dir():
            logger.warning("%s: no %s/ directory; VBx clustering will need one", directory,
                           PLDA_NAME)
        clustering["plda_dir"] = str(plda)
    metadata = {
        "source": {"format": "diarizen", "wavlm_src": wavlm_source},
        "pipeline": pipeline,
    }
    if chunk is not None:
        metadata["source"]["chunk_size_s"] = float(chunk)
    logger.info("loaded DiariZen model %s (WavLM %s, %.1fM parameters)", directory,
                wavlm_source, sum(p.numel() for p in model.parameters()) / 1e6)
    return model, metadata


def convert_diarizen_dir(src: str | Path, out: str | Path) -> Path:
    """Convert a DiariZen model directory into a slimdiar EEND checkpoint directory.

    The checkpoint's metadata holds the pipeline settings (``metadata["pipeline"]``); a
    ``plda/`` directory is copied into the checkpoint, and ``plda_dir`` is ``"plda"``, relative
    to it. The output appears complete or not at all.

    Parameters
    ----------
    src
        The DiariZen model directory.
    out
        The checkpoint directory to write (replaced if it exists).

    Returns
    -------
    Path
        The checkpoint directory.
    """
    from slimdiar.fileio import make_temporary_dir

    src, out = Path(src), Path(out)
    model, metadata = load_diarizen_dir(src)
    clustering = metadata["pipeline"].get("clustering", {})
    plda = src / PLDA_NAME
    if "plda_dir" in clustering:
        clustering["plda_dir"] = PLDA_NAME
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = make_temporary_dir(out.parent, f".{out.name}.tmp.")
    try:
        built = model.save_pretrained(staging / "ckpt", metadata=metadata)
        if plda.is_dir():
            shutil.copytree(plda, built / PLDA_NAME)
        if out.exists():
            old = make_temporary_dir(out.parent, f".{out.name}.old.")
            out.replace(old / "ckpt")
            built.replace(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            built.replace(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("converted %s to %s", src, out)
    return out

