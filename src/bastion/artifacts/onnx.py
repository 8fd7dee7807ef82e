"""ONNX export of a model (and of its defended forward: transforms -> model), checked with onnxruntime.

Optional: needs the ``onnx`` extra (onnx, onnxruntime). Uses PyTorch's TorchScript-based exporter
(``dynamo=False``), which needs no further packages. A graph is kept only if onnxruntime reproduces the
PyTorch logits on inputs drawn from the model's input domain within ``atol``; the largest difference is
recorded. The detectors are not exported: the service runs them in PyTorch.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from bastion.data.spec import DatasetSpec
from bastion.defenses.pipeline import DefendedClassifier
from bastion.errors import CheckpointError, ConfigError
from bastion.io import atomic_write_bytes

OPSET = 17
ATOL = 1e-4


def _require() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise ConfigError(
            "ONNX export needs onnx and onnxruntime: pip install 'bastion[onnx]' (from a checkout: make extras)"
        ) from None
    return onnxruntime


def domain_samples(spec: DatasetSpec, n: int, seed: int = 0) -> Tensor:
    """(n, *input_shape) uniform points of the domain's bounding box (what a verification needs)."""
    lower = torch.as_tensor(getattr(spec.domain, "lower", 0.0), dtype=torch.float32)
    upper = torch.as_tensor(getattr(spec.domain, "upper", 1.0), dtype=torch.float32)
    u = torch.rand((n, *spec.input_shape), generator=torch.Generator().manual_seed(seed))
    return lower + u * (upper - lower)


def to_onnx(module: nn.Module, example: Tensor, *, opset: int = OPSET) -> bytes:
    """Serialized ONNX graph x (N, *S) -> logits (N, C), batch dimension dynamic."""
    buf = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript exporter is deprecated upstream but needs no extra deps
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(),
            (example,),
            buf,  # type: ignore[arg-type]  # the TorchScript exporter writes to file objects too
            dynamo=False,
            opset_version=opset,
            input_names=["x"],
            output_names=["logits"],
            dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}},
        )
    return buf.getvalue()


def max_abs_diff(module: nn.Module, graph: bytes, x: Tensor) -> float:
    """Largest |onnxruntime - PyTorch| over the logits of x."""
    ort = _require()
    session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    (got,) = session.run(["logits"], {"x": x.numpy()})
    with torch.no_grad():
        want = module.eval()(x)
    return float((torch.from_numpy(got) - want).abs().max())


def export_verified(
    module: nn.Module, spec: DatasetSpec, path: Path, *, n: int = 64, atol: float = ATOL
) -> dict[str, Any]:
    """Write ``path`` if onnxruntime matches PyTorch within atol on n domain samples; return the record.

    Raises:
        CheckpointError: the graph does not reproduce the model (the file is not written).
    """
    _require()
    x = domain_samples(spec, n)
    graph = to_onnx(module, x[:2])
    diff = max_abs_diff(module, graph, x)
    if not diff <= atol:
        raise CheckpointError(f"ONNX export of {type(module).__name__}: max |onnx - torch| = {diff:.3g} > {atol:g}")
    atomic_write_bytes(path, graph)
    return {"file": path.name, "opset": OPSET, "max_abs_diff": diff, "n_checked": n, "atol": atol}


def export_bundle_graphs(
    model: nn.Module, defense: DefendedClassifier | None, spec: DatasetSpec, directory: Path
) -> dict[str, Any]:
    """model.onnx always; defended.onnx (transforms -> model) when the defense has transforms."""
    record = {"model": export_verified(model, spec, directory / "model.onnx")}
    if defense is not None and defense.transforms:
        forward = DefendedClassifier(model, defense.transforms)
        record["defended"] = export_verified(forward, spec, directory / "defended.onnx")
    return record
