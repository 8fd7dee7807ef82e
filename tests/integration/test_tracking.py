"""``--log-to tensorboard:DIR`` / ``mlflow:URI``, read back with the real libraries from local stores."""

from __future__ import annotations

import builtins
import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from bastion.app.tracking import LogTarget, tracking_run
from bastion.cli import app
from bastion.errors import ConfigError

pytest.importorskip("tensorboard")
pytest.importorskip("mlflow")

from mlflow.tracking import MlflowClient
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

runner = CliRunner()


@pytest.fixture(autouse=True)
def _file_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 refuses a local folder store otherwise


def scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(log_dir))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def texts(log_dir: Path, tag: str) -> list[tuple[int, str]]:
    events = EventAccumulator(str(log_dir))
    events.Reload()
    return [(e.step, e.tensor_proto.string_val[0].decode()) for e in events.Tensors(f"{tag}/text_summary")]


def only_run(uri: str, experiment: str):
    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no MLflow experiment {experiment!r}"
    (run,) = client.search_runs([found.experiment_id])
    return client, run


def test_train_logs_curves_stages_and_results_to_both(tmp_path: Path) -> None:
    uri = (tmp_path / "mlruns").as_uri()
    config = tmp_path / "train.yaml"
    config.write_text("val_examples: 64\nbatch_size: 256\n")
    result = runner.invoke(
        app,
        ["train", "--data", "digits", "--model", "mlp", "--method", "progressive-trades", "--epochs", "3",
         "--config", str(config), "--out", str(tmp_path / "run"),
         "--log-to", f"tensorboard:{tmp_path / 'tb'}", "--log-to", f"mlflow:{uri}"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    history = results["models"]["progressive-trades"]["training"]["history"]
    clean = results["models"]["progressive-trades"]["clean_accuracy"]

    tb = scalars(tmp_path / "tb" / "run")
    assert [step for step, _ in tb["train/loss"]] == [0, 1, 2]
    assert [round(v, 4) for _, v in tb["train/val_robust_acc"]] == [round(h["val_robust_acc"], 4) for h in history]
    assert [round(v, 4) for _, v in tb["train/eps"]] == [round(h["eps"], 4) for h in history]  # the stages' budgets
    assert tb["train/progressive-trades/clean_accuracy"] == [(2, pytest.approx(clean))]
    stages = [text for _, text in texts(tmp_path / "tb" / "run", "events")]
    assert [t.split(":")[0] for t in stages] == ["stage 1 starts at epoch 1", "stage 2 starts at epoch 2",
                                                 "stage 3 starts at epoch 3"]  # fmt: skip
    assert '"method": "progressive-trades"' in texts(tmp_path / "tb" / "run", "config")[0][1]

    client, run = only_run(uri, "bastion")
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert run.data.params["method"] == "progressive-trades" and run.data.params["epochs"] == "3"
    losses = client.get_metric_history(run.info.run_id, "train/loss")
    assert [m.step for m in losses] == [0, 1, 2]
    assert [round(m.value, 4) for m in losses] == [round(h["loss"], 4) for h in history]
    assert run.data.metrics["train/progressive-trades/clean_accuracy"] == pytest.approx(clean)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"results.json", "events.txt"} <= artifacts


@pytest.mark.slow
def test_experiment_logs_robust_accuracy_per_eps_and_check_verdicts(tmp_path: Path) -> None:
    uri = (tmp_path / "mlruns").as_uri()
    config = tmp_path / "exp.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": "tracked",
                "methods": ["standard"],
                "seeds": [0],
                "train": {"epochs": 2, "val_examples": 0, "batch_size": 256},
                "evaluate": {"suite": "quick", "eps": [0.1, 0.2], "n_examples": 30, "checks_examples": 20},
                "transfer_examples": 0,
            }
        )
    )
    result = runner.invoke(
        app,
        ["experiment", str(config), "--out", str(tmp_path / "exp"), "--quiet",
         "--log-to", f"tensorboard:{tmp_path / 'tb'}", "--log-to", f"mlflow:{uri}"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "exp" / "runs" / "digits" / "standard" / "seed-0"
    entry = json.loads((run_dir / "results.json").read_text())["models"]["standard"]
    assert entry["checks"]

    tb = scalars(tmp_path / "tb" / "digits" / "standard" / "seed-0")
    for eps in ("0.1", "0.2"):
        for attack in ("fgsm", "pgd-10", "ensemble"):
            value = entry["robust_accuracy"][attack][eps]
            assert tb[f"evaluate/standard/robust_accuracy/{attack}/{eps}"] == [(1, pytest.approx(value))]
        assert tb[f"evaluate/standard/headline/{eps}"][0][1] == pytest.approx(entry["headline"]["robust_accuracy"][eps])
    assert [s for s, _ in tb["train/loss"]] == [0, 1]
    checks = texts(tmp_path / "tb" / "digits" / "standard" / "seed-0", "checks")[-1][1]
    for code, check in entry["checks"].items():
        assert f"standard: {code}: {check['status']}" in checks

    _, run = only_run(uri, "tracked")
    assert run.info.run_name == "digits/standard/seed-0" and run.info.status == "FINISHED"
    for code, check in entry["checks"].items():
        assert run.data.tags[f"check.standard.{code}"] == check["status"]
    suspect = sum(c["status"] == "SUSPECT" for c in entry["checks"].values())
    assert run.data.metrics["evaluate/standard/suspect_checks"] == suspect
    assert run.data.metrics["evaluate/standard/robust_accuracy/pgd-10/0.2"] == pytest.approx(
        entry["robust_accuracy"]["pgd-10"]["0.2"]
    )


def test_evaluate_logs_its_results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(Path(__file__).resolve().parents[2])  # the fixture factory is imported from the checkout
    result = runner.invoke(
        app,
        ["evaluate", "module:tests.fixtures.user_model:build", "--data", "digits", "--suite", "quick",
         "--eps", "0.1", "--n-examples", "30", "--out", str(tmp_path / "ev"), "--log-to", f"tensorboard:{tmp_path}"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    entry = json.loads((tmp_path / "ev" / "results.json").read_text())["models"]["build"]
    tb = scalars(tmp_path / "ev")
    assert tb["evaluate/build/headline/0.1"] == [(0, pytest.approx(entry["headline"]["robust_accuracy"]["0.1"]))]
    assert tb["evaluate/build/clean_accuracy"] == [(0, pytest.approx(entry["clean_accuracy"]))]


def test_a_failed_job_marks_its_run_failed(tmp_path: Path) -> None:
    uri = (tmp_path / "mlruns").as_uri()
    with pytest.raises(RuntimeError, match="boom"), tracking_run([f"mlflow:{uri}"], experiment="e", run_name="r"):
        raise RuntimeError("boom")
    _, run = only_run(uri, "e")
    assert run.info.status == "FAILED"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("wandb:x", "unknown scheme 'wandb'; use tensorboard:DIR or mlflow:URI"),
        ("tensorboard", "unknown scheme 'tensorboard'"),  # no colon: not a SCHEME:TARGET
        ("tensorboard:", "names no target: give a log folder (tensorboard:DIR)"),
        ("mlflow:", "names no target: give a tracking URI (mlflow:URI)"),
    ],
)
def test_bad_targets_are_clear_errors_before_any_work(spec: str, message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        LogTarget.parse(spec)
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", "--data", "digits", "--epochs", "1", "--out", str(out), "--log-to", spec])
    assert result.exit_code == 2 and message in " ".join(result.output.split())
    assert not out.exists()


def test_missing_extra_prints_the_install_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import sys

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.split(".")[0] == "mlflow":
            raise ImportError(f"No module named {name!r}", name="mlflow")
        return real_import(name, *args, **kwargs)

    for mod in [m for m in sys.modules if m.startswith("mlflow")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setattr(builtins, "__import__", fake_import)
    result = runner.invoke(app, ["train", "--epochs", "1", "--out", str(tmp_path / "r"), "--log-to", "mlflow:x"])
    assert result.exit_code == 2
    assert "--log-to mlflow needs the track extra (mlflow is missing): pip install 'bastion[track]'" in result.output
