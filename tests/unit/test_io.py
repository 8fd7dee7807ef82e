"""Atomic writes: an interrupted write never leaves a half-written file or clobbers the old one."""

from __future__ import annotations

import pytest

from bastion.io import atomic_write_json, atomic_write_text


def test_failed_write_keeps_the_old_file(tmp_path) -> None:
    path = tmp_path / "results.json"
    atomic_write_json(path, {"ok": 1})
    with pytest.raises(ValueError):
        atomic_write_json(path, {"bad": float("nan")})  # refused before anything is written
    assert path.read_text() == '{\n  "ok": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_interrupted_write_leaves_no_temp_file(tmp_path, monkeypatch) -> None:
    import os

    path = tmp_path / "out.txt"

    def boom(fd: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_text(path, "x" * 10_000)
    assert list(tmp_path.iterdir()) == []
