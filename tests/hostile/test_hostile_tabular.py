"""Hostile tabular files: ClaMP with one malware row, NSL-KDD with one class, an evaluation file without
malicious rows: each a DataFormatError naming the file, never a traceback or an empty report."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit" / "tabular"))
from tabular_fixtures import CLAMP_HEADER, clamp_line, kdd_line, train_mlp

from bastion.app.config import EvalConfig
from bastion.app.evaluate import run_evaluate
from bastion.data import load_dataset
from bastion.errors import DataFormatError


def _kdd(n: int, attack_every: int | None) -> str:
    rows = [
        kdd_line(attack="neptune" if attack_every and i % attack_every == 1 else "normal", src_bytes=str(10 * i))
        for i in range(n)
    ]
    return "\n".join(rows) + "\n"


def test_clamp_with_one_malware_row(tmp_path: Path) -> None:
    path = tmp_path / "clamp.csv"
    path.write_text("\n".join([CLAMP_HEADER, *[clamp_line() for _ in range(40)], clamp_line(label="1")]) + "\n")
    with pytest.raises(DataFormatError, match=r"clamp.csv: classes \[1\] have fewer than 3 examples"):
        load_dataset(f"malware:{path}")


def test_nsl_kdd_with_one_class_or_no_rows(tmp_path: Path) -> None:
    benign = tmp_path / "benign.txt"
    benign.write_text(_kdd(40, None))
    with pytest.raises(DataFormatError, match="benign.txt: all 40 examples are of label 0"):
        load_dataset(f"nsl-kdd:{benign}")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(DataFormatError, match="empty.txt: no examples"):
        load_dataset(f"nsl-kdd:{empty}")


def test_evaluation_without_malicious_rows_is_refused(tmp_path: Path) -> None:
    train = tmp_path / "KDDTrain+.txt"
    train.write_text(_kdd(60, 2))
    train_mlp(f"nsl-kdd:{train}", tmp_path / "run")
    benign = tmp_path / "benign.txt"
    benign.write_text(_kdd(30, None))
    ecfg = EvalConfig.parse({"data": f"nsl-kdd:{benign}", "suite": "quick", "eps": [0.1], "device": "cpu"})
    with pytest.raises(DataFormatError, match="none of the 30 test rows is malicious"):
        run_evaluate(tmp_path / "run", ecfg, tmp_path / "ev")
    assert not (tmp_path / "ev" / "results.json").exists()


def test_bench_tabular_saves_every_model_its_results_name(tmp_path: Path) -> None:
    """results.json's `path` promises `bastion evaluate DIR/PATH --data OTHER_FILE` works (issue 17)."""
    import importlib

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    bench = importlib.import_module("bench.tabular")
    from bastion.data import load_tabular
    from bastion.models.registry import build_model

    train = tmp_path / "KDDTrain+.txt"
    train.write_text(_kdd(60, 2))
    data = load_tabular(f"nsl-kdd:{train}", seed=0)
    model = build_model(bench.mlp_arch(data), seed=0).eval()
    record = {"method": "standard", "gradient_evaluations": 0, "wall_time_s": 0.0}
    bench.save_bench_model(tmp_path / "out" / "nsl-kdd" / "standard", model, data, record, 0)
    other = tmp_path / "other.txt"
    other.write_text(_kdd(30, 2))
    ecfg = EvalConfig.parse({"data": f"nsl-kdd:{other}", "suite": "quick", "eps": [0.1], "checks_examples": 0})
    results = run_evaluate(tmp_path / "out" / "nsl-kdd" / "standard", ecfg, tmp_path / "ev")
    assert results["models"]["standard"]["tabular"]["n_rows"] == 30
