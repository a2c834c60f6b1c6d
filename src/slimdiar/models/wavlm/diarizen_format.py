"""The DiariZen WavLM format: its builder keywords and its tensor names, in our terms.

DiariZen stores a WavLM as ``{"config": <builder kwargs>, "state_dict": ...}`` and, inside a
DiariZen model directory, under ``wavlm_model.`` in the whole model's ``pytorch_model.bin`` (see
:mod:`slimdiar.models.diarizen`). Both name the tensors the same way; this module translates the
builder keywords into a :class:`~slimdiar.models.wavlm.config.WavLMConfig` and the tensor names
into ours, without the model: whoever builds the model checks shapes and completeness
(:func:`~slimdiar.models.checkpoint.load_state_dict_strict` with the ``file_keys`` returned here).

What DiariZen stores but never uses is dropped: the LayerNorm of a pre-norm layer in front of a
block the layer does not have, the gate constants of removed heads.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch

from slimdiar.errors import CheckpointError, ConfigError
from slimdiar.models.wavlm.config import WavLMConfig

logger = logging.getLogger(__name__)


def is_diarizen_wavlm_file(content) -> bool:
    """Whether a loaded file's content looks like a DiariZen WavLM file."""
    return (
        isinstance(content, dict)
        and set(content) == {"config", "state_dict"}
        and isinstance(content["config"], dict)
        and "encoder_remaining_heads" in content["config"]
    )


