"""Typed, validated YAML configs: one loader for every config dataclass in mmclip.

``load_config(Schema, "file.yaml", overrides=["a.b=3"])`` reads the YAML, applies ``--set``
overrides, and builds the dataclass tree, checking every key and type against the schema.
Any problem raises :class:`ConfigError` naming the file and the dotted key, with a suggestion
for misspelt keys, before any work starts.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .models.configuration import require  # noqa: F401 (the one check every config dataclass uses)

T = TypeVar("T")

CONFIG_DIR = Path(__file__).resolve().parent / "configs"  # the shipped YAMLs (package data)


class ConfigError(ValueError):
    """A config that cannot be used; the message names the file and the key."""


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: invalid YAML: {error}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def apply_overrides(data: dict[str, Any], overrides: typing.Iterable[str], source: str) -> dict[str, Any]:
    """Apply ``key.sub=value`` strings (values parsed as YAML) to a copy of ``data``."""
    data = _deep_copy(data)
    for override in overrides:
        key, sep, raw = override.partition("=")
        if not sep or not key:
            raise ConfigError(f"{source}: override {override!r} is not of the form key.sub=value")
        node = data
        *parents, leaf = key.split(".")
        for depth, part in enumerate(parents):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{source}: override {override!r}: {'.'.join(parents[: depth + 1])} is not a mapping")
            node = child
        node[leaf] = yaml.safe_load(raw)
    return data


def load_config(schema: type[T], source: str | Path | dict[str, Any] | T, overrides: typing.Iterable[str] = ()) -> T:
    """Build ``schema`` from a YAML path, a dict, or an instance (returned as is when no overrides).

    ``schema.FILE_RELATIVE``: dotted keys naming files (another config, a tokenizer, weights)
    which, when relative in a YAML file, are relative to that file, so a config works from any
    working directory; ``--set`` values stay relative to the working directory, where they were typed.
    """
    if isinstance(source, schema) and not overrides:
        return source
    if isinstance(source, schema):
        source = dataclasses.asdict(source)
    if isinstance(source, dict):
        name, data = "<dict>", source
    else:
        keys = getattr(schema, "FILE_RELATIVE", ())
        name, data = str(source), resolve_paths(load_yaml(source), keys, Path(source).absolute().parent)
    return from_dict(schema, apply_overrides(data, overrides, name), name)


def resolve_paths(data: dict[str, Any], keys: typing.Iterable[str], base: Path) -> dict[str, Any]:
    """A copy of ``data`` with the relative paths under the dotted ``keys`` joined to ``base``."""
    data = _deep_copy(data)
    for key in keys:
        *parents, leaf = key.split(".")
        node = data
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and isinstance(node.get(leaf), str) and not Path(node[leaf]).is_absolute():
            node[leaf] = os.path.normpath(base / node[leaf])
    return data


def from_dict(schema: type[T], data: Any, source: str, prefix: str = "") -> T:
    """Recursively build the dataclass ``schema`` from plain data, validating keys and types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: {prefix.rstrip('.') or 'config'}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(schema) if f.init}
    removed = getattr(schema, "REMOVED_KEYS", {})
    for key in data:
        if key in removed:
            raise ConfigError(f"{source}: {prefix}{key}: {removed[key]}")
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            raise ConfigError(f"{source}: unknown key '{prefix}{key}'{hint}")
    hints = typing.get_type_hints(schema)
    values = {name: _convert(hints[name], value, source, prefix + name) for name, value in data.items()}
    try:
        return schema(**values)
    except ValueError as error:  # dataclass checks name keys relative to their own level
        raise ConfigError(f"{source}: {prefix}{error}") from None


def _convert(hint: Any, value: Any, source: str, key: str) -> Any:
    """Check ``value`` against the type ``hint``, converting only where YAML is ambiguous."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _convert(option, value, source, key)
            except ConfigError as error:
                errors.append(error)
        raise errors[0]
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, source, key + ".")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: {key}: expected a list, got {value!r}")
        return [_convert(args[0], item, source, f"{key}[{i}]") for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {key}: expected a mapping, got {value!r}")
        return {k: _convert(args[1], v, source, f"{key}.{k}") for k, v in value.items()}
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-6 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint in (str, bool):
        if isinstance(value, hint):
            return value
    elif hint is Any:
        return value
    else:
        raise TypeError(f"unsupported config type {hint!r} for {key}")
    raise ConfigError(f"{source}: {key}: expected {hint.__name__}, got {value!r}")


def _deep_copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data
