"""Architecture description of a (possibly pruned) WavLM backbone.

:class:`WavLMConfig` describes every shape the backbone can take: WavLM Base+ and Large, and any
structurally pruned model (per-layer kept heads, FFN sizes, conv channels, missing blocks). What
can be derived from the conv layer list (frame step, receptive field, number of frames) is derived
here and nowhere else.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from slimdiar.errors import ConfigError

EXTRACTOR_MODES = ("group_norm", "layer_norm")
DROPOUT_KEYS = ("feat_proj_dropout", "attention_dropout", "dropout", "activation_dropout")


def _conv_layer(index: int, layer: object) -> tuple[int, int, int]:
    """``conv_layers[index]`` as three ints ``(out_channels, kernel_size, stride)``."""
    if isinstance(layer, str) or not isinstance(layer, (list, tuple)) or len(layer) != 3:
        raise ConfigError(
            f"conv_layers[{index}] = {layer!r}: expected [out_channels, kernel_size, stride]"
        )
    channels, kernel, stride = layer
    return int(channels), int(kernel), int(stride)


@dataclass
class WavLMConfig:
    """Shape of a WavLM backbone.

    Parameters
    ----------
    conv_layers
        ``(out_channels, kernel_size, stride)`` of each conv feature-extractor layer.
    extractor_mode
        ``"group_norm"`` (Base+: a per-channel GroupNorm after the first conv layer only) or
        ``"layer_norm"`` (Large: a LayerNorm after every conv layer).
    embed_dim
        Transformer width ``E``.
    num_layers
        Number of transformer layers ``L``.
    num_heads
        Number of attention heads of the *unpruned* model; head ``h`` of a layer reads the
        relative-position gate from input dims ``[h * E / num_heads, (h + 1) * E / num_heads)``.
    head_dim
        Width of one attention head.
    ffn_dim
        FFN intermediate size of each layer (0 when the FFN block is absent).
    remaining_heads
        Kept heads of each layer, as indices into the ``num_heads`` original heads.
    use_attention, use_ffn
        Whether each layer still has its attention / FFN block.
    layer_norm_first
        Pre-norm transformer with a final LayerNorm (Large) instead of post-norm (Base+).
    normalize_waveform
        Normalise each input waveform to zero mean and unit variance (Large).
    dropout
        Dropout on the residual branches and the FFN output, and after the positional
        embedding (Hugging Face's ``hidden_dropout``; training only).
    attention_dropout
        Dropout on the attention probabilities (``attention_dropout``).
    feat_proj_dropout
        Dropout after the feature projection (``feat_proj_dropout``).
    activation_dropout
        Dropout inside the FFN, after its activation (``activation_dropout``).
    conv_output_scale
        A fixed per-channel scale on the last conv layer's output (after its GELU, before the
        feature-projection LayerNorm; DiariZen's ``feature_extractor.dummy_weight``). The last
        conv layer's pruning gate then acts there, and pruning stores the surviving soft mask
        values in it. Without it (configs written before it existed) that gate acts after the
        feature-projection LayerNorm and is folded into the projection.
    """

    conv_layers: list[tuple[int, int, int]]
    extractor_mode: str
    embed_dim: int
    num_layers: int
    num_heads: int
    head_dim: int
    ffn_dim: list[int]
    remaining_heads: list[list[int]]
    use_attention: list[bool]
    use_ffn: list[bool]
    layer_norm_first: bool
    normalize_waveform: bool
    pos_conv_kernel: int = 128
    pos_conv_groups: int = 16
    num_buckets: int = 320
    max_distance: int = 800
    layer_norm_eps: float = 1e-5
    dropout: float = 0.0
    attention_dropout: float = 0.0
    feat_proj_dropout: float = 0.0
    activation_dropout: float = 0.0
    conv_output_scale: bool = False
    name: str = field(default="wavlm", compare=False)

    def __post_init__(self) -> None:
        self.conv_layers = [_conv_layer(i, layer) for i, layer in enumerate(self.conv_layers)]
        self.ffn_dim = [int(v) for v in self.ffn_dim]
        self.remaining_heads = [[int(h) for h in heads] for heads in self.remaining_heads]
        self.use_attention = [bool(v) for v in self.use_attention]
        self.use_ffn = [bool(v) for v in self.use_ffn]
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raise :class:`ConfigError` if the fields do not describe a buildable model."""
        if self.extractor_mode not in EXTRACTOR_MODES:
            raise ConfigError(
                f"extractor_mode must be one of {EXTRACTOR_MODES}, got {self.extractor_mode!r}"
            )
        if not self.conv_layers:
            raise ConfigError("conv_layers must hold at least one (channels, kernel, stride)")
        for i, (channels, kernel, stride) in enumerate(self.conv_layers):
            if channels < 1 or kernel < 1 or stride < 1:
                raise ConfigError(
                    f"conv_layers[{i}] = {(channels, kernel, stride)}: every value must be >= 1 "
                    "(a conv layer cannot lose all of its channels)"
                )
        per_layer: dict[str, list] = {
            "ffn_dim": self.ffn_dim,
            "remaining_heads": self.remaining_heads,
            "use_attention": self.use_attention,
            "use_ffn": self.use_ffn,
        }
        for key, values in per_layer.items():
            if len(values) != self.num_layers:
                raise ConfigError(
                    f"{key} has {len(values)} entries but num_layers is {self.num_layers}"
                )
        if self.embed_dim % self.num_heads:
            raise ConfigError(
                f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}"
            )
        for i, heads in enumerate(self.remaining_heads):
            if sorted(set(heads)) != heads or any(not 0 <= h < self.num_heads for h in heads):
                raise ConfigError(
                    f"remaining_heads[{i}] = {heads}: must be sorted, unique indices in "
                    f"[0, {self.num_heads})"
                )
            if self.use_attention[i] != bool(heads):
                raise ConfigError(
                    f"layer {i}: use_attention is {self.use_attention[i]} but it keeps "
                    f"{len(heads)} heads"
                )
            if self.use_ffn[i] != (self.ffn_dim[i] > 0):
                raise ConfigError(
                    f"layer {i}: use_ffn is {self.use_ffn[i]} but ffn_dim is {self.ffn_dim[i]}"
                )
        for key in DROPOUT_KEYS:
            value = getattr(self, key)
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"{key} must be in [0, 1), got {value}")
        if self.embed_dim % self.pos_conv_groups:
            raise ConfigError(
                f"embed_dim {self.embed_dim} is not divisible by pos_conv_groups "
                f"{self.pos_conv_groups}"
            )

    # ------------------------------------------------------------------ derived values
    @property
    def conv_dim(self) -> int:
        """Channels of the last conv layer (input of the feature projection)."""
        return self.conv_layers[-1][0]

    @property
    def frame_step_samples(self) -> int:
        """Samples between two consecutive output frames (320 for WavLM: 20 ms)."""
        step = 1
        for _, _, stride in self.conv_layers:
            step *= stride
        return step

    @property
    def receptive_field_samples(self) -> int:
        """Samples that one output frame sees (400 for WavLM: 25 ms)."""
        field_, jump = 1, 1
        for _, kernel, stride in self.conv_layers:
            field_ += (kernel - 1) * jump
            jump *= stride
        return field_

    def num_frames(self, num_samples: int) -> int:
        """Number of output frames for ``num_samples`` input samples (0 if too short)."""
        length = int(num_samples)
        for _, kernel, stride in self.conv_layers:
            if length < kernel:
                return 0
            length = (length - kernel) // stride + 1
        return length

    def conv_lengths(self, num_samples: int) -> list[int]:
        """Output length of every conv layer for ``num_samples`` input samples."""
        lengths, length = [], int(num_samples)
        for _, kernel, stride in self.conv_layers:
            length = max(0, (length - kernel) // stride + 1)
            lengths.append(length)
        return lengths

    @property
    def head_gate_dim(self) -> int:
        """Width of the input slice that feeds one head's relative-position gate."""
        return self.embed_dim // self.num_heads

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict:
        """Plain-JSON form of this config (every field, pruned shapes included)."""
        data = dataclasses.asdict(self)
        data["conv_layers"] = [list(layer) for layer in self.conv_layers]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> WavLMConfig:
        """Build a config from :meth:`to_dict` output or an anchors JSON file's content."""
        known = {f.name for f in dataclasses.fields(cls)}
        ignored = {"reported"}
        unknown = sorted(set(data) - known - ignored)
        if unknown:
            raise ConfigError(f"unknown WavLM config keys {unknown}; known keys: {sorted(known)}")
        missing = sorted(
            f.name
            for f in dataclasses.fields(cls)
            if f.name not in data
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        )
        if missing:
            raise ConfigError(f"WavLM config is missing keys {missing}")
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def from_json(cls, path: str | Path) -> WavLMConfig:
        """Read a config (or an anchors architecture file) from JSON."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such config file") from None
        except json.JSONDecodeError as error:
            raise ConfigError(f"{path}: not valid JSON ({error})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a JSON object")
        return cls.from_dict(data)

    def replace(self, **changes) -> WavLMConfig:
        """Return a copy with some fields changed (and validated)."""
        return dataclasses.replace(self, **changes)


# ---------------------------------------------------------------------- presets
PRESET_FILES = {
    "wavlm-base-plus": "wavlm-base-plus.json",
    "wavlm-large": "wavlm-large.json",
    "wavlm-base-plus-s80": "wavlm-base-plus-s80.json",
    "wavlm-large-s80": "wavlm-large-s80.json",
}


def _preset_from_file(name: str) -> WavLMConfig:
    presets = resources.files("slimdiar.models.wavlm").joinpath("presets")
    text = presets.joinpath(PRESET_FILES[name]).read_text()
    config = WavLMConfig.from_dict(json.loads(text))
    config.name = name
    return config


def wavlm_base_plus() -> WavLMConfig:
    """WavLM Base+: 12 post-norm layers of width 768 (94.4 M parameters)."""
    return _preset_from_file("wavlm-base-plus")


def wavlm_large() -> WavLMConfig:
    """WavLM Large: 24 pre-norm layers of width 1024 (315.5 M parameters)."""
    return _preset_from_file("wavlm-large")


def wavlm_base_plus_s80() -> WavLMConfig:
    """The published 80 %-pruned WavLM Base+ architecture."""
    return _preset_from_file("wavlm-base-plus-s80")


def wavlm_large_s80() -> WavLMConfig:
    """The published 80 %-pruned WavLM Large architecture."""
    return _preset_from_file("wavlm-large-s80")


def uniform_wavlm(
    name: str,
    conv_channels: int,
    embed_dim: int,
    num_layers: int,
    num_heads: int,
    head_dim: int,
    ffn_dim: int,
    pos_conv_kernel: int,
    pos_conv_groups: int,
    num_buckets: int = 320,
    max_distance: int = 800,
    layer_norm_first: bool = False,
) -> WavLMConfig:
    """A WavLM with WavLM's conv strides and kernels and the same width in every layer."""
    kernels_strides = [(10, 5)] + [(3, 2)] * 4 + [(2, 2)] * 2
    return WavLMConfig(
        conv_layers=[(conv_channels, k, s) for k, s in kernels_strides],
        extractor_mode="layer_norm" if layer_norm_first else "group_norm",
        embed_dim=embed_dim,
        num_layers=num_layers,
        num_heads=num_heads,
        head_dim=head_dim,
        ffn_dim=[ffn_dim] * num_layers,
        remaining_heads=[list(range(num_heads))] * num_layers,
        use_attention=[True] * num_layers,
        use_ffn=[True] * num_layers,
        layer_norm_first=layer_norm_first,
        normalize_waveform=layer_norm_first,
        pos_conv_kernel=pos_conv_kernel,
        pos_conv_groups=pos_conv_groups,
        num_buckets=num_buckets,
        max_distance=max_distance,
        name=name,
    )


def wavlm_tiny(layer_norm_first: bool = False) -> WavLMConfig:
    """A tiny random-init WavLM for tests (E=64, 2 layers, 4 heads).

    Parameters
    ----------
    layer_norm_first
        Pre-norm (Large-like) instead of post-norm (Base+-like).
    """
    return uniform_wavlm(
        "wavlm-tiny-prenorm" if layer_norm_first else "wavlm-tiny",
        conv_channels=32,
        embed_dim=64,
        num_layers=2,
        num_heads=4,
        head_dim=16,
        ffn_dim=128,
        pos_conv_kernel=8,
        pos_conv_groups=8,
        num_buckets=32,
        max_distance=100,
        layer_norm_first=layer_norm_first,
    )


def wavlm_mini() -> WavLMConfig:
    """A tiny post-norm WavLM with Base+'s proportions, for pruning tests (E=64, 4 layers).

    Eight heads of 8 and FFN 4E as in Base+, 16 conv channels so that the convolutions hold
    2 % of the parameters (Base+: 4 %): a head is 1 % of the model and an FFN unit 0.06 %,
    fine enough for sparsity targets up to 0.9 (the parts no gate reaches cap it at 0.987). In
    ``wavlm-tiny`` a head is 4.6 % and that cap is 0.944.
    """
    return uniform_wavlm(
        "wavlm-mini",
        conv_channels=16,
        embed_dim=64,
        num_layers=4,
        num_heads=8,
        head_dim=8,
        ffn_dim=256,
        pos_conv_kernel=4,
        pos_conv_groups=16,
        num_buckets=32,
        max_distance=100,
    )


def wavlm_small() -> WavLMConfig:
    """A small post-norm WavLM (conv 128 channels, E=256, 4 layers, 4 heads of 64)."""
    return uniform_wavlm(
        "wavlm-small",
        conv_channels=128,
        embed_dim=256,
        num_layers=4,
        num_heads=4,
        head_dim=64,
        ffn_dim=1024,
        pos_conv_kernel=32,
        pos_conv_groups=16,
    )


def wavlm_demo() -> WavLMConfig:
    """The demo's WavLM (conv 32 channels, E=128, 4 layers, 4 heads of 32, FFN 512)."""
    return uniform_wavlm(
        "wavlm-demo",
        conv_channels=32,
        embed_dim=128,
        num_layers=4,
        num_heads=4,
        head_dim=32,
        ffn_dim=512,
        pos_conv_kernel=16,
        pos_conv_groups=8,
    )


PRESETS = {
    "wavlm-base-plus": wavlm_base_plus,
    "wavlm-large": wavlm_large,
    "wavlm-base-plus-s80": wavlm_base_plus_s80,
    "wavlm-large-s80": wavlm_large_s80,
    "wavlm-small": wavlm_small,
    "wavlm-demo": wavlm_demo,
    "wavlm-tiny": wavlm_tiny,
    "wavlm-mini": wavlm_mini,
    "wavlm-tiny-prenorm": lambda: wavlm_tiny(layer_norm_first=True),
}


def preset(name: str) -> WavLMConfig:
    """Return the config of a named preset.

    Raises
    ------
    ConfigError
        If ``name`` is not a preset; the message lists the valid names.
    """
    try:
        factory = PRESETS[name]
    except KeyError:
        raise ConfigError(
            f"unknown WavLM preset {name!r}; valid presets: {', '.join(sorted(PRESETS))}"
        ) from None
    return factory()
