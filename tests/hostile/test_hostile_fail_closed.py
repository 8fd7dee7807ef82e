"""Security / fail-open: corrupted defense files are refused, non-finite scores reject, broken models are
refused by evaluation, and uploads reach only allow-listed decoders."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from bastion.artifacts.bundle import export_bundle
from bastion.attacks import PGD
from bastion.data import Dataset
from bastion.data.formats.image import UPLOAD_FORMATS, decode_image_bytes
from bastion.defenses.pipeline import ACTIONS, REJECT, Defense
from bastion.defenses.store import load_defense
from bastion.errors import BastionError, CheckpointError, DataFormatError, InputValidationError
from bastion.evaluation.accuracy import accuracy
from bastion.goals import Misclassify
from bastion.models import checkpoint
from bastion.threat import ThreatModel


def _flip_byte(path: Path, offset: int = -9) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


def test_corrupted_detector_tensors_are_refused_on_load_and_export(tiny_run: Path, tmp_path: Path) -> None:
    defense_dir = tiny_run / "defenses" / "mlp"
    _flip_byte(defense_dir / "detector.safetensors")
    model = checkpoint.load_model(tiny_run / "models" / "mlp")
    with pytest.raises(CheckpointError, match="detector.safetensors: checksum mismatch"):
        load_defense(defense_dir, model)
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        export_bundle(tiny_run, tmp_path / "bundle")
    assert not (tmp_path / "bundle").exists()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["transforms"].append({"name": "bit-depth", "bits": 1}), "content checksum mismatch"),
        (lambda d: d["policy"].update(reject_threshold=1e9), "content checksum mismatch"),
        (lambda d: d.pop("sha256"), "content checksum mismatch"),
    ],
)
def test_edited_defense_config_is_refused(tiny_run: Path, edit, message: str) -> None:
    path = tiny_run / "defenses" / "mlp" / "defense.json"
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match=message):
        load_defense(path.parent, checkpoint.load_model(tiny_run))


def test_non_finite_anomaly_score_rejects(tiny_run: Path, digits: Dataset, monkeypatch) -> None:
    model = checkpoint.load_model(tiny_run)
    defense = load_defense(tiny_run / "defenses" / "mlp", model)
    x = digits.test.x[:5]
    assert defense.detector is not None
    monkeypatch.setattr(defense.detector, "score", lambda x: torch.full((len(x),), float("nan")))
    decision = defense.decide(x)
    assert decision.action_names() == ["reject"] * 5
    assert bool(decision.flagged.all())
    monkeypatch.setattr(defense.detector, "score", lambda x: torch.full((len(x),), float("inf")))
    assert (defense.decide(x).actions == REJECT).all()


class _NaNModel(torch.nn.Module):
    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x)
        return torch.where(torch.arange(len(x)).unsqueeze(1) % 2 == 0, out, torch.full_like(out, float("nan")))


def test_non_finite_logits_reject_in_decide_and_are_refused_by_evaluation(tiny_model, digits: Dataset) -> None:
    broken = _NaNModel(tiny_model).eval()
    decision = Defense(broken, domain=digits.spec.domain).decide(digits.test.x[:4])
    assert [ACTIONS[int(a)] for a in decision.actions] == ["accept", "reject", "accept", "reject"]
    with pytest.raises(InputValidationError, match="NaN or infinite logits"):
        accuracy(broken, digits.test)
    threat = ThreatModel(norm="linf", eps=0.1, domain=digits.spec.domain)
    with pytest.raises(InputValidationError, match="NaN or infinite logits"):
        PGD(n_steps=2)(broken, digits.test.x[:4], Misclassify(digits.test.y[:4]), threat)


def _image_bytes(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (8, 8), 128).save(buf, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["TIFF", "GIF", "ICO", "EPS-header"])
def test_uploads_only_reach_allow_listed_decoders(fmt: str) -> None:
    data = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n" if fmt == "EPS-header" else _image_bytes(fmt)
    with pytest.raises(DataFormatError, match="accepted format"):
        decode_image_bytes(data, "upload", formats=UPLOAD_FORMATS)


@pytest.mark.parametrize("fmt", UPLOAD_FORMATS)
def test_allow_listed_uploads_still_decode(fmt: str) -> None:
    assert decode_image_bytes(_image_bytes(fmt), "upload", formats=UPLOAD_FORMATS).shape == (8, 8, 1)


def test_every_error_above_is_a_bastion_error() -> None:
    for cls in (CheckpointError, DataFormatError, InputValidationError):
        assert issubclass(cls, BastionError)
