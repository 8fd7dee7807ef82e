"""The CLI end to end: demo, train -> evaluate, and clear failures that leave no half-written results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bastion.artifacts.results import read_results
from bastion.cli import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    result = invoke("demo", "--quick", "--out", str(out), "--seed", "0", "--device", "cpu")
    assert result.exit_code == 0, result.output
    return out


def test_demo_writes_valid_results(demo_run: Path) -> None:
    results = read_results(demo_run / "results.json")
    assert results["schema"] == 1 and results["data"] == "digits" and results["seed"] == 0
    models = results["models"]
    assert set(models) == {"standard", "progressive-trades", "progressive-trades+defense"}
    adaptive = {"bpda-pgd", "detector-aware-pgd", "transfer-pgd"}
    for name, m in models.items():
        extra = adaptive if name.endswith("+defense") else set()
        assert set(m["robust_accuracy"]) == {"fgsm", "pgd-10", "ensemble"} | extra
        assert set(m["robust_accuracy"]["pgd-10"]) == {"0.05", "0.1", "0.2"}
    std, rob = models["standard"], models["progressive-trades"]
    assert rob["robust_accuracy"]["ensemble"]["0.1"] > std["robust_accuracy"]["ensemble"]["0.1"]
    assert rob["training"]["gradient_evaluations"] > std["training"]["gradient_evaluations"]
    assert len(rob["training"]["stages"]) == 3
    eps = [s["eps"] for s in rob["training"]["stages"]]
    assert eps == sorted(eps) and eps[0] < eps[-1]
    defense = models["progressive-trades+defense"]["defense"]
    assert 0 <= defense["false_positive_rate"] <= 0.15
    assert defense["latency_ratio"] > 0
    assert defense["adaptive"] is True and set(defense["adaptive_attacks"]) == adaptive
    assert set(defense["failure_rate"]) == {"fgsm", "pgd-10", "ensemble"} | adaptive
    summary = (demo_run / "summary.md").read_text()
    assert "Training cost" in summary and "Runtime defense" in summary
    # The quick suite is FGSM + PGD-10: the headline is the worst case, labelled an upper bound everywhere.
    assert results["threat"]["aa_grade"] is False
    for m in models.values():
        h = m["headline"]
        assert h["aa_grade"] is False and h["label"].startswith("upper bound")
        assert h["robust_accuracy"] == m["robust_accuracy"]["ensemble"]
    assert "| upper bound |" in summary and "not a robustness claim" in summary
    run = json.loads((demo_run / "run.json").read_text())
    assert run["split"]["index_digest"] and run["config"]["seed"] == 0


def test_evaluate_a_demo_run_reuses_its_data_and_defense(demo_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "ev"
    result = invoke(
        "evaluate", str(demo_run), "--suite", "quick", "--eps", "0.1", "--n-examples", "60", "--out", str(out)
    )
    assert result.exit_code == 0, result.output
    results = read_results(out / "results.json")
    assert set(results["models"]) == {"standard", "progressive-trades", "progressive-trades+defense"}
    assert results["models"]["standard"]["n_examples"] == 60


def test_train_then_evaluate(tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = invoke(
        "train",
        "--data",
        "digits",
        "--model",
        "mlp",
        "--method",
        "trades",
        "--epochs",
        "2",
        "--eps",
        "0.1",
        "--out",
        str(run),
    )
    assert result.exit_code == 0, result.output
    results = read_results(run / "results.json")
    training = results["models"]["trades"]["training"]
    assert training["gradient_evaluations"] > 0 and training["method"] == "trades"
    assert (run / "models" / "trades" / "weights.safetensors").is_file()
    import bastion

    model = bastion.load_model(run)
    assert not model.training
    result = invoke(
        "evaluate",
        str(run / "models" / "trades"),
        "--suite",
        "quick",
        "--eps",
        "0.05",
        "--eps",
        "0.1",
        "--n-examples",
        "50",
        "--out",
        str(tmp_path / "ev"),
    )
    assert result.exit_code == 0, result.output
    ev = read_results(tmp_path / "ev" / "results.json")
    assert set(ev["models"]["trades"]["robust_accuracy"]["pgd-10"]) == {"0.05", "0.1"}


def test_unknown_config_key_is_named(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("epochs: 1\nepsilon: 0.1\n")
    result = invoke("train", "--config", str(cfg), "--out", str(tmp_path / "r"))
    assert result.exit_code == 2
    assert "unknown config key 'epsilon'" in result.output
    assert not (tmp_path / "r" / "results.json").exists()


def test_missing_data_path_is_clear(tmp_path: Path) -> None:
    result = invoke("train", "--data", f"mnist:{tmp_path / 'missing'}", "--out", str(tmp_path / "r"))
    assert result.exit_code == 2
    assert "does not exist" in result.output


def test_negative_eps_is_clear(tmp_path: Path) -> None:
    result = invoke("train", "--eps", "-0.1", "--epochs", "1", "--out", str(tmp_path / "r"))
    assert result.exit_code == 2 and "'eps'" in result.output


def test_crashed_run_leaves_no_results_file(tmp_path: Path, monkeypatch) -> None:
    import bastion.app.runtime

    def crash(*args, **kwargs):
        raise RuntimeError("simulated crash during evaluation")

    monkeypatch.setattr(bastion.app.runtime, "evaluate", crash)
    out = tmp_path / "r"
    config = tmp_path / "one-process.yaml"
    config.write_text("workers: 1\n")  # the patch reaches this process only (a worker's crash: test_parallel)
    with pytest.raises(RuntimeError, match="simulated crash"):
        invoke("demo", "--quick", "--out", str(out), "--config", str(config))
    assert not (out / "results.json").exists()
    assert not list(out.rglob("*.tmp"))


def test_every_command_has_help() -> None:
    for cmd in ("train", "evaluate", "demo"):
        result = invoke(cmd, "--help")
        assert result.exit_code == 0
        for flag in ("--seed", "--device", "--out", "--config"):
            assert flag in result.output, (cmd, flag)
