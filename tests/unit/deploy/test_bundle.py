"""The model bundle: export, verification on load, no unpickling, atomic writes."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from bastion.artifacts.bundle import SUMS, export_bundle, load_bundle, verify_bundle
from bastion.data import Dataset
from bastion.errors import CheckpointError


def test_export_chooses_the_defended_model_and_records_what_a_deployer_needs(image_bundle, digits: Dataset) -> None:
    m = image_bundle.manifest
    assert m["model"]["name"] == "progressive-trades"
    assert m["input_shape"] == [1, 8, 8] and m["classes"] == list(digits.spec.classes)
    detector = m["defense"]["detector"]
    assert detector["kind"] == "MahalanobisDetector"
    assert detector["threshold"] <= detector["reject_threshold"]
    assert m["defense"]["transforms"] == [{"name": "bit-depth", "bits": 3}]
    assert m["robustness"]["defended"]["robust_accuracy"] == {"ensemble": {"0.1": 0.5}}
    assert m["robustness"]["headline"] == {"aa_grade": True, "robust_accuracy": {"0.1": 0.5}}  # the deployed one
    assert m["provenance"]["config"] == {"epochs": 8} and m["provenance"]["exported_with"]["torch"]
    assert m["dataset"]["domain"] == {"kind": "box", "lower": 0.0, "upper": 1.0}


def test_loaded_bundle_reproduces_the_run_defense(image_bundle, image_run: Path, digits: Dataset) -> None:
    from bastion.defenses.store import load_defense
    from bastion.models.checkpoint import load_model

    model = load_model(image_run / "models" / "progressive-trades")
    original = load_defense(image_run / "defenses" / "progressive-trades", model).decide(digits.test.x[:32])
    loaded = image_bundle.defense.decide(digits.test.x[:32])
    assert torch.equal(original.labels, loaded.labels)
    assert torch.allclose(original.scores, loaded.scores)
    assert torch.equal(original.actions, loaded.actions)


def test_loading_never_unpickles(image_bundle_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("a bundle load tried to unpickle")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    assert load_bundle(image_bundle_path).defense is not None


@pytest.fixture
def copy(image_bundle_path: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(image_bundle_path, tmp_path / "bundle"))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda b: b.joinpath("model", "weights.safetensors").write_bytes(b"\0" * 64), "weights.safetensors: checksum"),
        (lambda b: b.joinpath("defense", "detector.safetensors").unlink(), "missing: defense/detector.safetensors"),
        (lambda b: b.joinpath("model", "evil.pkl").write_bytes(b"x"), "not listed in SHA256SUMS"),
        (lambda b: b.joinpath(SUMS).unlink(), "SHA256SUMS is missing"),
        (lambda b: b.joinpath(SUMS).write_text("abc  ../../etc/passwd\n"), "line 1"),
    ],
    ids=["corrupt-weights", "missing-file", "extra-file", "no-sums", "bad-sums"],
)
def test_damaged_bundles_are_refused_with_the_file_named(copy: Path, damage, message: str) -> None:
    damage(copy)
    with pytest.raises(CheckpointError, match=message):
        load_bundle(copy)


def test_a_consistent_rewrite_is_caught_by_the_expected_digest(copy: Path, image_bundle) -> None:
    from bastion.artifacts.bundle import write_sums

    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["defense"]["detector"]["threshold"] = 1e9  # tamper, then rewrite the sums to match
    (copy / "manifest.json").write_text(json.dumps(manifest))
    write_sums(copy)
    assert load_bundle(copy).manifest["defense"]["detector"]["threshold"] == 1e9
    with pytest.raises(CheckpointError, match="differs from the expected"):
        verify_bundle(copy, expected_digest=image_bundle.digest)
    assert verify_bundle(copy) != image_bundle.digest


def test_export_is_atomic_and_refuses_to_overwrite(image_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "b"
    with pytest.raises(CheckpointError, match="no model 'nope'"):
        export_bundle(image_run, out, model="nope")
    assert not out.exists() and list(tmp_path.iterdir()) == []
    export_bundle(image_run, out, model="standard")
    with pytest.raises(CheckpointError, match="already exists"):
        export_bundle(image_run, out)
    assert load_bundle(out).defense is None  # the standard model has no saved defense
    _, digest = export_bundle(image_run, out, overwrite=True)
    assert load_bundle(out).defense is not None and load_bundle(out).digest == digest
    assert [p.name for p in tmp_path.iterdir()] == ["b"]  # no temp or old folders left behind


def test_tabular_bundle_carries_the_feature_schema(tabular_bundle) -> None:
    schema = {f["name"]: f for f in tabular_bundle.manifest["feature_schema"]}
    assert list(schema) == ["proto", "sent", "total", "rate", "flag"]
    assert schema["proto"] == {"name": "proto", "type": "categorical", "categories": ["tcp", "udp"], "mutable": False}
    assert tabular_bundle.manifest["defense"] is None and tabular_bundle.manifest["robustness"] is None


def test_cli_export_and_serve_report_errors_cleanly(image_run: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from bastion.cli import app

    runner = CliRunner()
    ok = runner.invoke(app, ["export", str(image_run), "--out", str(tmp_path / "b")])
    assert ok.exit_code == 0, ok.output
    digest = load_bundle(tmp_path / "b").digest
    assert digest in ok.output.replace("\n", "")
    again = runner.invoke(app, ["export", str(image_run), "--out", str(tmp_path / "b")])
    assert again.exit_code == 2 and "already exists" in " ".join(again.output.split())  # rich wraps lines
    wrong = runner.invoke(app, ["serve", str(tmp_path / "b"), "--expect-digest", "0" * 64])
    assert wrong.exit_code == 2 and "differs from the expected" in " ".join(wrong.output.split())
