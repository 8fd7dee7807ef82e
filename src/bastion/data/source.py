"""A data SPEC string, ``NAME[:PATH][?key=value&...]``, parsed once into a :class:`DataSource`.

Every loader receives the parsed object, never the string: the name is lower-cased, the path is
everything after the first colon (it may hold colons itself) up to the first ``?``, and the options are
``key=value`` pairs joined by ``&``. A dataset declares the options it takes with one value parser each
(:meth:`DataSource.typed_options`); an unknown key or a bad value is a ConfigError naming it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bastion.errors import ConfigError

#: option key -> parser of its text; a parser raises ValueError with the reason a value is refused.
OptionParsers = Mapping[str, Callable[[str], Any]]

_YES = frozenset({"1", "true", "yes", "on"})
_NO = frozenset({"0", "false", "no", "off"})


def parse_spec(spec: str) -> tuple[str, str | None]:
    """Split ``NAME[:PATH]``; the path may itself contain colons (and keeps its ``?options``)."""
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError("data SPEC must be a non-empty string such as 'digits' or 'mnist:/path/to/mnist'")
    name, sep, path = spec.strip().partition(":")
    if sep and not path:
        raise ConfigError(f"data SPEC {spec!r} has an empty path after ':'")
    return name.strip().lower(), (path or None)


@dataclass(frozen=True)
class DataSource:
    """One parsed data SPEC.

    Attributes:
        text: the SPEC as given; recorded as ``DatasetSpec.source`` so a run folder rebuilds the data.
        name: the dataset name, lower-cased (a key of ``DATASETS``).
        path: the path text without its options, or None for a SPEC without a path (``digits``).
        options: the ``key=value`` options as text, keys lower-cased; typed by :meth:`typed_options`.
    """

    text: str
    name: str
    path: str | None
    options: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, spec: str) -> DataSource:
        """Parse ``NAME[:PATH][?key=value&...]``; a malformed option or a key given twice is a ConfigError."""
        name, rest = parse_spec(spec)
        if rest is None:
            return cls(spec, name, None)
        path, _, query = rest.partition("?")
        options: dict[str, str] = {}
        for item in filter(None, query.split("&")):
            key, eq, value = item.partition("=")
            key = key.strip().lower()
            if not key:
                raise ConfigError(f"data option {item!r} in {name} SPEC is not key=value")
            if not eq or not value:
                raise ConfigError(f"option {key!r} in {name} SPEC needs a value: {key}=VALUE (key=value pairs)")
            if key in options:
                raise ConfigError(f"option {key!r} given twice in {name} SPEC {spec!r}")
            options[key] = value
        return cls(spec, name, path, options)

    def with_option(self, key: str, value: str) -> DataSource:
        """The same source with one option set (a command-line override such as ``--on-bad-rows``)."""
        return replace(self, options={**self.options, key: value})

    def location(self, what: str = "a path") -> Path:
        """The path, user-expanded; a SPEC without one is a ConfigError saying what it needs."""
        if self.path is None:
            raise ConfigError(f"{self.name} needs {what}: {self.name}:PATH")
        return Path(self.path).expanduser()

    def typed_options(self, allowed: OptionParsers) -> dict[str, Any]:
        """The options converted by ``allowed``; a key it lacks or a value its parser refuses is a ConfigError."""
        typed: dict[str, Any] = {}
        for key, value in self.options.items():
            if key not in allowed:
                known = ", ".join(sorted(allowed)) or "none"
                raise ConfigError(f"unknown option {key!r} in {self.name} SPEC (options: {known})")
            try:
                typed[key] = allowed[key](value)
            except ValueError as exc:
                raise ConfigError(f"bad value for option {key!r} in {self.name} SPEC: {exc}") from None
        return typed


def yes_no(text: str) -> bool:
    """The one yes/no option parser: 1/true/yes/on or 0/false/no/off, any case."""
    lowered = text.strip().lower()
    if lowered in _YES:
        return True
    if lowered in _NO:
        return False
    raise ValueError(f"expected yes or no (1/true/yes/on, 0/false/no/off), got {text!r}")


def positive_int(text: str) -> int:
    """A whole number >= 1 (a side in pixels)."""
    value = int(text)
    if value < 1:
        raise ValueError(f"must be >= 1, got {value}")
    return value


#: Largest image side a SPEC may ask to resize to (a size=100000 option would allocate 40 GB per image).
MAX_IMAGE_SIDE = 1024


def image_side(text: str) -> int:
    """A side in pixels, 1..MAX_IMAGE_SIDE."""
    value = positive_int(text)
    if value > MAX_IMAGE_SIDE:
        raise ValueError(f"must be <= {MAX_IMAGE_SIDE} pixels, got {value}")
    return value


def one_of(*choices: str) -> Callable[[str], str]:
    """A parser accepting exactly ``choices`` (case-sensitive, as the readers spell them)."""

    def parse(text: str) -> str:
        if text not in choices:
            raise ValueError(f"expected {' or '.join(choices)}, got {text!r}")
        return text

    return parse


def verbatim(value: str) -> str:
    """An option taken as given (a file name)."""
    return value
