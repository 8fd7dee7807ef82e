"""Detectors: calibrated false-positive rate holds on fresh clean data; state survives a save/load."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from bastion.attacks import PGD
from bastion.data import Dataset
from bastion.defenses import BitDepth, DefendedClassifier, MahalanobisDetector, MedianFilter
from bastion.defenses.config import DefenseConfig
from bastion.defenses.detectors.base import threshold_for_fpr
from bastion.defenses.store import build_defense, load_defense, save_defense
from bastion.errors import ConfigError, InputValidationError, NotFittedError
from bastion.goals import Misclassify
from bastion.threat import ThreatModel


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=300), st.floats(0.001, 0.5))
def test_threshold_flags_at_most_the_target_share(scores: list[float], fpr: float) -> None:
    s = torch.tensor(scores, dtype=torch.float64)
    t = threshold_for_fpr(s, fpr)
    flagged = int((s > t).sum())
    assert flagged <= math.floor(len(scores) * fpr)


@pytest.mark.parametrize("target", [0.01, 0.05, 0.1])
def test_mahalanobis_fpr_matches_target_on_fresh_clean_data(
    digits: Dataset, trades_model: nn.Module, target: float
) -> None:
    det = MahalanobisDetector(trades_model, target_fpr=target).fit(digits.train.x, digits.train.y)
    det.calibrate(digits.val.x)
    fpr = float(det.predict(digits.test.x).float().mean())
    n = len(digits.test)
    tolerance = 3 * math.sqrt(target * (1 - target) / n) + 1 / n  # three binomial standard errors
    assert abs(fpr - target) <= tolerance, f"measured FPR {fpr:.3f} vs target {target} (n={n})"


def test_detector_flags_adversarial_inputs_more_than_clean(digits: Dataset, standard_model: nn.Module) -> None:
    det = MahalanobisDetector(standard_model, target_fpr=0.05).fit(digits.train.x, digits.train.y)
    det.calibrate(digits.val.x)
    threat = ThreatModel(norm="linf", eps=0.2, domain=digits.spec.domain)
    x, y = digits.test.x, digits.test.y
    result = PGD(n_steps=20)(standard_model, x, Misclassify(y), threat, rng=torch.Generator().manual_seed(0))
    assert det.predict(result.x_adv[result.success]).float().mean() > det.predict(x).float().mean() + 0.1


def test_unfitted_detector_refuses(standard_model: nn.Module) -> None:
    det = MahalanobisDetector(standard_model)
    with pytest.raises(NotFittedError):
        det.score(torch.rand(2, 1, 8, 8))
    with pytest.raises(ConfigError, match="target_fpr"):
        MahalanobisDetector(standard_model, target_fpr=1.5)
    with pytest.raises(InputValidationError, match="zero clean"):
        threshold_for_fpr(torch.tensor([]), 0.05)


def test_defense_saves_and_loads(tmp_path, digits: Dataset, trades_model: nn.Module) -> None:
    defended = build_defense(trades_model, DefenseConfig(bit_depth=3, median=2), digits.train, digits.val)
    save_defense(defended, tmp_path / "d")
    loaded = load_defense(tmp_path / "d", trades_model)
    a, b = defended.decide(digits.test.x), loaded.decide(digits.test.x)
    assert torch.equal(a.labels, b.labels)
    assert torch.allclose(a.scores, b.scores)
    assert torch.equal(a.flagged, b.flagged)


def test_squeezers_stay_in_domain_and_pass_gradients() -> None:
    x = torch.rand(3, 1, 8, 8, requires_grad=True)
    for t in (BitDepth(3), MedianFilter(2), MedianFilter(3)):
        out = t(x)
        assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
        (grad,) = torch.autograd.grad(out.sum(), x)
        assert grad.abs().sum() > 0
    assert torch.allclose(BitDepth(1)(torch.tensor([0.2, 0.7])), torch.tensor([0.0, 1.0]))


def test_defended_classifier_decides(digits: Dataset, trades_model: nn.Module) -> None:
    defended = DefendedClassifier(trades_model, [BitDepth(4)])
    d = defended.decide(digits.test.x[:10])
    assert d.labels.shape == (10,) and not d.flagged.any() and torch.isnan(d.scores).all()
    assert ((d.confidence > 0) & (d.confidence <= 1)).all()
