"""Typed configurations from YAML: the strict base every config model derives from, and the bridge from
a flat config mapping to the frozen dataclasses the library takes.

Unknown keys are errors that name the key; command-line options override file values; the resolved
config is written into every run folder. The configs themselves live with what they configure
(``bastion.defenses.config``, ``bastion.app.config``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, fields, is_dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bastion.errors import ConfigError

C = TypeVar("C", bound="StrictConfig")
D = TypeVar("D")

#: The largest seed bastion accepts: every RNG it seeds (torch, numpy, python) takes 0..2**32-1.
MAX_SEED = 2**32 - 1
#: A seed for splits, initialisation and attacks.
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a mapping with a repeated key (YAML itself lets the last one win)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: construct_mapping reports it
                break
            if duplicate:
                mark = key_node.start_mark
                raise ConfigError(f"duplicate key {key!r} at line {mark.line + 1}, column {mark.column + 1}")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str, source: str) -> Any:
    """Parse YAML safely (no tags that build objects) and refuse duplicate keys, naming ``source``.

    Raises:
        ConfigError: invalid YAML or a repeated key.
    """
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    except (yaml.YAMLError, RecursionError, ValueError, TypeError) as exc:
        raise ConfigError(f"{source} is not valid YAML: {exc}"[:800]) from None


class StrictConfig(BaseModel):
    """A frozen pydantic model that rejects unknown keys, read from YAML plus command-line overrides."""

    # NaN and infinity are never valid settings (``beta: .inf`` would train into NaN and half-write a run).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @classmethod
    def from_yaml(cls: type[C], path: str | Path | None, **overrides: Any) -> C:
        """Read ``path`` (if any), apply non-None ``overrides``, validate."""
        data: dict[str, Any] = {}
        if path is not None:
            path = Path(path)
            if not path.is_file():
                raise ConfigError(f"config file not found: {path}")
            try:
                text = path.read_bytes().decode("utf-8")
            except OSError as exc:
                raise ConfigError(f"cannot read config file {path}: {exc}") from None
            except UnicodeDecodeError as exc:
                raise ConfigError(f"config file {path} is not UTF-8 text: {exc}") from None
            loaded = load_yaml(text, str(path))
            if loaded is None:
                loaded = {}
            if not isinstance(loaded, dict):
                raise ConfigError(f"{path} must hold a mapping of keys to values, got {type(loaded).__name__}")
            data.update(loaded)
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls.parse(data, source=str(path) if path else "options")

    @classmethod
    def parse(cls: type[C], data: dict[str, Any], source: str = "config") -> C:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(_explain(exc, cls, source)) from None

    def resolved(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def _explain(exc: ValidationError, cls: type[BaseModel], source: str) -> str:
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "<root>"
        if err["type"] == "extra_forbidden":
            allowed = ", ".join(sorted(cls.model_fields))
            lines.append(f"unknown config key {where!r} in {source} (allowed: {allowed})")
        else:
            lines.append(f"invalid value for {where!r} in {source}: {err['msg']}")
    return "; ".join(lines)


#: Dataclass field metadata for a setting a config mapping may leave out (its default then applies):
#: ``field(default=0.9, metadata=NOT_IN_CONFIG)``.
NOT_IN_CONFIG: Mapping[str, bool] = {"optional_in_config": True}


def from_config(cls: type[D], config: Mapping[str, Any], source: str = "config") -> D:
    """``cls`` (a dataclass) built from the keys of a wider flat config that name its fields.

    Keys for other consumers are left alone; a field the config lacks is an error (a renamed config key
    must not silently fall back to a default) unless its metadata is ``NOT_IN_CONFIG``. Lists become
    tuples, since the dataclasses are frozen.
    """
    if not is_dataclass(cls):
        raise TypeError(f"{cls.__name__} is not a dataclass")
    options: dict[str, Any] = {}
    missing = []
    for f in fields(cls):
        if f.name in config:
            value = config[f.name]
            options[f.name] = tuple(value) if isinstance(value, list) else value
        elif not f.metadata.get("optional_in_config") or (f.default is MISSING and f.default_factory is MISSING):
            missing.append(f.name)
    if missing:
        raise ConfigError(f"{source} lacks {', '.join(missing)}, needed by {cls.__name__}")
    return cls(**options)
