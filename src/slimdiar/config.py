"""Configurations: TOML files read into nested dataclasses, with ``--set`` overrides.

A run configuration is a dataclass whose fields are sections (dataclasses themselves). A TOML
file gives any subset of the values; ``--set section.key=value`` overrides one of them, the value
written as in TOML (``8``, ``2e-5``, ``true``, ``[0, 4, 8]``, ``"fbank"`` or plainly ``fbank``).
Every value is checked against the field's type and, where the section declares one in its
``RANGES``, against the field's range (:func:`check_ranges`, called by each section's
``__post_init__``); an unknown section or key, a value of the wrong type or out of range is a
:class:`~slimdiar.errors.ConfigError` that names the key as the file and ``--set`` spell it
(``optim.lr_head``), and the ``--set`` argument that gave it.

The configurations that come with slimdiar (the reference recipe's, CPU-sized ones, the demo's)
are package data in ``slimdiar/configs/``: wherever a config file is asked for, the name of one
of them (``wavlm-base-plus``, or ``wavlm-base-plus.toml``) does as well as a path
(:func:`config_source`).
"""

from __future__ import annotations

import dataclasses
import math
import sys
import types
import typing
from importlib import resources
from pathlib import Path

from slimdiar.errors import ConfigError

if sys.version_info >= (3, 11):
    from importlib.resources.abc import Traversable

    import tomllib
else:  # pragma: no cover - Python 3.10
    from importlib.abc import Traversable

    import tomli as tomllib


@dataclasses.dataclass(frozen=True)
class Range:
    """The values a number may take: ``low <= x`` (``low < x`` when ``low_open``), same for high."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value) -> bool:
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def __str__(self) -> str:
        low = None if self.low is None else f"{'>' if self.low_open else '>='} {self.low:g}"
        high = None if self.high is None else f"{'<' if self.high_open else '<='} {self.high:g}"
        return " and ".join(part for part in (low, high) if part) or "finite"


def at_least(low: float) -> Range:
    """``x >= low``."""
    return Range(low=low)


def above(low: float) -> Range:
    """``x > low``."""
    return Range(low=low, low_open=True)


class FieldError(ConfigError):
    """A value of one configuration key is out of its range; ``key`` is the dotted key."""

    def __init__(self, key: str, reason: str):
        self.key = key
        self.reason = reason
        super().__init__(f"{key} {reason}")


def check_ranges(section) -> None:
    """Check every field named in ``type(section).RANGES`` against its :class:`Range`.

    Raises
    ------
    FieldError
        For the first value out of range (``None`` values are not checked).
    """
    for name, allowed in getattr(type(section), "RANGES", {}).items():
        value = getattr(section, name)
        if value is not None and value not in allowed:
            raise FieldError(name, f"must be {allowed}, got {value!r}")


def _type_name(annotation) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _coerce(value, annotation, key: str):
    """``value`` checked against (and converted to) the type ``annotation``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(
            errors[0]
            if len(errors) == 1
            else f"{key}: {value!r} fits no type of {_type_name(annotation)}"
        )
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a table of settings, got {value!r}")
        return from_dict(annotation, value, prefix=f"{key}.")
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key} must be a list, got {value!r} ({type(value).__name__})")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{key} must have {len(args)} values, got {value!r}")
            return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else typing.Any
        return origin(_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value))
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r} ({type(value).__name__})")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key} must be a number, got {value!r} ({type(value).__name__})")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r} ({type(value).__name__})")
        return value
    return value


def from_dict(cls, data: dict, prefix: str = ""):
    """Build dataclass ``cls`` from a (nested) mapping, checking every key and type.

    Parameters
    ----------
    cls
        A dataclass; fields that are dataclasses are built from nested mappings.
    data
        Values for some or all fields; missing ones keep their defaults.
    prefix
        Dotted location of ``data`` in the whole configuration, for messages.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"[{prefix.rstrip('.')}]" if prefix else "the configuration"
        raise ConfigError(
            f"unknown key{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(prefix + k for k in unknown)}; valid keys of {where}: "
            f"{', '.join(sorted(fields))}"
        )
    missing = [
        name
        for name, f in fields.items()
        if name not in data
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        where = f"[{prefix.rstrip('.')}]" if prefix else "the configuration"
        raise ConfigError(
            f"{where} lacks the key{'s' if len(missing) > 1 else ''} "
            f"{', '.join(prefix + k for k in missing)}"
        )
    values = {name: _coerce(v, hints[name], prefix + name) for name, v in data.items()}
    try:
        return cls(**values)
    except FieldError as error:
        raise FieldError(prefix + error.key, error.reason) from None


def to_dict(config) -> dict:
    """Plain-data form of a configuration dataclass (for ``config.json``)."""
    return dataclasses.asdict(config)


def parse_override(text: str) -> tuple[list[str], object]:
    """Split ``section.key=value`` into the key path and the value (TOML syntax, else a string)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects section.key=value, got {text!r}")
    raw = raw.strip()
    try:
        value = tomllib.loads(f"value = {raw}")["value"]
    except tomllib.TOMLDecodeError:
        value = raw
    if raw.lower() in ("none", "null"):
        value = None
    return [part.strip() for part in key.strip().split(".")], value


