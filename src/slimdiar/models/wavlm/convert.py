"""Reading WavLM weights from the formats they are published in.

One entry point, :func:`read_wavlm`, returns the config and the state dict in our key layout
(:class:`WavLMWeights`); the caller builds the model and loads the tensors strictly
(:meth:`slimdiar.models.wavlm.WavLM.from_pretrained`). The sources:

- a Hugging Face directory: ``config.json`` (``WavLMModel``) + ``model.safetensors`` or
  ``pytorch_model.bin``, optionally ``preprocessor_config.json`` (``do_normalize``);
- the original release file (``WavLM-Base+.pt``, ``WavLM-Large.pt``): a dict with ``cfg`` and
  ``model``;
- a slimdiar checkpoint directory (a plain or pruned WavLM, or a diarization model whose backbone
  is taken);
- a DiariZen WavLM file (``{"config": <builder kwargs>, "state_dict": ...}``, read by
  :mod:`~slimdiar.models.wavlm.diarizen_format`).

Nothing here executes code from the files: ``.bin``/``.pt`` files are read with
``torch.load(weights_only=True)``. Every key of the source must be used or be one of the known
pre-training leftovers; anything else is an error that lists the keys.
"""

from __future__ import annotations

import ast
import functools
import json
import logging
import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from slimdiar.errors import CheckpointError
from slimdiar.models.checkpoint import is_checkpoint_dir, load_checkpoint
from slimdiar.models.wavlm.config import WavLMConfig
from slimdiar.models.wavlm.diarizen_format import is_diarizen_wavlm_file, read_diarizen_wavlm

logger = logging.getLogger(__name__)

# Keys that pre-training or task heads leave in published checkpoints; never used by the backbone.
HF_IGNORED = re.compile(r"^(masked_spec_embed|quantizer\..*|project_.*|adapter\..*)$")
ORIGINAL_IGNORED = re.compile(r"^(mask_emb|label_embs_concat|final_proj\..*)$")


@dataclass
class WavLMWeights:
    """What :func:`read_wavlm` read: the architecture and its tensors under our keys."""

    config: WavLMConfig
    state_dict: dict
    #: The key each tensor has in the file, by our key, for formats whose load errors name the
    #: file's keys (:func:`~slimdiar.models.checkpoint.load_state_dict_strict`); ``None`` else.
    file_keys: dict | None = None


#: Where Hugging Face keeps the positional conv and the relative position bias.
_POS_CONV = "encoder.pos_conv_embed.conv"
_BIAS = "encoder.layers.0.self_attn.relative_attention_bias"


def torch_load_safely(path: Path) -> dict:
    """``torch.load(weights_only=True)``, turning a refusal into a :class:`CheckpointError`."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"{path}: refused to load: the file needs code execution to unpickle "
            f"({str(error).splitlines()[0]}); convert it to safetensors or plain tensors first"
        ) from None
    except Exception as error:  # a file that is not a torch checkpoint fails anywhere in torch
        raise CheckpointError(
            f"{path}: not a readable torch checkpoint ({type(error).__name__}: {error})"
        ) from None


def _unused_keys_error(source, keys) -> CheckpointError:
    keys = sorted(keys)
    shown = ", ".join(keys[:20]) + (f", ... ({len(keys) - 20} more)" if len(keys) > 20 else "")
    return CheckpointError(f"{source}: unexpected keys that do not belong to WavLM: {shown}")


def _rename_keys(raw: dict, rename, ignored: re.Pattern, source) -> dict:
    """Our state dict from a published one; keys neither renamed nor ignored are an error."""
    state, unused = {}, []
    for key, value in raw.items():
        new = rename(key)
        if new is None:
            if not ignored.match(key):
                unused.append(key)
            continue
        if new.endswith("gru_rel_pos_const"):
            value = value.reshape(-1)  # published as (1, heads, 1, 1)
        state[new] = value
    if unused:
        raise _unused_keys_error(source, unused)
    return state


def read_wavlm(path: str | Path) -> WavLMWeights:
    """The config and state dict of a WavLM checkpoint in any of the formats above.

    Raises
    ------
    CheckpointError
        If ``path`` does not exist or holds none of these formats (the message says why).
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or directory")
    if not path.is_dir():
        return _from_file(path)
    if is_checkpoint_dir(path):
        header = json.loads((path / "config.json").read_text())
        if isinstance(header, dict) and "kind" in header:
            return WavLMWeights(*_from_slimdiar(path))
        return WavLMWeights(*_from_huggingface(path))
    if (path / "config.json").is_file():
        return WavLMWeights(*_from_huggingface(path))
    raise CheckpointError(
        f"{path}: not a WavLM checkpoint directory (expected config.json with "
        "model.safetensors or pytorch_model.bin)"
    )


