"""Data loss: --force replaces only what bastion wrote before; reruns never mix or overwrite runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bastion.app.config import TrainConfig
from bastion.app.experiment import ExperimentConfig, check_previous_config, jobs
from bastion.app.runtime import prepare_run_dir
from bastion.app.train import run_train
from bastion.artifacts.bundle import export_bundle, load_bundle
from bastion.cli import app
from bastion.errors import CheckpointError, ConfigError
from bastion.io import atomic_write_json

runner = CliRunner()


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_export_force_never_deletes_a_file_a_run_or_an_unrelated_folder(tiny_run: Path, tmp_path: Path) -> None:
    victim_file = tmp_path / "notes.txt"
    victim_file.write_text("precious")
    victim_dir = tmp_path / "photos"
    (victim_dir / "2026").mkdir(parents=True)
    (victim_dir / "2026" / "a.jpg").write_bytes(b"\xff\xd8 not really")
    before_run = _tree(tiny_run)
    for target in (victim_file, victim_dir, tiny_run, tiny_run / "models"):
        with pytest.raises(CheckpointError, match="--force replaces only a previous bundle|contains the source"):
            export_bundle(tiny_run, target, overwrite=True)
    assert victim_file.read_text() == "precious"
    assert (victim_dir / "2026" / "a.jpg").read_bytes() == b"\xff\xd8 not really"
    assert _tree(tiny_run) == before_run
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "photos", "run"]  # no .X.old-PID left


def test_export_force_replaces_a_previous_bundle_but_not_the_bundle_it_reads(tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    export_bundle(tiny_run, out)
    _, digest = export_bundle(tiny_run, out, overwrite=True)
    assert load_bundle(out).digest == digest
    with pytest.raises(CheckpointError, match="contains the source"):
        export_bundle(out / "model", out, overwrite=True)
    assert load_bundle(out).digest == digest


def test_cli_export_force_onto_a_file_exits_2_and_keeps_it(tiny_run: Path, tmp_path: Path) -> None:
    victim = tmp_path / "x"
    victim.write_text("keep me")
    result = runner.invoke(app, ["export", str(tiny_run), "--out", str(victim), "--force"])
    assert result.exit_code == 2, result.output
    assert "previous bundle" in result.output and victim.read_text() == "keep me"


def test_train_refuses_an_existing_run_without_force(tiny_run: Path, tmp_path: Path) -> None:
    before = _tree(tiny_run)
    with pytest.raises(ConfigError, match="already holds a run.*--force"):
        prepare_run_dir(tiny_run, force=False, resume=False)
    result = runner.invoke(app, ["train", "--out", str(tiny_run), "--epochs", "1", "--model", "mlp"])
    assert result.exit_code == 2 and "already holds a run" in result.output
    assert _tree(tiny_run) == before
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(ConfigError, match="existing file"):
        prepare_run_dir(afile, force=True, resume=False)
    with pytest.raises(ConfigError, match="existing file"):
        prepare_run_dir(afile / "sub", force=True, resume=False)


def test_train_force_replaces_the_previous_run_and_keeps_other_files(tiny_run: Path) -> None:
    (tiny_run / "NOTES.md").write_text("mine")
    cfg = TrainConfig.parse(
        {"data": "digits", "model": "mlp", "method": "standard", "epochs": 1, "val_examples": 0, "device": "cpu"}
    )
    run_train(cfg, tiny_run, force=True)
    assert sorted(p.name for p in (tiny_run / "models").iterdir()) == ["standard"]
    assert not (tiny_run / "defenses").exists()  # the old model's defense cannot ship with the new run
    assert (tiny_run / "NOTES.md").read_text() == "mine"


def test_experiment_with_a_changed_config_refuses_naming_the_keys(tmp_path: Path) -> None:
    old = ExperimentConfig.parse({"methods": ["standard"], "seeds": [0], "train": {"epochs": 1}})
    new = ExperimentConfig.parse({"methods": ["standard"], "seeds": [0], "train": {"epochs": 2}})
    atomic_write_json(tmp_path / "experiment.json", old.resolved())
    (job,) = jobs(old, tmp_path)
    tcfg, ecfg = old.train_config(job.dataset, job.method, job.seed), old.eval_config(job.seed)
    atomic_write_json(job.run_dir / "provenance.json", {"train": tcfg.resolved(), "evaluate": ecfg.resolved()})
    (job.run_dir / "DONE").write_text("{}")
    with pytest.raises(ConfigError, match=r"changed: train\.epochs"):
        check_previous_config(new, tmp_path, force=False)
    assert (job.run_dir / "DONE").is_file()
    check_previous_config(old, tmp_path, force=False)  # same config: resumes
    check_previous_config(new, tmp_path, force=True)
    assert not job.run_dir.exists()  # its settings changed: it is redone, not kept
    assert json.loads((tmp_path / "experiment.json").read_text()) == old.resolved()