# Builder keywords of a DiariZen WavLM file and what they must be for a plain (unpruning) model.
_REQUIRED_KWARGS = (
    "extractor_mode",
    "extractor_conv_layer_config",
    "encoder_embed_dim",
    "encoder_num_layers",
    "encoder_use_attention",
    "encoder_use_feed_forward",
    "encoder_total_num_heads",
    "encoder_remaining_heads",
    "encoder_ff_interm_features",
    "encoder_layer_norm_first",
    "normalize_waveform",
)
_TRAINING_ONLY_KWARGS = (
    "encoder_projection_dropout",
    "encoder_attention_dropout",
    "encoder_ff_interm_dropout",
    "encoder_dropout",
    "encoder_layer_drop",
    "limit_l",
    "limit_r",
    "temperature",
)
_OPTIONAL_KWARGS = (
    "extractor_conv_bias",
    "encoder_pos_conv_kernel",
    "encoder_pos_conv_groups",
    "encoder_num_buckets",
    "encoder_max_distance",
    "aux_num_out",
    "use_layerwise_prune",
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
    remaining = [
        list(heads) if use else []
        for heads, use in zip(kwargs["encoder_remaining_heads"], use_attention)
    ]
    use_ffn = [bool(v) for v in kwargs["encoder_use_feed_forward"]]
    ffn_dim = [
        int(f) if use else 0 for f, use in zip(kwargs["encoder_ff_interm_features"], use_ffn)
    ]
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


# ---------------------------------------------------------------------------- tensor names
_POS_CONV = "encoder.transformer.pos_conv_embed.conv"
_FIXED = {
    "feature_extractor.dummy_weight": "feature_extractor.output_scale",
    "encoder.transformer.pos_conv_embed.conv.bias": "encoder.pos_conv.bias",
    # torch.nn.utils.parametrizations.weight_norm's names of g and v
    f"{_POS_CONV}.parametrizations.weight.original0": "encoder.pos_conv.weight_g",
    f"{_POS_CONV}.parametrizations.weight.original1": "encoder.pos_conv.weight_v",
    "encoder.transformer.pos_conv_embed.conv.weight_g": "encoder.pos_conv.weight_g",
    "encoder.transformer.pos_conv_embed.conv.weight_v": "encoder.pos_conv.weight_v",
    "encoder.transformer.layer_norm.weight": "encoder.layer_norm.weight",
    "encoder.transformer.layer_norm.bias": "encoder.layer_norm.bias",
    "encoder.transformer.layers.0.attention.rel_attn_embed.weight": "encoder.rel_attn_embed.weight",
}
_CONV_KEY = re.compile(r"^feature_extractor\.conv_layers\.(\d+)\.(conv|layer_norm)\.(weight|bias)$")
_LAYER_KEY = re.compile(
    r"^encoder\.transformer\.layers\.(\d+)\.("
    r"attention\.(?:q_proj|k_proj|v_proj|out_proj|gru_rel_pos_linear)\.(?:weight|bias)"
    r"|attention\.gru_rel_pos_const"
    r"|feed_forward\.(?:intermediate_dense|output_dense)\.(?:weight|bias)"
    r"|(?:layer_norm|final_layer_norm)\.(?:weight|bias))$"
)
_LAYER_NORM_KEY = re.compile(r"^encoder\.layers\.(\d+)\.(layer_norm|final_layer_norm)\.")
_GATE_CONST_KEY = re.compile(r"^encoder\.layers\.(\d+)\.attention\.gru_rel_pos_const$")


def diarizen_wavlm_key(key: str) -> str | None:
    """Our WavLM key for a DiariZen WavLM key, or ``None`` when the key has no place in WavLM."""
    if key in _FIXED:
        return _FIXED[key]
    match = _CONV_KEY.match(key)
    if match:
        i, part, kind = match.groups()
        return f"feature_extractor.conv_layers.{i}.{'conv' if part == 'conv' else 'norm'}.{kind}"
    if key.startswith("encoder.feature_projection."):
        return key[len("encoder.") :]
    match = _LAYER_KEY.match(key)
    if match:
        return f"encoder.layers.{match.group(1)}.{match.group(2)}"
    return None


def _never_used(ours: str, config: WavLMConfig) -> bool:
    """Whether DiariZen stores this tensor for a pre-norm layer that lacks the block it feeds."""
    match = _LAYER_NORM_KEY.match(ours)
    if not config.layer_norm_first or match is None:
        return False
    layer, norm = int(match.group(1)), match.group(2)
    if layer >= config.num_layers:
        return False
    present = config.use_attention if norm == "layer_norm" else config.use_ffn
    return not present[layer]


def map_diarizen_wavlm(
    raw: dict, config: WavLMConfig, source, prefix: str = "", target_prefix: str = ""
) -> tuple[dict, dict]:
    """Our WavLM tensors from DiariZen's.

    Parameters
    ----------
    raw
        DiariZen's tensors; those whose key starts with ``prefix`` are the WavLM's.
    config
        The WavLM they are for (from :func:`wavlm_config_from_diarizen`).
    source
        Named in error messages.
    prefix, target_prefix
        The WavLM's key prefix in ``raw`` and in the returned state dict.

    Returns
    -------
    tuple
        ``(state_dict, file_keys)``: the tensors under our keys and, for each of our keys, the
        key the file stores it under (for
        :func:`~slimdiar.models.checkpoint.load_state_dict_strict`).

    Raises
    ------
    CheckpointError
        On the first key that has no place in a WavLM, or gate constants not one per head.
    """
    state, file_keys = {}, {}
    for key, value in raw.items():
        if not key.startswith(prefix):
            continue
        ours = diarizen_wavlm_key(key[len(prefix) :])
        if ours is None:
            raise CheckpointError(f"{source}: key {key} has no place in the WavLM")
        if _never_used(ours, config):
            logger.debug("%s: %s is never used by the model; dropped", source, key)
            continue
        match = _GATE_CONST_KEY.match(ours)
        if match and int(match.group(1)) < config.num_layers:
            if value.numel() != config.num_heads:
                raise CheckpointError(
                    f"{source}: {key} has shape {tuple(value.shape)} but the model's "
                    f"{target_prefix + ours} needs {(1, config.num_heads, 1, 1)}"
                )
            # one constant per head of the unpruned layer: keep those of the remaining heads
            heads = torch.tensor(config.remaining_heads[int(match.group(1))], dtype=torch.long)
            value = value.reshape(-1)[heads]
        state[target_prefix + ours] = value
        file_keys[target_prefix + ours] = key
    return state, file_keys


def read_diarizen_wavlm(content: dict, source) -> tuple[WavLMConfig, dict, dict]:
    """The config, our state dict and the file's key of each tensor, of a DiariZen WavLM file.

    Parameters
    ----------
    content
        The loaded file, ``{"config": ..., "state_dict": ...}``.
    source
        The file, named in error messages and giving the config its name.
    """
    if not is_diarizen_wavlm_file(content):
        raise CheckpointError(
            f"{source}: not a DiariZen WavLM file (expected a dict with 'config' holding "
            "encoder_remaining_heads and 'state_dict')"
        )
    config = wavlm_config_from_diarizen(content["config"], source)
    state_dict = content["state_dict"]
    if not isinstance(state_dict, dict):
        raise CheckpointError(f"{source}: 'state_dict' must be a mapping of tensors")
    state, file_keys = map_diarizen_wavlm(state_dict, config, source)
    return config, state, file_keys
