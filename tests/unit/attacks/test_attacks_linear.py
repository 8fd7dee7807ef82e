"""On a linear model the optimal perturbations are known in closed form; the attacks must find them."""

from __future__ import annotations

import pytest
import torch
from attack_fixtures import Linear

from bastion.attacks import APGD, CW, PGD, DeepFool, cross_entropy
from bastion.domain import BoxDomain
from bastion.goals import Misclassify
from bastion.threat import ThreatModel

D = 12


def linear_two_class(bias: float, seed: int = 0) -> tuple[Linear, torch.Tensor]:
    """logits = [-w.x / 2, w.x / 2 + bias]: with label 1 the loss rises as w.x falls (optimum along -w).

    Both rows carry w so the gradient survives float32 even when the true-class probability rounds to 1.
    """
    w = torch.randn(D, generator=torch.Generator().manual_seed(seed))
    return Linear(torch.stack([-w / 2, w / 2]), torch.tensor([0.0, bias])).eval(), w


@pytest.mark.parametrize(
    "attack",
    [
        PGD(n_steps=10),
        PGD(n_steps=10, random_start=False),
        APGD(loss=cross_entropy, n_steps=10),
    ],
    ids=["pgd", "pgd-no-start", "apgd"],
)
def test_linf_optimum_is_minus_eps_sign_w_clipped_by_the_box(attack) -> None:
    model, w = linear_two_class(bias=6.0)
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(64, D, generator=gen) * 2 - 1
    x = x[x @ w > 0][:5]  # margin stays > 6 - 0.3 ||w||_1 > 0: never misclassified, so no early stop
    assert 6 - 0.3 * w.abs().sum() > 0
    box = BoxDomain(torch.tensor(-1.0), torch.tensor(1.0))
    threat = ThreatModel(norm="linf", eps=0.3, domain=box)
    result = attack(model, x, Misclassify(torch.ones(5, dtype=torch.long)), threat, rng=gen)
    expected = (x - 0.3 * w.sign()).clamp(-1, 1)
    assert (expected != x - 0.3 * w.sign()).any(), "the box must bind somewhere for this test to mean anything"
    torch.testing.assert_close(result.x_adv, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "attack", [PGD(n_steps=10, random_start=False), APGD(loss=cross_entropy, n_steps=10, random_start=False)]
)
def test_l2_optimum_is_minus_eps_w_over_norm(attack) -> None:
    model, w = linear_two_class(bias=6.0)
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(64, D, generator=gen)
    x = x[x @ w > 0][:4]
    threat = ThreatModel(norm="l2", eps=0.5, domain=BoxDomain(torch.tensor(-10.0), torch.tensor(10.0)))
    result = attack(model, x, Misclassify(torch.ones(4, dtype=torch.long)), threat, rng=gen)
    torch.testing.assert_close(result.x_adv, x - 0.5 * w / w.norm(), atol=1e-4, rtol=0)


def test_minimum_norm_attacks_find_the_distance_to_the_hyperplane() -> None:
    model, w = linear_two_class(bias=0.0, seed=3)
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(64, D, generator=gen)
    s = x @ w
    x, s = x[s > 0.2][:6], s[s > 0.2][:6]  # class 1, some margin
    y = torch.ones(len(x), dtype=torch.long)
    threat = ThreatModel(norm="l2", eps=100.0, domain=BoxDomain(torch.tensor(-100.0), torch.tensor(100.0)))
    exact = s / w.norm()
    deepfool = DeepFool(overshoot=0.02)(model, x, Misclassify(y), threat)
    assert deepfool.success.all()
    torch.testing.assert_close(deepfool.min_norm, 1.02 * (exact + 1e-4 / w.norm()), rtol=1e-3, atol=1e-5)
    cw = CW(n_steps=200, n_search=8, c_init=1.0, lr=0.05)(model, x, Misclassify(y), threat)
    assert cw.success.all()
    assert (cw.min_norm >= exact * 0.999).all() and (cw.min_norm <= exact * 1.05 + 1e-3).all()
    linf = ThreatModel(norm="linf", eps=100.0, domain=threat.domain)
    deepfool_inf = DeepFool(overshoot=0.0)(model, x, Misclassify(y), linf)
    torch.testing.assert_close(deepfool_inf.min_norm, (s + 1e-4) / w.abs().sum(), rtol=1e-3, atol=1e-5)


def test_min_norm_success_only_counts_within_eps() -> None:
    model, w = linear_two_class(bias=0.0, seed=3)
    x = torch.rand(64, D, generator=torch.Generator().manual_seed(3))
    x = x[(x @ w) > 0.2][:6]
    y = torch.ones(len(x), dtype=torch.long)
    exact = (x @ w) / w.norm()
    ordered = exact.sort().values  # eps halfway between two examples' distances: none sits on the boundary
    eps = float(ordered[2:4].mean())
    threat = ThreatModel(norm="l2", eps=eps, domain=BoxDomain(torch.tensor(-100.0), torch.tensor(100.0)))
    result = DeepFool()(model, x, Misclassify(y), threat)
    assert torch.isfinite(result.min_norm).all(), "the norm found is reported even beyond eps"
    assert (threat.distance(result.x_adv, x) <= eps + 1e-5).all()
    assert torch.equal(result.success, result.min_norm <= eps)