def apply_override(data: dict, cls, text: str) -> None:
    """Set one ``section.key=value`` override in the raw mapping ``data`` (checked for keys)."""
    path, value = parse_override(text)
    target, current = data, cls
    for depth, part in enumerate(path):
        fields = {f.name: f for f in dataclasses.fields(current) if f.init}
        if part not in fields:
            where = ".".join(path[:depth])
            raise ConfigError(
                f"--set {text}: unknown key {'.'.join(path[: depth + 1])!r}; valid keys"
                f"{' of [' + where + ']' if where else ''}: {', '.join(sorted(fields))}"
            )
        annotation = typing.get_type_hints(current)[part]
        if depth == len(path) - 1:
            if dataclasses.is_dataclass(annotation):
                raise ConfigError(
                    f"--set {text}: {'.'.join(path)} is a section; set one of its keys: "
                    f"{', '.join(f.name for f in dataclasses.fields(annotation))}"
                )
            target[part] = value
        else:
            if not dataclasses.is_dataclass(annotation):
                raise ConfigError(f"--set {text}: {'.'.join(path[: depth + 1])} is not a section")
            target = target.setdefault(part, {})
            current = annotation


def bundled_configs() -> list[str]:
    """Names of the configurations that come with slimdiar (``slimdiar/configs/*.toml``)."""
    folder = resources.files("slimdiar") / "configs"
    return sorted(
        entry.name.removesuffix(".toml")
        for entry in folder.iterdir()
        if entry.name.endswith(".toml")
    )


def bundled_config(name: str) -> Traversable:
    """The bundled configuration ``name`` (with or without ``.toml``).

    Raises
    ------
    ConfigError
        If slimdiar has no configuration of that name; the message lists those it has.
    """
    stem = name.removesuffix(".toml")
    if stem not in bundled_configs():
        raise ConfigError(
            f"{name}: no such bundled config; bundled configs: {', '.join(bundled_configs())}"
        )
    return resources.files("slimdiar") / "configs" / f"{stem}.toml"


def config_source(spec: str | Path) -> Path | Traversable:
    """What ``--config SPEC`` reads: the file ``spec`` if it exists, else the bundled config.

    A ``spec`` that names no existing file and holds no directory part (``wavlm-base-plus``,
    ``tiny.toml``) is looked up among :func:`bundled_configs`; any other stays a path.

    Raises
    ------
    ConfigError
        If ``spec`` is neither an existing file nor a bundled name but could have been one.
    """
    path = Path(spec)
    if path.exists() or len(path.parts) != 1:
        return path
    if path.name.removesuffix(".toml") not in bundled_configs():
        raise ConfigError(
            f"{spec}: no such config file, nor a bundled config (bundled: "
            f"{', '.join(bundled_configs())})"
        )
    return bundled_config(path.name)


def read_toml(path: str | Path | Traversable) -> dict:
    """The mapping of a TOML file; :class:`ConfigError` if it is missing or not valid TOML."""
    source = Path(path) if isinstance(path, str) else path
    try:
        return tomllib.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: invalid TOML ({error})") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: unreadable config file ({error})") from None


def load_config(
    cls, path: str | Path | Traversable | None = None, overrides: typing.Sequence[str] = ()
):
    """Read a TOML file (optional) into dataclass ``cls`` and apply ``section.key=value`` overrides.

    ``path`` is a file, the name of a bundled configuration (:func:`config_source`) or a
    bundled configuration itself (:func:`bundled_config`).

    Raises
    ------
    ConfigError
        On an unreadable file, an unknown section or key, or a value of the wrong type.
    """
    data: dict = {}
    if path is not None:
        data = read_toml(config_source(path) if isinstance(path, (str, Path)) else path)
        try:
            from_dict(cls, data)
        except ConfigError as error:
            raise ConfigError(f"{path}: {error}") from None
    for text in overrides:  # one at a time, so that an error names the --set that caused it
        apply_override(data, cls, text)
        try:
            from_dict(cls, data)
        except ConfigError as error:
            if str(error).startswith("--set "):
                raise
            raise ConfigError(f"--set {text}: {error}") from None
    return from_dict(cls, data)
