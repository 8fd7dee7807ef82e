"""Named factories, one registry per family (models, attacks, datasets...). Contract tests iterate them."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from bastion.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A mapping name -> factory with clear errors for unknown names and bad options.

    Iterating gives the registered names, sorted (``sorted(bastion.ATTACKS)``, ``"pgd" in ATTACKS``,
    ``len(ATTACKS)``).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator: ``@MODELS.register("cnn")``. Names are unique."""

        def add(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._factories[name] = factory
            return factory

        return add

    def names(self, pattern: str = "*") -> list[str]:
        """Registered names matching a glob pattern, sorted."""
        return sorted(n for n in self._factories if fnmatch.fnmatch(n, pattern))

    def get(self, name: str) -> Callable[..., T]:
        try:
            return self._factories[name]
        except KeyError:
            raise ConfigError(f"unknown {self.kind} {name!r}; available: {', '.join(self.names())}") from None

    def create(self, name: str, **options: Any) -> T:
        """Build ``name`` with options; an option the factory does not take is an error naming it."""
        factory = self.get(name)
        try:
            return factory(**options)
        except TypeError as exc:
            raise ConfigError(f"bad options for {self.kind} {name!r}: {exc}") from exc

    def __contains__(self, name: object) -> bool:
        return name in self._factories

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._factories)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self.names())})"
