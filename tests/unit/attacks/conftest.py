"""Fixtures for the attack tests; helpers live in attack_fixtures.py (importable by a unique name)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)
