"""The report's sections: one eps figure per dataset and threat model, per-class bars with counts and
intervals, and adversarial examples of an image run (crafted on a tiny digits run in tmp_path)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from bastion.app.config import EvalConfig, TrainConfig
from bastion.app.evaluate import run_evaluate
from bastion.app.train import run_train
from bastion.data import load_dataset
from bastion.evaluation.stats import wilson
from bastion.models import checkpoint
from bastion.render import examples, plots, report
from bastion.render.report import Run, Source, build_sections, write_report


def _model(clean: float, robust: dict[str, float], *, tabular: bool = False, cost: int = 100) -> dict[str, Any]:
    m: dict[str, Any] = {
        "clean_accuracy": clean,
        "n_examples": 10,
        "robust_accuracy": {"ensemble": robust},
        "robust_accuracy_ci": {"ensemble": {e: [max(0, a - 0.1), min(1, a + 0.1)] for e, a in robust.items()}},
        "training": {"gradient_evaluations": cost, "wall_time_s": cost / 10},
    }
    if tabular:
        m["tabular"] = {"n_malicious": 10}
        m["denominator"] = "detection rate on malicious rows"
    return m


def _results(data: str, norm: str, models: dict[str, Any]) -> dict[str, Any]:
    eps = sorted({e for m in models.values() for e in m["robust_accuracy"]["ensemble"]}, key=float)
    return {"data": data, "seed": 0, "threat": {"norm": norm, "eps": eps}, "models": models}


MIXED = [
    _results("digits", "linf", {"std": _model(0.9, {"0.1": 0.5}), "trades": _model(0.8, {"0.1": 0.7}, cost=300)}),
    _results("nsl-kdd:DATA/kdd/KDDTest+.txt", "linf", {"mlp": _model(0.95, {"0.1": 0.4, "0.3": 0.2}, tabular=True)}),
    _results("digits", "l2", {"std": _model(0.9, {"0.5": 0.3})}),
    _results("nsl-kdd:DATA/kdd", "linf", {"mlp-at": _model(0.9, {"0.1": 0.8, "0.3": 0.6}, tabular=True, cost=50)}),
]


def test_eps_figures_never_mix_datasets_or_threat_models(monkeypatch: pytest.MonkeyPatch) -> None:
    drawn: list[dict[str, Any]] = []
    original_curves, original_cost = plots.robust_vs_eps, plots.cost_pareto

    def robust_vs_eps(curves: Any, title: str, interval: str, **kw: Any) -> bytes | None:
        drawn.append({"kind": "eps", "labels": set(curves), "title": title, **kw})
        return original_curves(curves, title, interval, **kw)

    def cost_pareto(rows: Any) -> bytes | None:
        drawn.append({"kind": "cost", "labels": {r["label"] for r in rows}, "eps": {r["eps"] for r in rows}})
        return original_cost(rows)

    monkeypatch.setattr(plots, "robust_vs_eps", robust_vs_eps)
    monkeypatch.setattr(plots, "cost_pareto", cost_pareto)
    sources = [Source(Path(f"r{i}"), f"r{i}", [Run("", r)]) for i, r in enumerate(MIXED)]
    sections = {s.id: s for s in build_sections(sources)}
    ids = [f.id for f in sections["robust-vs-eps"].figures]
    assert ids == ["robust-vs-eps-digits-linf", "robust-vs-eps-nsl-kdd-linf", "robust-vs-eps-digits-l2"]
    eps_calls = [d for d in drawn if d["kind"] == "eps"]
    assert [d["labels"] for d in eps_calls] == [
        {"r0: std", "r0: trades"},
        {"r1: mlp", "r3: mlp-at"},  # two files of one dataset: one model space, one axis
        {"r2: std"},
    ]
    assert "pixels in [0, 1]" in eps_calls[0]["xlabel"] and "model space" in eps_calls[1]["xlabel"]
    assert eps_calls[1]["ylabel"] == "detection rate on malicious rows (%)"
    cost_calls = [d for d in drawn if d["kind"] == "cost"]
    assert [(d["labels"], d["eps"]) for d in cost_calls] == [
        ({"r0: std", "r0: trades"}, {"0.1"}),
        ({"r1: mlp", "r3: mlp-at"}, {"0.3"}),
        ({"r2: std"}, {"0.5"}),
    ]
    header, rows = sections["cost"].tables[0][1]
    assert header[0] == "dataset" and {r[0] for r in rows} == {"digits", "nsl-kdd"}


def test_per_class_bars_carry_counts_and_wilson_intervals() -> None:
    fig, ax = plt.subplots()
    rates, counts = [1.0, 0.5, None, 0.25], [3, 6, 0, 4]
    plots._rate_bars(ax, np.arange(4), rates, counts, width=0.4)
    assert [t.get_text() for t in ax.texts] == ["3/3", "3/6", "1/4"]
    (bars,) = [c for c in ax.containers if type(c).__name__ == "ErrorbarContainer"]
    segments = [s for s in bars.lines[2][0].get_segments() if len(s)]  # none for the class without examples
    ends = {round(float(s[0][0])): (float(s[0][1]), float(s[1][1])) for s in segments}
    assert sorted(ends) == [0, 1, 3]
    for x, (k, n) in enumerate([(3, 3), (3, 6), (0, 0), (1, 4)]):
        if n:
            assert ends[x] == pytest.approx(tuple(100 * v for v in wilson(k, n))), x
    plt.close(fig)


def _per_class_results(labels: list[int], correct: list[bool], robust: list[bool]) -> dict[str, Any]:
    y, c, r = np.array(labels), np.array(correct), np.array(robust)

    def rate(mask: np.ndarray) -> list[float | None]:
        return [float(mask[y == k].mean()) if (y == k).any() else None for k in range(y.max() + 1)]

    m = _model(float(c.mean()), {"0.1": float(r.mean())})
    m["n_examples"] = len(labels)
    m["clean_accuracy_per_class"] = rate(c)
    m["robust_accuracy_per_class"] = {"attack": "ensemble", "by_eps": {"0.1": rate(r)}}
    return _results("digits", "linf", {"m": m})


def test_per_class_counts_come_from_records_and_must_fit_the_rates(tmp_path: Path) -> None:
    labels = [0, 0, 0, 1, 1, 2]
    results = _per_class_results(
        labels, [True, True, False, True, True, True], [True, False, False, True, False, False]
    )
    (tmp_path / "records.json").write_text(json.dumps({"index": list(range(6)), "label": labels, "eps": {}}))
    assert examples.class_counts(tmp_path, results, 6) == [3, 2, 1]
    section = report._per_class([Run("", results, None, tmp_path)])
    (figure,) = section.figures
    assert figure.id == "per-class-digits" and "correct/n and its 95% Wilson interval" in figure.caption
    assert report._counts_fit([3, 2, 1], results["models"]["m"])
    assert not report._counts_fit([2, 3, 1], results["models"]["m"])  # 2/3 of 2 examples is no count
    # Records of other examples: the recount does not reproduce the rates, so no intervals are drawn.
    (tmp_path / "records.json").write_text(json.dumps({"label": [0, 1, 1, 1, 2, 2]}))
    (figure,) = report._per_class([Run("", results, None, tmp_path)]).figures
    assert "not known here" in figure.caption


def test_per_class_counts_fall_back_to_the_seeded_test_split() -> None:
    y = load_dataset("digits", seed=0).test.y[:40].numpy()
    assert examples.class_counts(None, {"data": "digits", "seed": 0}, 40) == np.bincount(y).tolist()
    assert examples.class_counts(None, {"data": "mnist:/no/such/folder", "seed": 0}, 40) is None


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    run = tmp_path_factory.mktemp("digits-run")
    cfg = TrainConfig.parse({"method": "standard", "epochs": 2, "val_examples": 0, "device": "cpu", "batch_size": 64})
    run_train(cfg, run)
    ecfg = EvalConfig.parse({"suite": "quick", "eps": [0.05, 0.2], "n_examples": 40, "checks_examples": 20})
    return run, run_evaluate(run, ecfg, run)


def test_image_examples_are_real_adversarial_triplets_inside_the_budget(digits_run) -> None:
    run, results = digits_run
    (shown,) = examples.image_examples(run, results)
    assert shown.model == "standard" and shown.eps == 0.2 and shown.attack == "PGD-10"
    assert shown.x.shape == shown.x_adv.shape == (examples.EXAMPLES_SHOWN, 1, 8, 8)
    assert np.abs(shown.x_adv - shown.x).max() <= 0.2 + 1e-6 and shown.x_adv.min() >= 0 and shown.x_adv.max() <= 1
    model = checkpoint.load_model(run / "models" / "standard")
    with torch.no_grad():
        assert (model(torch.from_numpy(shown.x_adv)).argmax(1).numpy() == shown.pred_adv).all()
    broken = (shown.pred_clean == shown.y) & (shown.pred_adv != shown.y)
    assert broken.any() and not (~broken[:-1] & broken[1:]).any()  # broken examples come first
    assert plots.adversarial_images([shown]) is not None


def test_report_shows_examples_and_per_class_counts_of_a_run(digits_run, tmp_path: Path) -> None:
    run, _ = digits_run
    html_path, md_path = write_report([run], tmp_path / "out")
    text = html_path.read_text()
    assert '<section id="examples"' in text and 'id="fig-examples-digits"' in text
    assert "crafted for this report with PGD-10 at linf eps 0.2" in text
    assert "correct/n and its 95% Wilson interval" in text
    assert re.findall(r'id="fig-(robust-vs-eps[^"]*)"', text) == ["robust-vs-eps-digits-linf"]
    assert "![Adversarial examples](report_files/examples-digits.png)" in md_path.read_text()
    assert (md_path.parent / "report_files" / "examples-digits.png").is_file()


def test_runs_without_examples_say_why(tmp_path: Path) -> None:
    section = report._examples([Run("", MIXED[0], None, tmp_path), Run("", MIXED[1], None, tmp_path)])
    assert not section.figures and not section.tables
    assert section.paragraphs == [
        "digits: no adversarial examples shown (the run's saved models or its data are not available where "
        "the report runs).",
        "nsl-kdd:DATA/kdd/KDDTest+.txt: no evasion records (evaluate with --save-adversarial FILE to show some).",
    ]
    gone = {**MIXED[1], "adversarial_file": str(tmp_path / "adv.txt")}
    (paragraph,) = report._examples([Run("", gone, None, tmp_path)]).paragraphs
    assert "adv.txt or their .lines.csv sidecar are not found here" in paragraph
