"""Typed configuration plumbing shared by every entry point.

Configs are frozen dataclasses (nested dataclasses allowed). An entry point resolves one as
defaults (a preset) -> YAML file -> `--set key=value` overrides, validates it and writes the
resolved values into its run folder. Unknown keys fail loudly.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration key or value that does not fit the config's fields."""


def to_dict(config: Any) -> dict[str, Any]:
    """Nested plain-python dict of a (nested) dataclass config; tuples become lists."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (tuple, list)):
            return [plain(v) for v in value]
        return value

    return plain(config)


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Converts `value` (from YAML or a `--set` string) to the field's annotated type."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, option, key)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError("; ".join(errors))
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{key}={value!r}: expected one of {list(args)}")
        return value
    if origin in (tuple, list):
        if isinstance(value, str):
            value = yaml.safe_load(value) if value.strip().startswith("[") else [v for v in value.split(",") if v]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}={value!r}: expected a list")
        inner = args[0] if args else Any
        return tuple(_coerce(v, inner, key) for v in value)
    if annotation is bool:
        if isinstance(value, str):
            lowered = value.lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise ConfigError(f"{key}={value!r}: expected true or false")
            return lowered in ("true", "1", "yes")
        if not isinstance(value, bool):
            raise ConfigError(f"{key}={value!r}: expected true or false")
        return value
    if annotation in (int, float):
        try:
            number = value
            if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string: parse numbers directly
                try:
                    number = int(value) if annotation is int and value.strip().lstrip("+-").isdigit() else float(value)
                except ValueError:
                    number = yaml.safe_load(value)
            if isinstance(number, bool) or not isinstance(number, (int, float)):
                raise TypeError
            if annotation is int and float(number) != int(number):
                raise TypeError
            return annotation(number)
        except (TypeError, ValueError, yaml.YAMLError):
            raise ConfigError(f"{key}={value!r}: expected {annotation.__name__}") from None
    if annotation is str:
        return str(value)
    if annotation in (Any, typing.Any):
        return value
    return value


def merge(config: T, updates: Mapping[str, Any], prefix: str = "") -> T:
    """Returns `config` with `updates` (nested dict or dotted keys) applied, types coerced."""
    if not dataclasses.is_dataclass(config):
        raise ConfigError(f"{prefix or 'config'} is not a config section")
    fields = {f.name: f for f in dataclasses.fields(config)}
    hints = typing.get_type_hints(type(config))
    nested: dict[str, dict[str, Any]] = {}
    direct: dict[str, Any] = {}
    for key, value in updates.items():
        head, _, rest = key.partition(".")
        if head not in fields:
            raise ConfigError(
                f"unknown config key {prefix + head!r}; known keys: {', '.join(prefix + k for k in sorted(fields))}"
            )
        if rest:
            nested.setdefault(head, {})[rest] = value
        elif isinstance(value, Mapping) and dataclasses.is_dataclass(getattr(config, head)):
            nested.setdefault(head, {}).update(value)
        else:
            direct[head] = _coerce(value, hints[head], prefix + head)
    for head, sub in nested.items():
        direct[head] = merge(getattr(config, head), sub, prefix + head + ".")
    return dataclasses.replace(config, **direct)


def parse_overrides(pairs: list[str] | None) -> dict[str, str]:
    """Parses `--set key=value` strings into a dict of dotted keys."""
    result = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {pair!r}: expected key=value")
        result[key.strip()] = value.strip()
    return result


def command_line_updates(budget: float | None, pairs: list[str] | None) -> dict[str, str | float]:
    """The dotted config updates of a training command's `--budget MINUTES` and `--set key=value`
    (a `--set budget_minutes=...` wins over --budget)."""
    updates: dict[str, str | float] = {} if budget is None else {"budget_minutes": float(budget)}
    return {**updates, **parse_overrides(pairs)}


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Reads a YAML config file: a mapping of keys (nested or dotted) to values."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys, got {type(data).__name__}")
    return data


def save_yaml(config: Any, path: str | Path) -> None:
    """Writes the resolved config as YAML (atomically)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
    tmp.replace(path)


class Problems:
    """Collects what a config check finds wrong, as "key=value must be rule" messages."""

    def __init__(self):
        self.messages: list[str] = []

    def need(self, key: str, value: Any, ok: bool, rule: str) -> None:
        """Records `key`=`value` as breaking `rule` unless `ok`."""
        if not ok:
            self.messages.append(f"{key}={value!r} must be {rule}")

    def add(self, message: str) -> None:
        """Records a problem that does not read as one key's rule."""
        self.messages.append(message)

    def raise_if_any(self, what: str) -> None:
        """Raises ConfigError("inconsistent <what>: <messages>") if a check failed."""
        if self.messages:
            raise ConfigError(f"inconsistent {what}: " + "; ".join(self.messages))
