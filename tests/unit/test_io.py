"""Atomic writes: an interrupted write never leaves a half-written file or clobbers the old one."""

from __future__ import annotations

import os
import stat

import pytest

from bastion.io import atomic_write_json, atomic_write_text, current_umask, make_temp_dir


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


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_writes_follow_the_umask(tmp_path, umask: int) -> None:
    old = os.umask(umask)
    try:
        assert current_umask() == umask
        path = atomic_write_json(tmp_path / "sub" / "results.json", {"a": 1})
        folder = make_temp_dir(tmp_path, prefix=".bundle.")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE(folder.stat().st_mode) == 0o777 & ~umask
    if umask == 0o022:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