# ---------------------------------------------------------------------------- slimdiar
def _from_slimdiar(path: Path) -> tuple[WavLMConfig, dict]:
    state, config, _ = load_checkpoint(path)
    header = json.loads((path / "config.json").read_text())
    kind = header["kind"]
    if kind == "wavlm":
        return WavLMConfig.from_dict(config), state
    wavlm_config = config.get("wavlm") if isinstance(config, dict) else None
    if wavlm_config is None:
        raise CheckpointError(f"{path}: a {kind!r} checkpoint without a WavLM backbone")
    prefix = "backbone."
    backbone = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    if not backbone:
        raise CheckpointError(f"{path}: no '{prefix}*' weights in this {kind!r} checkpoint")
    return WavLMConfig.from_dict(wavlm_config), backbone


# ---------------------------------------------------------------------------- Hugging Face
def _hf_config(path: Path) -> WavLMConfig:
    try:
        hf = json.loads((path / "config.json").read_text())
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path / 'config.json'}: not valid JSON ({error})") from None
    needed = [
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "intermediate_size",
        "conv_dim",
        "conv_kernel",
        "conv_stride",
    ]
    missing = [k for k in needed if k not in hf]
    if missing:
        raise CheckpointError(f"{path / 'config.json'}: not a WavLM config, missing {missing}")
    if hf.get("conv_bias", False):
        raise CheckpointError(f"{path}: conv layers with bias are not supported by this WavLM")
    if hf.get("add_adapter", False):
        raise CheckpointError(f"{path}: WavLM with an adapter is not supported")
    normalize = hf.get("do_stable_layer_norm", False)
    pre = path / "preprocessor_config.json"
    if pre.is_file():
        normalize = bool(json.loads(pre.read_text()).get("do_normalize", normalize))
    layers, heads = hf["num_hidden_layers"], hf["num_attention_heads"]
    return WavLMConfig(
        conv_layers=list(zip(hf["conv_dim"], hf["conv_kernel"], hf["conv_stride"])),
        extractor_mode="layer_norm"
        if hf.get("feat_extract_norm", "group") == "layer"
        else "group_norm",
        embed_dim=hf["hidden_size"],
        num_layers=layers,
        num_heads=heads,
        head_dim=hf["hidden_size"] // heads,
        ffn_dim=[hf["intermediate_size"]] * layers,
        remaining_heads=[list(range(heads))] * layers,
        use_attention=[True] * layers,
        use_ffn=[True] * layers,
        layer_norm_first=bool(hf.get("do_stable_layer_norm", False)),
        normalize_waveform=normalize,
        pos_conv_kernel=hf.get("num_conv_pos_embeddings", 128),
        pos_conv_groups=hf.get("num_conv_pos_embedding_groups", 16),
        num_buckets=hf.get("num_buckets", 320),
        max_distance=hf.get("max_bucket_distance", 800),
        layer_norm_eps=hf.get("layer_norm_eps", 1e-5),
        name=hf.get("_name_or_path") or path.name,
    )


def _from_huggingface(path: Path) -> tuple[WavLMConfig, dict]:
    config = _hf_config(path)
    if (path / "model.safetensors").is_file():
        from safetensors.torch import load_file

        try:
            raw = load_file(str(path / "model.safetensors"))
        except Exception as error:  # safetensors has its own error types
            raise CheckpointError(f"{path / 'model.safetensors'}: unreadable ({error})") from None
    elif (path / "pytorch_model.bin").is_file():
        raw = torch_load_safely(path / "pytorch_model.bin")
    else:
        raise CheckpointError(f"{path}: no model.safetensors or pytorch_model.bin")
    # Task models (WavLMFor...) keep the backbone under "wavlm."; their heads are not ours.
    if any(k.startswith("wavlm.") for k in raw):
        heads = sorted(k for k in raw if not k.startswith("wavlm."))
        if heads:
            logger.info("ignoring %d task-head keys of %s (e.g. %s)", len(heads), path, heads[0])
        raw = {k[len("wavlm.") :]: v for k, v in raw.items() if k.startswith("wavlm.")}
    return config, _rename_keys(raw, _hf_key, HF_IGNORED, path)


