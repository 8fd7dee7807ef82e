"""AdaptiveEnsemble: the stated per-input weighting rule, zero-weight members, detector penalty, disagreement."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from bastion.defenses import AdaptiveEnsemble, DisagreementDetector
from bastion.errors import ConfigError


class Table(nn.Module):
    """Input i (one-hot of length N) -> fixed probabilities probs[i]: an exactly known member."""

    def __init__(self, probs: list[list[float]]) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.tensor(probs).log(), requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        return x @ self.logits


class FakeDetector:
    """Scores per input from a table; threshold 1."""

    def __init__(self, scores: list[float]) -> None:
        self.scores = torch.tensor(scores)
        self.threshold_ = 1.0
        self.target_fpr = 0.05

    def score(self, x: Tensor) -> Tensor:
        return x @ self.scores


# Input 0: member A is confidently wrong (true class 0); input 1: A is uncertain. B is right on both.
A = Table([[0.05, 0.95], [0.5, 0.5]])
B = Table([[0.8, 0.2], [0.8, 0.2]])
X = torch.eye(2)


def test_weights_follow_member_confidence_per_input() -> None:
    out = AdaptiveEnsemble([A, B]).explain(X)
    # w_m = a_m * c_m: input 0 -> (0.95, 0.8); input 1 -> (0.5, 0.8).
    expected = torch.tensor([[0.95 / 1.75, 0.5 / 1.3], [0.8 / 1.75, 0.8 / 1.3]])
    assert torch.allclose(out.weights, expected, atol=1e-6)
    p = out.log_probs.exp()
    assert torch.allclose(p.sum(1), torch.ones(2), atol=1e-6)  # forward returns log-probabilities
    assert torch.allclose(p[0], (0.95 * torch.tensor([0.05, 0.95]) + 0.8 * torch.tensor([0.8, 0.2])) / 1.75)
    # The confidently wrong member wins input 0 and yields on input 1, where it is uncertain.
    assert p.argmax(1).tolist() == [1, 0]


def test_gamma_zero_is_a_plain_average_and_gamma_sharpens() -> None:
    flat = AdaptiveEnsemble([A, B], gamma=0.0).explain(X).weights
    assert torch.allclose(flat, torch.full((2, 2), 0.5))
    sharp = AdaptiveEnsemble([A, B], gamma=4.0).explain(X).weights
    assert sharp[0, 0] > AdaptiveEnsemble([A, B]).explain(X).weights[0, 0]


def test_zero_weight_member_has_no_influence() -> None:
    wild = Table([[0.999, 0.001], [0.001, 0.999]])
    with_zero = AdaptiveEnsemble([A, B, wild], prior_weights=[1.0, 1.0, 0.0])(X)
    without = AdaptiveEnsemble([A, B])(X)
    assert torch.allclose(with_zero, without, atol=1e-6)
    alone = AdaptiveEnsemble([A, B], prior_weights=[0.0, 2.0])(X)
    assert torch.allclose(alone.exp(), torch.tensor([[0.8, 0.2], [0.8, 0.2]]), atol=1e-6)
    with pytest.raises(ConfigError, match="at least one > 0"):
        AdaptiveEnsemble([A, B], prior_weights=[0.0, 0.0])


def test_detector_penalty_discounts_a_flagged_member() -> None:
    # A's detector fires on input 0 (score 3 = excess 2 over threshold 1), quiet on input 1.
    ens = AdaptiveEnsemble([A, B], detectors=[FakeDetector([3.0, 0.0]), None], beta=1.0)
    w = ens.explain(X).weights
    raw_a = 0.95 * math.exp(-2.0)
    assert torch.allclose(w[0, 0], torch.tensor(raw_a / (raw_a + 0.8)), atol=1e-6)
    assert torch.allclose(w[:, 1], AdaptiveEnsemble([A, B]).explain(X).weights[:, 1], atol=1e-6)
    assert ens(X).argmax(1).tolist() == [0, 0]  # the flagged, confidently wrong member lost input 0


def test_disagreement_is_zero_when_members_agree_and_feeds_a_detector() -> None:
    same = AdaptiveEnsemble([B, B]).disagreement(X)
    assert torch.allclose(same, torch.zeros(2), atol=1e-7)
    d = AdaptiveEnsemble([A, B]).disagreement(X)
    assert ((d > 0.05) & (d <= 1)).all() and d[0] > d[1]  # they disagree most where A is confidently wrong
    det = DisagreementDetector(AdaptiveEnsemble([A, B])).fit(X)
    det.calibrate(torch.cat([X[1:]] * 20))
    assert det.predict(X).tolist() == [True, False]


def test_ensemble_is_differentiable() -> None:
    x = X.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(AdaptiveEnsemble([A, B])(x)[:, 0].sum(), x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
