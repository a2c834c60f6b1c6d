"""Run configurations: TOML files read into nested dataclasses, with ``--set`` overrides.

A run configuration is a dataclass whose fields are sections (dataclasses themselves). A TOML
file gives any subset of the values; ``--set section.key=value`` overrides one of them, the value
written as in TOML (``8``, ``2e-5``, ``true``, ``[0, 4, 8]``, ``"fbank"`` or plainly ``fbank``).
Every value is checked against the field's type, and an unknown section or key is a
:class:`~slimdiar.errors.ConfigError` that lists the valid ones.
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from pathlib import Path

from slimdiar.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


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
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: {value!r} fits no type of "
                          f"{_type_name(annotation)}")
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
    values = {name: _coerce(v, hints[name], prefix + name) for name, v in data.items()}
    return cls(**values)


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


def read_toml(path: str | Path) -> dict:
    """The mapping of a TOML file; :class:`ConfigError` if it is missing or not valid TOML."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: invalid TOML ({error})") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: unreadable config file ({error})") from None


def load_config(cls, path: str | Path | None = None, overrides: list[str] = ()):
    """Read a TOML file (optional) into dataclass ``cls`` and apply ``section.key=value`` overrides.

    Raises
    ------
    ConfigError
        On an unreadable file, an unknown section or key, or a value of the wrong type.
    """
    data: dict = {} if path is None else read_toml(path)
    for text in overrides:
        apply_override(data, cls, text)
    try:
        return from_dict(cls, data)
    except ConfigError as error:
        if path is None:
            raise
        raise ConfigError(f"{path}: {error}") from None
