"""ONNX export: graphs kept only when onnxruntime reproduces the PyTorch outputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("onnxruntime")

from bastion.artifacts.bundle import export_bundle, load_bundle
from bastion.artifacts.onnx import export_verified, max_abs_diff
from bastion.errors import CheckpointError


def test_bundle_onnx_graphs_match_pytorch(image_run: Path, tmp_path: Path, digits) -> None:
    path, _ = export_bundle(image_run, tmp_path / "b", onnx=True)
    bundle = load_bundle(path)
    record = bundle.manifest["onnx"]
    assert record["model"]["max_abs_diff"] <= 1e-4 and record["defended"]["max_abs_diff"] <= 1e-4
    graph = (path / "defended.onnx").read_bytes()  # transforms -> model, on real test digits this time
    assert max_abs_diff(bundle.defense, graph, digits.test.x[:50]) <= 1e-4


def test_a_graph_that_differs_is_refused(tmp_path: Path, image_bundle) -> None:
    class Unstable(torch.nn.Module):  # traced as a constant: the exported graph ignores later changes
        def __init__(self) -> None:
            super().__init__()
            self.inner = image_bundle.model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x) + float(x.shape[0] == 2) * 10

    with pytest.raises(CheckpointError, match="max \\|onnx - torch\\|"):
        export_verified(Unstable(), image_bundle.spec, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()
