"""Every detector: calibrated FPR holds on fresh clean data, scores are differentiable, state survives save/load."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from bastion.data import Dataset
from bastion.defenses import (
    CombinedDetector,
    Defense,
    KDEDetector,
    LIDDetector,
    MahalanobisDetector,
    SqueezeDetector,
)
from bastion.defenses.store import load_defense, save_defense
from bastion.errors import ConfigError, NotFittedError
from bastion.models.registry import Architecture, build_model

FACTORIES: dict[str, Callable[[nn.Module], object]] = {
    "mahalanobis": lambda m: MahalanobisDetector(m),
    "lid": lambda m: LIDDetector(m, n_reference=300, k=20),
    "kde": lambda m: KDEDetector(m, n_per_class=60),
    "squeeze": lambda m: SqueezeDetector(m),
    "combined": lambda m: CombinedDetector([MahalanobisDetector(m), SqueezeDetector(m)]),
}


@pytest.fixture(scope="module")
def fitted(digits: Dataset, trades_model: nn.Module) -> dict[str, object]:
    """Each detector fitted on clean train data and calibrated on clean validation data, once."""
    out = {}
    for name, make in FACTORIES.items():
        det = make(trades_model)
        det.fit(digits.train.x, digits.train.y)  # type: ignore[attr-defined]
        torch.manual_seed(0)
        det.calibrate(digits.val.x)  # type: ignore[attr-defined]
        out[name] = det
    return out


@pytest.mark.parametrize("name", FACTORIES)
def test_calibrated_fpr_holds_on_fresh_clean_data(name: str, fitted: dict[str, object], digits: Dataset) -> None:
    det = fitted[name]
    torch.manual_seed(1)
    fpr = float(det.predict(digits.test.x).float().mean())  # type: ignore[attr-defined]
    n, target = len(digits.test), det.target_fpr  # type: ignore[attr-defined]
    tolerance = 3 * math.sqrt(target * (1 - target) / n) + 1 / n  # three binomial standard errors
    assert abs(fpr - target) <= tolerance, f"{name}: measured FPR {fpr:.3f} vs target {target} (n={n})"


@pytest.mark.parametrize("name", FACTORIES)
def test_scores_are_differentiable_wrt_the_input(name: str, fitted: dict[str, object], digits: Dataset) -> None:
    x = digits.test.x[:8].clone().requires_grad_(True)
    score = fitted[name].soft_score(x)  # type: ignore[attr-defined]
    assert score.shape == (8,) and torch.isfinite(score).all()
    (grad,) = torch.autograd.grad(score.sum(), x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize("name", FACTORIES)
def test_fitted_detector_saves_and_loads_with_identical_scores(
    name: str, fitted: dict[str, object], digits: Dataset, trades_model: nn.Module, tmp_path: Path
) -> None:
    det = fitted[name]
    defense = Defense(trades_model, [], [det], target_fpr=det.target_fpr)  # type: ignore[attr-defined, list-item]
    defense.calibrate(digits.val.x)
    save_defense(defense, tmp_path / name)
    loaded = load_defense(tmp_path / name, trades_model)
    assert type(loaded.detector) is type(det)
    x = digits.test.x[:64]
    torch.manual_seed(3)
    a = defense.decide(x)
    torch.manual_seed(3)
    b = loaded.decide(x)
    assert torch.allclose(a.scores, b.scores, atol=1e-5)
    assert torch.equal(a.flagged, b.flagged) and torch.equal(a.actions, b.actions)  # type: ignore[arg-type]
    assert loaded.detector.threshold_ == det.threshold_  # type: ignore[union-attr, attr-defined]


def test_kde_says_which_uncertainty_it_uses(digits: Dataset, trades_model: nn.Module) -> None:
    x, y = digits.train.x[:400], digits.train.y[:400]
    assert KDEDetector(trades_model, n_per_class=20).fit(x, y).uncertainty_source_ == "noise"  # no dropout
    with pytest.raises(ConfigError, match="dropout"):
        KDEDetector(trades_model, uncertainty="dropout").fit(x, y)
    arch = Architecture(
        name="mlp",
        input_shape=(1, 8, 8),
        num_classes=10,
        mean=(0.3,),
        std=(0.4,),
        options={"hidden": [32], "dropout": 0.5},
    )
    mlp = build_model(arch, seed=0).eval()
    det = KDEDetector(mlp, n_per_class=20).fit(x, y)
    assert det.uncertainty_source_ == "dropout" and det.randomized
    assert not mlp.training  # dropout switched on only inside the uncertainty passes


def test_unfitted_detectors_refuse(trades_model: nn.Module) -> None:
    x = torch.rand(2, 1, 8, 8)
    for make in (FACTORIES["lid"], FACTORIES["kde"], FACTORIES["squeeze"]):
        with pytest.raises(NotFittedError):
            make(trades_model).predict(x)  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="at least one"):
        CombinedDetector([])
