"""Settings of the diarization pipeline: sections, layers, TOML and ``--set``.

A :class:`PipelineConfig` has four sections and one top-level key::

    [windows]        duration_s = 8.0, step_s = 0.8, batch_size (unset: 4 on a CPU, 32 on a GPU)
    [segmentation]   source = "model", median_filter_frames = 11, num_local_speakers = 4
    [clustering]     method = "agglomerative", then that method's options (threshold, ...)
    [speakers]       num_speakers / min_speakers / max_speakers (unset: found by clustering)
    channel          0-based channel to diarize (unset: average all channels)

The options of ``[clustering]`` are the fields of the method's class in
:data:`~slimdiar.pipeline.clustering.CLUSTERING_METHODS`; they are checked against it (unknown
keys and wrong types are a :class:`~slimdiar.errors.ConfigError` that lists the valid ones).

Settings come in layers, each a nested mapping of some of these keys, merged by
:func:`merge_settings` (later layers win): the built-in defaults, a model's
``metadata["pipeline"]``, a TOML file (:func:`read_settings`), ``section.key=value`` overrides
(:func:`parse_settings`) and explicit command-line options. A layer that switches
``clustering.method`` to another method drops the clustering options of the layers before it.
An agglomerative ``threshold`` that no layer gives is the embedding model's own default, set by
:meth:`~slimdiar.pipeline.DiarizationPipeline.from_pretrained` (0.70 without an embedding).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from slimdiar.config import from_dict, parse_override, read_toml
from slimdiar.errors import ConfigError
from slimdiar.fileio import write_json_atomic
from slimdiar.frames import SAMPLE_RATE
from slimdiar.models.checkpoint import METADATA_NAME, read_metadata
from slimdiar.pipeline.clustering import CLUSTERING_METHODS, SpeakerBounds, make_clustering

SEGMENTATION_SOURCES = ("model", "oracle")

#: ``windows.batch_size`` when no settings layer gives one, by the kind of device the models run
#: on. On a 2-thread CPU, Base+ s80 + ResNet34 run as fast at batch 4 as at 16 or 32 (the
#: ResNet trunk faster: its feature maps stay in cache) in about half the peak memory
#: (``docs/results/pipeline-s80-resnet34-120s-b*.json``); a GPU keeps 32.
DEFAULT_BATCH_SIZES = {"cpu": 4, "cuda": 32}


def default_batch_size(device: str) -> int:
    """The ``windows.batch_size`` used on ``device`` when no settings layer gives one.

    Parameters
    ----------
    device
        A torch device string (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...). Devices other than
        the CPU take the GPU value.

    Raises
    ------
    ConfigError
        If ``device`` is not a torch device string.
    """
    import torch

    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError):
        raise ConfigError(f"unknown device {device!r} (use 'cpu' or 'cuda')") from None
    return DEFAULT_BATCH_SIZES["cpu" if kind == "cpu" else "cuda"]


@dataclass
class WindowsSection:
    """Sliding windows.

    Parameters
    ----------
    duration_s
        Window length in seconds (the segmentation model's chunk length).
    step_s
        Seconds between the starts of two windows.
    batch_size
        Windows per segmentation batch, and (window, speaker) pairs per embedding batch;
        ``None`` (the default): chosen for the device by :meth:`for_device`, see
        :data:`DEFAULT_BATCH_SIZES`.
    """

    duration_s: float = 8.0
    step_s: float = 0.8
    batch_size: int | None = None

    def __post_init__(self) -> None:
        if not self.duration_s > 0:
            raise ConfigError(f"windows.duration_s must be positive, got {self.duration_s}")
        if not 0 < self.step_s <= self.duration_s:
            raise ConfigError(
                f"windows.step_s must be in (0, duration_s={self.duration_s}], got {self.step_s}"
            )
        if self.batch_size is not None and (
            int(self.batch_size) != self.batch_size or self.batch_size < 1
        ):
            raise ConfigError(
                f"windows.batch_size must be a positive integer, got {self.batch_size}"
            )

    def for_device(self, device: str) -> WindowsSection:
        """These settings with ``batch_size`` set: as given, else the default for ``device``."""
        if self.batch_size is not None:
            return self
        return dataclasses.replace(self, batch_size=default_batch_size(device))


@dataclass
class SegmentationSection:
    """Local speakers of every window.

    Parameters
    ----------
    source
        ``"model"``, or ``"oracle"`` to take the local speakers of every window from the
        reference turns.
    median_filter_frames
        Median filter length applied to each local speaker's activity (1: none).
    num_local_speakers
        Local speakers per window for oracle segmentation without a model (a model fixes it).
    """

    source: str = "model"
    median_filter_frames: int = 11
    num_local_speakers: int = 4

    def __post_init__(self) -> None:
        if self.source not in SEGMENTATION_SOURCES:
            raise ConfigError(
                f"segmentation.source must be one of {SEGMENTATION_SOURCES}, got {self.source!r}"
            )
        if self.median_filter_frames < 1:
            raise ConfigError(
                f"segmentation.median_filter_frames must be >= 1, got {self.median_filter_frames}"
            )
        if self.num_local_speakers < 1:
            raise ConfigError(
                f"segmentation.num_local_speakers must be >= 1, got {self.num_local_speakers}"
            )


@dataclass
class ClusteringSection:
    """The clustering method and its options.

    Parameters
    ----------
    method
        A name of :data:`~slimdiar.pipeline.clustering.CLUSTERING_METHODS`.
    options
        Fields of that method's class; the rest keep their defaults.
    """

    method: str = "agglomerative"
    options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in CLUSTERING_METHODS:
            raise ConfigError(
                f"unknown clustering method {self.method!r}; known: "
                f"{', '.join(sorted(CLUSTERING_METHODS))}"
            )
        # check names and types of the options, then keep them all, resolved
        built = from_dict(CLUSTERING_METHODS[self.method], dict(self.options), prefix="clustering.")
        self.options = {f.name: getattr(built, f.name) for f in dataclasses.fields(built)}

    def build(self):
        """A new instance of the configured clustering method."""
        return make_clustering(self.method, **self.options)

    def to_dict(self) -> dict:
        """The method and its options, as one flat dict (the TOML section)."""
        return {"method": self.method, **self.options}


@dataclass
class SpeakersSection:
    """Number of speakers, when known (used when the caller gives none)."""

    num_speakers: int | None = None
    min_speakers: int | None = None
    max_speakers: int | None = None

    def __post_init__(self) -> None:
        self.bounds()  # validates

    def bounds(self) -> SpeakerBounds:
        """The configured counts as :class:`SpeakerBounds`."""
        return SpeakerBounds(self.num_speakers, self.min_speakers, self.max_speakers)


_SECTIONS = {
    "windows": WindowsSection,
    "segmentation": SegmentationSection,
    "speakers": SpeakersSection,
}


@dataclass
class PipelineConfig:
    """Options of the diarization pipeline, in sections (see the module docstring)."""

    windows: WindowsSection = field(default_factory=WindowsSection)
    segmentation: SegmentationSection = field(default_factory=SegmentationSection)
    clustering: ClusteringSection = field(default_factory=ClusteringSection)
    speakers: SpeakersSection = field(default_factory=SpeakersSection)
    channel: int | None = None

    def __post_init__(self) -> None:
        if self.channel is not None and (isinstance(self.channel, bool) or self.channel < 0):
            raise ConfigError(f"channel must be a 0-based channel index, got {self.channel!r}")

    @property
    def window_samples(self) -> int:
        """Window duration in samples at 16 kHz."""
        return int(round(self.windows.duration_s * SAMPLE_RATE))

    @property
    def step_samples(self) -> int:
        """Samples between two window starts at 16 kHz."""
        return int(round(self.windows.step_s * SAMPLE_RATE))

    def make_clustering(self):
        """The configured clustering method."""
        return self.clustering.build()

    def for_device(self, device: str) -> PipelineConfig:
        """A copy with every device-dependent default resolved for ``device``.

        Today that is ``windows.batch_size`` (:meth:`WindowsSection.for_device`); a value some
        settings layer gave is kept.
        """
        return dataclasses.replace(self, windows=self.windows.for_device(device))

    @classmethod
    def from_dict(cls, data: dict | None = None) -> PipelineConfig:
        """Build from a nested mapping of some settings (the rest keep their defaults).

        Raises
        ------
        ConfigError
            For an unknown section or key, a value of the wrong type or out of range.
        """
        data = dict(data or {})
        known = {"channel", "clustering", *_SECTIONS}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"unknown pipeline setting{'s' if len(unknown) > 1 else ''} "
                f"{', '.join(unknown)}; valid: {', '.join(sorted(known))}"
            )
        values = {}
        for name, section in _SECTIONS.items():
            values[name] = from_dict(section, _table(data.get(name, {}), name), prefix=f"{name}.")
        clustering = dict(_table(data.get("clustering", {}), "clustering"))
        method = clustering.pop("method", ClusteringSection.method)
        values["clustering"] = ClusteringSection(method, clustering)
        channel = data.get("channel")
        if channel is not None and (isinstance(channel, bool) or not isinstance(channel, int)):
            raise ConfigError(f"channel must be an integer, got {channel!r}")
        return cls(channel=channel, **values)

    def to_dict(self) -> dict:
        """Nested plain data, the form :meth:`from_dict` reads (and ``metadata["pipeline"]``)."""
        return {
            "windows": dataclasses.asdict(self.windows),
            "segmentation": dataclasses.asdict(self.segmentation),
            "clustering": self.clustering.to_dict(),
            "speakers": dataclasses.asdict(self.speakers),
            "channel": self.channel,
        }


def _table(value, name: str) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(f"[{name}] must be a table of settings, got {value!r}")
    return value


def merge_settings(*layers: dict | None) -> dict:
    """Merge nested settings mappings; later layers win key by key.

    A layer whose ``clustering.method`` differs from the method so far replaces the whole
    ``clustering`` section (options of another method would not apply).
    """
    merged: dict = {}
    for layer in layers:
        for section, values in (layer or {}).items():
            if not isinstance(values, dict):
                merged[section] = values
                continue
            current = merged.setdefault(section, {})
            if section == "clustering":
                before = current.get("method", ClusteringSection.method)
                if values.get("method", before) != before:
                    current.clear()
            current.update(values)
    return merged


def read_settings(path: str | Path) -> dict:
    """The settings of a TOML file (not yet checked: :meth:`PipelineConfig.from_dict` checks)."""
    return read_toml(path)


def parse_settings(overrides: Iterable[str]) -> dict:
    """``["section.key=value", ...]`` (values in TOML syntax) as one nested settings layer.

    Raises
    ------
    ConfigError
        For a malformed override or a path that is not ``section.key`` (or ``channel``).
    """
    layer: dict = {}
    for text in overrides:
        path, value = parse_override(text)
        if path == ["channel"]:
            layer["channel"] = value
            continue
        if len(path) != 2:
            raise ConfigError(
                f"--set {text}: expected section.key=value with a section among "
                f"{', '.join(sorted(['clustering', *_SECTIONS]))} (or channel=N)"
            )
        section, key = path
        layer.setdefault(section, {})[key] = value
    return layer


def resolve_settings(
    layers: Sequence[dict | None], model_dir: str | Path | None = None
) -> PipelineConfig:
    """Merge ``layers`` into a checked :class:`PipelineConfig`.

    A relative ``clustering.plda_dir`` (VBx) is taken relative to ``model_dir`` when given.
    """
    merged = merge_settings(*layers)
    clustering = merged.get("clustering", {})
    if model_dir is not None and isinstance(clustering, dict) and "plda_dir" in clustering:
        plda_dir = Path(str(clustering["plda_dir"]))
        if not plda_dir.is_absolute():
            clustering["plda_dir"] = str(Path(model_dir) / plda_dir)
    config = PipelineConfig.from_dict(merged)
    if model_dir is not None and config.clustering.method == "vbx" and "plda_dir" not in clustering:
        config.clustering.options["plda_dir"] = str(
            Path(model_dir) / config.clustering.options["plda_dir"]
        )
    return config


def save_settings(model_dir: str | Path, settings: dict) -> None:
    """Store ``settings`` as the pipeline defaults of checkpoint ``model_dir``.

    They are checked first, then written as ``metadata["pipeline"]`` (replacing any earlier
    ones; the rest of the metadata is kept), atomically.
    """
    PipelineConfig.from_dict(settings)
    metadata = read_metadata(model_dir)
    metadata["pipeline"] = settings
    write_json_atomic(Path(model_dir) / METADATA_NAME, metadata)
