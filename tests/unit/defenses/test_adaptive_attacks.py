"""Adaptive attacks: BPDA/EOT break gradient-masking squeezers (Athalye et al. 2018); detector-aware PGD evades."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from bastion.attacks import PGD, AdaptivePGD, Transfer, bpda
from bastion.attacks.adaptive import evasion_success
from bastion.data import Dataset
from bastion.defenses import Defense, MahalanobisDetector
from bastion.goals import Misclassify
from bastion.threat import ThreatModel


@dataclass(frozen=True)
class HardBitDepth:
    """A squeezer as a naive defender writes it: rounding, no gradient at all (gradient masking)."""

    bits: int = 3
    noise: float = 0.0
    differentiable: bool = False

    @property
    def randomized(self) -> bool:
        return self.noise > 0

    def __call__(self, x: Tensor) -> Tensor:
        levels = 2**self.bits - 1
        if self.noise > 0:
            x = x + self.noise * torch.randn_like(x)
        return torch.round(x.clamp(0, 1) * levels) / levels  # zero gradient almost everywhere

    def to_dict(self) -> dict[str, Any]:
        return {"name": "hard-bit-depth", "bits": self.bits}


EPS = 0.25


def _rate(result_success: Tensor) -> float:
    return float(result_success.float().mean())


@pytest.fixture(scope="module")
def batch(digits: Dataset, standard_model: nn.Module) -> tuple[Tensor, Tensor]:
    x, y = digits.test.x[:100], digits.test.y[:100]
    right = standard_model(x).argmax(1) == y
    return x[right], y[right]


def test_bpda_breaks_a_gradient_masking_squeeze_that_naive_pgd_cannot(
    standard_model: nn.Module, batch: tuple[Tensor, Tensor], digits: Dataset
) -> None:
    x, y = batch
    defense = Defense(standard_model, [HardBitDepth(3)])
    threat = ThreatModel(norm="linf", eps=EPS, domain=digits.spec.domain)
    rng = torch.Generator().manual_seed(0)
    naive = PGD(n_steps=20, random_start=False)(defense, x, Misclassify(y), threat, rng=rng)
    assert naive.n_backward > 0
    adaptive = AdaptivePGD(n_steps=20, random_start=False)(defense, x, Misclassify(y), threat, rng=rng)
    assert _rate(naive.success) < 0.2, "zero gradients should stall the naive attack"
    assert _rate(adaptive.success) > 0.8, f"BPDA should break the squeeze, got {_rate(adaptive.success):.2f}"


def test_eot_breaks_a_randomized_squeeze(
    standard_model: nn.Module, batch: tuple[Tensor, Tensor], digits: Dataset
) -> None:
    x, y = batch
    defense = Defense(standard_model, [HardBitDepth(3, noise=0.1)])
    threat = ThreatModel(norm="linf", eps=EPS, domain=digits.spec.domain)
    torch.manual_seed(0)
    naive = PGD(n_steps=10, random_start=False)(defense, x, Misclassify(y), threat)
    eot = AdaptivePGD(n_steps=10, random_start=False, eot_samples=4)(defense, x, Misclassify(y), threat)
    assert _rate(naive.success) < 0.3 < 0.7 < _rate(eot.success)


def test_bpda_wrapper_uses_the_approximation_gradient() -> None:
    x = torch.rand(3, 4, requires_grad=True)
    hard = HardBitDepth(1)
    (g_id,) = torch.autograd.grad(bpda(hard)(x).sum(), x)
    assert torch.equal(g_id, torch.ones_like(x)) and torch.equal(bpda(hard)(x), hard(x))
    (g_sq,) = torch.autograd.grad(bpda(hard, approx=lambda t: t**2)(x).sum(), x)
    assert torch.allclose(g_sq, 2 * x)


def test_detector_aware_attack_lowers_the_detection_rate(
    standard_model: nn.Module, batch: tuple[Tensor, Tensor], digits: Dataset
) -> None:
    x, y = batch
    defense = Defense(standard_model, [], [MahalanobisDetector(standard_model)], target_fpr=0.05)
    defense.fit(digits.train.x, digits.train.y).calibrate(digits.val.x)
    threat = ThreatModel(norm="linf", eps=0.2, domain=digits.spec.domain)
    plain = AdaptivePGD(n_steps=20)(defense, x, Misclassify(y), threat, rng=torch.Generator().manual_seed(0))
    aware = AdaptivePGD(n_steps=20, detector_weight=2.0)(
        defense, x, Misclassify(y), threat, rng=torch.Generator().manual_seed(0)
    )

    def detection_rate(x_adv: Tensor) -> float:
        d = defense.decide(x_adv)
        fooled = d.labels != y
        return float(d.flagged[fooled].float().mean())

    plain_rate, aware_rate = detection_rate(plain.x_adv), detection_rate(aware.x_adv)
    assert plain_rate > 0.05, f"Mahalanobis should catch some plain PGD examples, caught {plain_rate:.2f}"
    assert aware_rate < plain_rate / 2, f"detector-aware {aware_rate:.2f} vs plain {plain_rate:.2f}"
    assert (
        evasion_success(defense, aware.x_adv, y).float().mean()
        > evasion_success(defense, plain.x_adv, y).float().mean()
    )
    assert threat.contains(aware.x_adv, x).all()


def test_transfer_crafts_on_the_undefended_model(
    standard_model: nn.Module, batch: tuple[Tensor, Tensor], digits: Dataset
) -> None:
    x, y = batch
    defense = Defense(standard_model, [HardBitDepth(3)])
    threat = ThreatModel(norm="linf", eps=EPS, domain=digits.spec.domain)
    result = Transfer(base=PGD(n_steps=10))(defense, x, Misclassify(y), threat, rng=torch.Generator().manual_seed(0))
    with torch.no_grad():
        fooled_source = float((standard_model(result.x_adv).argmax(1) != y).float().mean())
    assert fooled_source > 0.8, "crafted with the undefended model's gradients"
    assert threat.contains(result.x_adv, x).all()
    assert result.n_backward >= len(x)  # the source model's passes are counted
