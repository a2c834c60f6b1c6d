"""DiariZen model directories and WavLM files, read into slimdiar models.

A DiariZen model directory (as its authors release them) holds::

    config.toml         [model.args] the architecture, [inference.args] and [clustering.args]
                        the pipeline settings that go with the model
    pytorch_model.bin   the whole model's state dict (WavLM, weighted layer sum, Conformer head)
    plda/               optional: xvec_transform.npz and plda.npz for VBx clustering

``[model.args].wavlm_src`` names the WavLM either by a shape name (:data:`DIARIZEN_WAVLM_SHAPES`)
or by a DiariZen WavLM file (``{"config": <builder kwargs>, "state_dict": ...}``; a relative path
is resolved against the model directory). The WavLM part's config and tensor names are read by
:mod:`slimdiar.models.wavlm.diarizen_format`, which also serves
:meth:`WavLM.from_pretrained <slimdiar.models.wavlm.WavLM.from_pretrained>` for WavLM files.

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
from slimdiar.fileio import make_temporary_dir
from slimdiar.frames import SAMPLE_RATE
from slimdiar.models.checkpoint import load_state_dict_strict
from slimdiar.models.eend import EEND, EENDConfig
from slimdiar.models.wavlm.config import WavLMConfig, preset
from slimdiar.models.wavlm.convert import torch_load_safely
from slimdiar.models.wavlm.diarizen_format import (
    is_diarizen_wavlm_file,
    map_diarizen_wavlm,
    wavlm_config_from_diarizen,
)

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


# ---------------------------------------------------------------------------- head key map
_BLOCK_PARTS = {
    "ffn1.ln_norm": "ffn1.norm",
    "ffn1.w_1": "ffn1.linear1",
    "ffn1.w_2": "ffn1.linear2",
    "ffn2.ln_norm": "ffn2.norm",
    "ffn2.w_1": "ffn2.linear1",
    "ffn2.w_2": "ffn2.linear2",
    "mha.ln_norm": "attention.norm",
    "mha.mha.linearO": "attention.attention.out_proj",
    "conv.ln_norm": "conv.norm",
    "conv.pointwise_conv1": "conv.pointwise1",
    "conv.depthwise_conv": "conv.depthwise",
    "conv.bn_norm": "conv.batch_norm",
    "conv.pointwise_conv2": "conv.pointwise2",
    "ln_norm": "norm",
}
_HEAD_FIXED = {
    "weight_sum.weight": "weight_sum.weight",
    "proj.weight": "projection.weight",
    "proj.bias": "projection.bias",
    "lnorm.weight": "norm.weight",
    "lnorm.bias": "norm.bias",
    "classifier.weight": "classifier.weight",
    "classifier.bias": "classifier.bias",
}
_BLOCK_KEY = re.compile(
    r"^conformer\.conformer_layer\.(\d+)\.(.+)\."
    r"(weight|bias|running_mean|running_var|num_batches_tracked)$"
)
_QKV = {"mha.mha.linearQ": 0, "mha.mha.linearK": 1, "mha.mha.linearV": 2}


def _map_head(raw: dict, source) -> tuple[dict, dict]:
    """Our EEND head tensors from DiariZen's (every key outside ``wavlm_model.``).

    Returns the tensors under our keys and the file's key of each (Q, K and V are concatenated
    into one input projection).
    """
    state: dict[str, torch.Tensor] = {}
    file_keys: dict[str, str] = {}
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
        if target is None:
            raise CheckpointError(f"{source}: key {key} has no place in the model")
        state[target] = value
        file_keys[target] = key
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
        state[target] = torch.cat([value for _, value in found], dim=0)
        file_keys[target] = f"conformer.conformer_layer.{block}.mha.mha.linear(Q|K|V).{kind}"
    return state, file_keys


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
    "wavlm_src",
    "wavlm_layer_num",
    "wavlm_feat_dim",
    "attention_in",
    "ffn_hidden",
    "num_head",
    "num_layer",
    "kernel_size",
    "dropout",
    "use_posi",
    "output_activate_function",
    "max_speakers_per_chunk",
    "max_speakers_per_frame",
    "chunk_size",
    "num_channels",
    "selected_channel",
    "sample_rate",
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
    content = torch_load_safely(path)
    if not is_diarizen_wavlm_file(content):
        raise CheckpointError(f"{path}: not a DiariZen WavLM file ({{config, state_dict}})")
    # Its tensors are also in pytorch_model.bin (which DiariZen loads over them): only the
    # shape is taken from here.
    return wavlm_config_from_diarizen(content["config"], path), path.name


def eend_config_from_diarizen(args: dict, wavlm: WavLMConfig, source):
    """Our :class:`~slimdiar.models.eend.EENDConfig` from DiariZen's ``[model.args]``."""
    unknown = sorted(set(args) - _MODEL_ARGS)
    if unknown:
        raise CheckpointError(f"{source}: unknown [model.args] keys {unknown}")
    if args.get("use_posi", False):
        raise CheckpointError(
            f"{source}: use_posi = true (relative positions in the Conformer) is not supported"
        )
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
    "vbx": {
        "ahc_threshold": "ahc_threshold",
        "Fa": "fa",
        "Fb": "fb",
        "lda_dim": "lda_dim",
        "max_iters": "max_iters",
    },
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
    speakers = {
        k: int(clustering.pop(k)) for k in ("min_speakers", "max_speakers") if k in clustering
    }
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
    raw = torch_load_safely(directory / WEIGHTS_NAME)
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
        logger.info(
            "%s: selected_channel %s is not used; the pipeline picks the channel",
            source,
            args["selected_channel"],
        )
    raw = _read_weights(directory)
    weights = directory / WEIGHTS_NAME
    state, file_keys = map_diarizen_wavlm(
        raw, wavlm, weights, prefix=WAVLM_PREFIX, target_prefix="backbone."
    )
    head, head_keys = _map_head(raw, weights)
    state.update(head)
    file_keys.update(head_keys)
    model = EEND(config)
    load_state_dict_strict(model, state, weights, file_keys)
    model.eval()
    chunk = args.get("chunk_size")
    pipeline = pipeline_settings(data, source, None if chunk is None else float(chunk))
    clustering = pipeline.get("clustering", {})
    if "plda_dir" in clustering:
        plda = (directory / clustering["plda_dir"]).resolve()
        if not plda.is_dir():
            logger.warning(
                "%s: no %s/ directory; VBx clustering will need one", directory, PLDA_NAME
            )
        clustering["plda_dir"] = str(plda)
    metadata = {
        "source": {"format": "diarizen", "wavlm_src": wavlm_source},
        "pipeline": pipeline,
    }
    if chunk is not None:
        metadata["source"]["chunk_size_s"] = float(chunk)
    logger.info(
        "loaded DiariZen model %s (WavLM %s, %.1fM parameters)",
        directory,
        wavlm_source,
        sum(p.numel() for p in model.parameters()) / 1e6,
    )
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