def _hf_key(key: str) -> str | None:
    match = re.match(
        r"^feature_extractor\.conv_layers\.(\d+)\.(conv|layer_norm)\.(weight|bias)$", key
    )
    if match:
        i, part, kind = match.groups()
        return f"feature_extractor.conv_layers.{i}.{'conv' if part == 'conv' else 'norm'}.{kind}"
    if key.startswith("feature_projection.") or key.startswith("encoder.layer_norm."):
        return key
    pos = {
        "encoder.pos_conv_embed.conv.bias": "encoder.pos_conv.bias",
        "encoder.pos_conv_embed.conv.weight_g": "encoder.pos_conv.weight_g",
        "encoder.pos_conv_embed.conv.weight_v": "encoder.pos_conv.weight_v",
        # torch.nn.utils.parametrizations.weight_norm's names of g and v
        f"{_POS_CONV}.parametrizations.weight.original0": "encoder.pos_conv.weight_g",
        f"{_POS_CONV}.parametrizations.weight.original1": "encoder.pos_conv.weight_v",
    }
    if key in pos:
        return pos[key]
    if re.match(r"^encoder\.layers\.0\.attention\.rel_attn_embed\.weight$", key):
        return "encoder.rel_attn_embed.weight"
    match = re.match(r"^encoder\.layers\.(\d+)\.(.+)$", key)
    if match and not match.group(2).startswith("attention.rel_attn_embed"):
        return key
    return None


# ---------------------------------------------------------------------------- original release
def parse_conv_layers(spec: str) -> list[tuple[int, int, int]]:
    """Evaluate a ``conv_feature_layers`` string such as ``"[(512,10,5)] + [(512,3,2)] * 4"``.

    Only list/tuple literals of integers, ``+`` and ``*`` are accepted: nothing is executed.
    """

    def evaluate(node):
        if isinstance(node, ast.Expression):
            return evaluate(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.Tuple):
            return tuple(evaluate(e) for e in node.elts)
        if isinstance(node, ast.List):
            return [evaluate(e) for e in node.elts]
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
            left, right = evaluate(node.left), evaluate(node.right)
            return left + right if isinstance(node.op, ast.Add) else left * right
        raise CheckpointError(f"unsupported conv_feature_layers expression: {spec!r}")

    try:
        layers = evaluate(ast.parse(spec, mode="eval"))
    except SyntaxError:
        raise CheckpointError(f"conv_feature_layers is not a list expression: {spec!r}") from None
    if not isinstance(layers, list) or not all(
        isinstance(t, tuple) and len(t) == 3 for t in layers
    ):
        raise CheckpointError(f"conv_feature_layers must be a list of 3-tuples: {spec!r}")
    return layers


def _original_config(cfg: dict, path: Path) -> WavLMConfig:
    needed = [
        "encoder_layers",
        "encoder_embed_dim",
        "encoder_ffn_embed_dim",
        "encoder_attention_heads",
        "conv_feature_layers",
    ]
    missing = [k for k in needed if k not in cfg]
    if missing:
        raise CheckpointError(f"{path}: 'cfg' lacks {missing}; is this a WavLM release file?")
    if cfg.get("conv_bias", False):
        raise CheckpointError(f"{path}: conv layers with bias are not supported by this WavLM")
    if not cfg.get("relative_position_embedding", True) or not cfg.get("gru_rel_pos", True):
        raise CheckpointError(f"{path}: only WavLM with gated relative position bias is supported")
    layers, heads, E = (
        cfg["encoder_layers"],
        cfg["encoder_attention_heads"],
        cfg["encoder_embed_dim"],
    )
    return WavLMConfig(
        conv_layers=parse_conv_layers(cfg["conv_feature_layers"]),
        extractor_mode="layer_norm" if cfg.get("extractor_mode") == "layer_norm" else "group_norm",
        embed_dim=E,
        num_layers=layers,
        num_heads=heads,
        head_dim=E // heads,
        ffn_dim=[cfg["encoder_ffn_embed_dim"]] * layers,
        remaining_heads=[list(range(heads))] * layers,
        use_attention=[True] * layers,
        use_ffn=[True] * layers,
        layer_norm_first=bool(cfg.get("layer_norm_first", False)),
        normalize_waveform=bool(cfg.get("normalize", False)),
        pos_conv_kernel=cfg.get("conv_pos", 128),
        pos_conv_groups=cfg.get("conv_pos_groups", 16),
        num_buckets=cfg.get("num_buckets", 320),
        max_distance=cfg.get("max_distance", 800),
        name=path.stem,
    )


