"""`bastion evaluate --suite standard`: the worst-case sequence end to end, with per-example records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bastion.artifacts.results import read_results
from bastion.attacks import APGD, APGDT, DeepFool, Square, cross_entropy
from bastion.attacks.worst_case import AttackSequence
from bastion.cli import app
from bastion.evaluation.suites import SUITES

runner = CliRunner()


def cheap_standard() -> AttackSequence:
    """The standard suite's members with CI-sized budgets (the full budgets take minutes on a busy CPU)."""
    return AttackSequence(
        {
            "apgd-ce": APGD(loss=cross_entropy, n_steps=10),
            "apgd-t": APGDT(n_targets=3, n_steps=10),
            "deepfool": DeepFool(n_steps=10),
            "square": Square(n_queries=50),
        }
    )


def test_evaluate_with_the_standard_suite_writes_records(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(SUITES._factories, "standard", cheap_standard)
    run = tmp_path / "run"
    args = ["train", "--data", "digits", "--model", "mlp", "--method", "standard", "--epochs", "1", "--out", str(run)]
    result = runner.invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    out = tmp_path / "ev"
    args = ["evaluate", str(run), "--suite", "standard", "--eps", "0.1", "--n-examples", "12", "--out", str(out)]
    result = runner.invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    entry = read_results(out / "results.json")["models"]["standard"]
    robust = entry["robust_accuracy"]
    assert set(robust) == {"apgd-ce", "apgd-t", "deepfool", "square", "ensemble"}
    seq = [robust[k]["0.1"] for k in ("apgd-ce", "apgd-t", "deepfool", "square")]
    assert seq == sorted(seq, reverse=True) and robust["ensemble"]["0.1"] == seq[-1]
    records = json.loads((out / "records.json").read_text())["standard"]
    broken = records["eps"]["0.1"]["broken_by"]
    assert len(broken) == len(records["label"]) == 12
    assert sum(b is None for b in broken) / 12 == pytest.approx(robust["ensemble"]["0.1"], abs=1e-6)
    assert set(broken) <= {None, "clean", "apgd-ce", "apgd-t", "deepfool", "square"}
    assert "records" not in entry
    assert "records.json" in (out / "summary.md").read_text()
    assert entry["headline"]["aa_grade"] is True and entry["headline"]["robust_accuracy"] == robust["ensemble"]
    printed = " ".join(result.output.split())
    assert "AA-grade" in printed and "Robust accuracy is the AA-grade worst case" in printed
