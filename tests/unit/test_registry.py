"""Registries behave like a read-only collection of names."""

from __future__ import annotations

import pytest

import bastion
from bastion.errors import ConfigError
from bastion.registry import Registry


def test_registry_is_iterable_sized_and_supports_in() -> None:
    reg: Registry[int] = Registry("thing")
    reg.register("b")(lambda: 2)
    reg.register("a")(lambda: 1)
    assert list(reg) == ["a", "b"] and len(reg) == 2 and "a" in reg and "c" not in reg
    with pytest.raises(ConfigError, match="available: a, b"):
        reg.get("c")


def test_public_registries_list_their_names() -> None:
    assert sorted(bastion.ATTACKS) == bastion.ATTACKS.names() and "pgd" in bastion.ATTACKS
    assert len(bastion.ATTACKS) == len(bastion.ATTACKS.names()) > 5
