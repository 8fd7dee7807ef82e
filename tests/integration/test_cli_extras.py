"""Commands that need an optional extra say exactly how to install it when it is missing."""

from __future__ import annotations

import builtins
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bastion.cli import app

ROOT = Path(__file__).resolve().parents[2]


def _hide(monkeypatch: pytest.MonkeyPatch, *prefixes: str) -> None:
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.split(".")[0] in prefixes:
            raise ImportError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)


def test_serve_without_the_extra_prints_the_install_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import sys

    for mod in [m for m in sys.modules if m.startswith(("bastion.service", "fastapi"))]:
        monkeypatch.delitem(sys.modules, mod)
    _hide(monkeypatch, "fastapi")
    result = CliRunner().invoke(app, ["serve", str(tmp_path)])
    assert result.exit_code == 2
    assert "pip install 'bastion[serve]' (from a checkout: make extras)" in result.output


def test_onnx_without_the_extra_prints_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    from bastion.artifacts import onnx
    from bastion.errors import ConfigError

    _hide(monkeypatch, "onnxruntime")
    with pytest.raises(ConfigError, match=re.escape("pip install 'bastion[onnx]' (from a checkout: make extras)")):
        onnx._require()


def test_the_makefile_target_named_in_the_messages_installs_every_extra() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^extras: .*\n\t\$\(PIP\) install --quiet -e '\.\[serve,onnx,track\]'$", makefile, re.M)
