"""The Defense pipeline: domain check, decision policy accept / flag / reject, composition."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from bastion.data import Dataset
from bastion.defenses import ACTIONS, AdaptiveEnsemble, BitDepth, Defense, MahalanobisDetector, SqueezeDetector
from bastion.defenses.config import DefenseConfig
from bastion.defenses.store import build_defense, save_defense
from bastion.errors import CheckpointError, ConfigError, InputValidationError, NotFittedError


@pytest.fixture(scope="module")
def defense(digits: Dataset, trades_model: nn.Module) -> Defense:
    d = Defense(
        trades_model,
        [BitDepth(3)],
        [MahalanobisDetector(trades_model), SqueezeDetector(trades_model)],
        domain=digits.spec.domain,
        target_fpr=0.1,
        reject_fpr=0.02,
    )
    return d.fit(digits.train.x, digits.train.y).calibrate(digits.val.x)


def test_inputs_outside_the_domain_are_rejected_with_a_clear_error(defense: Defense, digits: Dataset) -> None:
    x = digits.test.x[:4].clone()
    x[2, 0, 3, 3] = 1.5
    with pytest.raises(InputValidationError, match=r"x\[2\] lies outside the input domain"):
        defense.decide(x)
    x[2, 0, 3, 3] = float("nan")
    with pytest.raises(InputValidationError, match="NaN"):
        defense.decide(x)


def test_policy_matches_thresholds_and_clean_rates(defense: Defense, digits: Dataset) -> None:
    d = defense.decide(digits.test.x)
    assert d.actions is not None
    t_flag, t_reject = defense.detector.threshold_, defense.reject_threshold_  # type: ignore[union-attr]
    assert t_reject is not None and t_flag is not None and t_reject >= t_flag
    assert torch.equal(d.actions == 2, d.scores > t_reject)
    assert torch.equal(d.actions == 1, (d.scores > t_flag) & (d.scores <= t_reject))
    assert torch.equal(d.flagged, d.actions > 0)
    n = len(digits.test)
    for share, target in ((d.flagged.float().mean(), 0.1), ((d.actions == 2).float().mean(), 0.02)):
        assert abs(float(share) - target) <= 3 * math.sqrt(target * (1 - target) / n) + 1 / n
    assert set(d.action_names()) <= set(ACTIONS)
    assert ((d.confidence > 0) & (d.confidence <= 1)).all()


def test_forward_is_the_attack_surface(defense: Defense, digits: Dataset, trades_model: nn.Module) -> None:
    x = digits.test.x[:16].clone().requires_grad_(True)
    logits = defense(x)
    assert torch.equal(logits.detach(), trades_model(BitDepth(3)(x.detach())).detach())
    (grad,) = torch.autograd.grad(logits[:, 0].sum(), x)
    assert grad.abs().sum() > 0  # BPDA through the squeezer


def test_policy_and_composition_errors(trades_model: nn.Module, digits: Dataset, tmp_path) -> None:
    with pytest.raises(ConfigError, match="reject_fpr"):
        Defense(trades_model, [], [MahalanobisDetector(trades_model)], target_fpr=0.01, reject_fpr=0.05)
    uncal = Defense(trades_model, [], [MahalanobisDetector(trades_model)]).fit(digits.train.x, digits.train.y)
    with pytest.raises(NotFittedError):
        uncal.decide(digits.test.x[:2])
    ens = Defense(AdaptiveEnsemble([trades_model, trades_model]), [BitDepth(3)])
    assert ens.decide(digits.test.x[:3]).actions.tolist() == [0, 0, 0]  # type: ignore[union-attr]
    with pytest.raises(CheckpointError, match="AdaptiveEnsemble"):
        save_defense(ens, tmp_path)


def test_build_defense_from_config(trades_model: nn.Module, digits: Dataset) -> None:
    cfg = DefenseConfig(bit_depth=3, jpeg_quality=75, detectors=["mahalanobis", "squeeze"], target_fpr=0.1)
    d = build_defense(trades_model, cfg, digits.train, digits.val, domain=digits.spec.domain)
    desc = d.describe()
    assert [t["name"] for t in desc["transforms"]] == ["bit-depth", "jpeg"]
    assert desc["detector"]["members"] == ["MahalanobisDetector", "SqueezeDetector"]
    with pytest.raises(ConfigError):
        DefenseConfig.parse({"detectors": ["magic"]})