ORIGINAL_LAYER_MAP = {
    "self_attn.q_proj": "attention.q_proj",
    "self_attn.k_proj": "attention.k_proj",
    "self_attn.v_proj": "attention.v_proj",
    "self_attn.out_proj": "attention.out_proj",
    "self_attn.grep_linear": "attention.gru_rel_pos_linear",
    "self_attn_layer_norm": "layer_norm",
    "fc1": "feed_forward.intermediate_dense",
    "fc2": "feed_forward.output_dense",
    "final_layer_norm": "final_layer_norm",
}


def _original_key(key: str, extractor_mode: str) -> str | None:
    match = re.match(r"^feature_extractor\.conv_layers\.(\d+)\.(.+)$", key)
    if match:
        i, rest = match.groups()
        norm_key = "2.1." if extractor_mode == "layer_norm" else "2."
        if rest == "0.weight":
            return f"feature_extractor.conv_layers.{i}.conv.weight"
        for kind in ("weight", "bias"):
            if rest == norm_key + kind:
                return f"feature_extractor.conv_layers.{i}.norm.{kind}"
        return None
    simple = {
        "layer_norm.weight": "feature_projection.layer_norm.weight",
        "layer_norm.bias": "feature_projection.layer_norm.bias",
        "post_extract_proj.weight": "feature_projection.projection.weight",
        "post_extract_proj.bias": "feature_projection.projection.bias",
        "encoder.pos_conv.0.weight_g": "encoder.pos_conv.weight_g",
        "encoder.pos_conv.0.weight_v": "encoder.pos_conv.weight_v",
        "encoder.pos_conv.0.bias": "encoder.pos_conv.bias",
        "encoder.layer_norm.weight": "encoder.layer_norm.weight",
        "encoder.layer_norm.bias": "encoder.layer_norm.bias",
        f"{_BIAS}.weight": "encoder.rel_attn_embed.weight",
    }
    if key in simple:
        return simple[key]
    match = re.match(r"^encoder\.layers\.(\d+)\.(.+)\.(weight|bias)$", key)
    if match and match.group(2) in ORIGINAL_LAYER_MAP:
        i, part, kind = match.groups()
        return f"encoder.layers.{i}.{ORIGINAL_LAYER_MAP[part]}.{kind}"
    match = re.match(r"^encoder\.layers\.(\d+)\.self_attn\.grep_a$", key)
    if match:
        return f"encoder.layers.{match.group(1)}.attention.gru_rel_pos_const"
    return None


def _from_file(path: Path) -> WavLMWeights:
    """An original release file or a DiariZen WavLM file."""
    checkpoint = torch_load_safely(path)
    if is_diarizen_wavlm_file(checkpoint):
        return WavLMWeights(*read_diarizen_wavlm(checkpoint, path))
    return WavLMWeights(*_from_original(path, checkpoint))


def _from_original(path: Path, checkpoint: dict) -> tuple[WavLMConfig, dict]:
    if not isinstance(checkpoint, dict) or "cfg" not in checkpoint or "model" not in checkpoint:
        raise CheckpointError(
            f"{path}: not an original WavLM release file (expected a dict with 'cfg' and "
            "'model'); for Hugging Face weights pass the directory that holds config.json"
        )
    cfg = checkpoint["cfg"]
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{path}: 'cfg' must be a dict, got {type(cfg).__name__}")
    config = _original_config(cfg, path)
    rename = functools.partial(_original_key, extractor_mode=config.extractor_mode)
    return config, _rename_keys(checkpoint["model"], rename, ORIGINAL_IGNORED, path)
