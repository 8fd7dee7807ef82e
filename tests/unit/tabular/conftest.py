"""Fixtures for the tabular tests: a file writer into tmp_path and the real datasets' folder."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture
def write(tmp_path: Path) -> Callable[..., Path]:
    """write(name, text or lines, encoding=...) -> path in the test's tmp dir."""

    def _write(name: str, content: str | list[str], *, encoding: str = "utf-8", newline: str = "\n") -> Path:
        text = content if isinstance(content, str) else newline.join(content) + newline
        path = tmp_path / name
        path.write_bytes(text.encode(encoding))
        return path

    return _write


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """`$BASTION_DATA`, else `../shared/data` next to the repository; skips the test when absent."""
    env = os.environ.get("BASTION_DATA")
    root = Path(env) if env else Path(__file__).resolve().parents[3] / ".." / "shared" / "data"
    if not root.is_dir():
        pytest.skip(f"real datasets not available at {root}")
    return root.resolve()
