"""Attacks: exact budgets, legal inputs, real damage, clear errors."""

from __future__ import annotations

import pytest
import torch
from attack_fixtures import CHEAP
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from bastion.attacks import ATTACKS, FGSM, PGD
from bastion.data import Dataset
from bastion.domain import BoxDomain
from bastion.errors import ConfigError, InputValidationError
from bastion.evaluation.accuracy import accuracy, robust_accuracy
from bastion.goals import Misclassify, Reach
from bastion.threat import ThreatModel

N_CLASSES = 4  # APGD-T's targeted DLR needs >= 4


def tiny_model(d: int, c: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, 16), nn.Tanh(), nn.Linear(16, c)).eval()


@settings(max_examples=25, deadline=None)
@given(
    name=st.sampled_from(ATTACKS.names()),
    norm=st.sampled_from(["linf", "l2"]),
    eps=st.floats(0.0, 3.0),
    n=st.integers(1, 8),
    d=st.integers(2, 10),
    seed=st.integers(0, 1000),
)
def test_attacks_respect_budget_and_domain(name: str, norm: str, eps: float, n: int, d: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    lower = -torch.rand(d, generator=g)
    upper = torch.rand(d, generator=g) + 0.1
    domain = BoxDomain(lower, upper)
    x = lower + (upper - lower) * torch.rand(n, d, generator=g)
    y = torch.randint(0, N_CLASSES, (n,), generator=g)
    if name == "cw":
        norm = "l2"  # CW-L2 refuses other norms (tested in tests/unit/attacks)
    threat = ThreatModel(norm=norm, eps=eps, domain=domain)
    attack = ATTACKS.create(name, **CHEAP.get(name, {}))
    result = attack(tiny_model(d, N_CLASSES, seed), x, Misclassify(y), threat, rng=g)
    assert (threat.distance(result.x_adv, x) <= eps + 1e-5).all()
    assert domain.is_feasible(result.x_adv).all()
    assert result.x_adv.shape == x.shape


@pytest.mark.parametrize("name", ATTACKS.names())
def test_attack_restores_training_mode(name: str) -> None:
    model = tiny_model(4, N_CLASSES, 0).train()
    x = torch.rand(5, 4)
    threat = ThreatModel(norm="l2" if name == "cw" else "linf", eps=0.1)
    ATTACKS.create(name, **CHEAP.get(name, {}))(model, x, Misclassify(torch.zeros(5, dtype=torch.long)), threat)
    assert model.training


def test_pgd_breaks_a_standard_model(digits: Dataset, standard_model: nn.Module) -> None:
    test = digits.test
    clean = accuracy(standard_model, test)
    threat = ThreatModel(norm="linf", eps=0.2, domain=digits.spec.domain)
    rng = torch.Generator().manual_seed(0)
    robust = robust_accuracy(standard_model, test, PGD(n_steps=20), threat, rng=rng).accuracy
    assert clean > 0.9
    assert robust < 0.15, f"PGD-20 at eps 0.2 left {robust:.1%} accuracy on a standard model"


def test_trades_model_beats_standard_under_pgd(
    digits: Dataset, standard_model: nn.Module, trades_model: nn.Module
) -> None:
    threat = ThreatModel(norm="linf", eps=0.1, domain=digits.spec.domain)
    attack = PGD(n_steps=20, n_restarts=2)
    std = robust_accuracy(standard_model, digits.test, attack, threat, rng=torch.Generator().manual_seed(0)).accuracy
    rob = robust_accuracy(trades_model, digits.test, attack, threat, rng=torch.Generator().manual_seed(0)).accuracy
    assert rob > std + 0.2, f"TRADES {rob:.1%} vs standard {std:.1%} under PGD-20x2 at eps 0.1"


def test_pgd_is_at_least_as_strong_as_fgsm(digits: Dataset, standard_model: nn.Module) -> None:
    threat = ThreatModel(norm="linf", eps=0.1, domain=digits.spec.domain)
    rng = torch.Generator().manual_seed(0)
    fgsm = robust_accuracy(standard_model, digits.test, FGSM(), threat, rng=rng).accuracy
    pgd = robust_accuracy(standard_model, digits.test, PGD(n_steps=20), threat, rng=rng).accuracy
    assert pgd <= fgsm


def test_targeted_pgd_reaches_its_target(digits: Dataset, standard_model: nn.Module) -> None:
    x, y = digits.test.x[:64], digits.test.y[:64]
    target = (y + 1) % 10
    threat = ThreatModel(norm="linf", eps=0.3, domain=digits.spec.domain)
    result = PGD(n_steps=30)(standard_model, x, Reach(target), threat, rng=torch.Generator().manual_seed(0))
    hit = standard_model(result.x_adv).argmax(1) == target
    assert torch.equal(hit, result.success)
    assert hit.float().mean() > 0.8


def test_attack_skips_examples_already_misclassified(standard_model: nn.Module, digits: Dataset) -> None:
    x, y = digits.test.x[:50], digits.test.y[:50]
    wrong = (y + 1) % 10  # labels the model does not predict: every example already "misclassified"
    result = PGD(n_steps=5)(standard_model, x, Misclassify(wrong), ThreatModel(norm="linf", eps=0.1))
    assert torch.equal(result.x_adv, x)
    assert result.n_backward == 0


def test_pass_counts_are_per_example(standard_model: nn.Module, digits: Dataset) -> None:
    x, y = digits.test.x[:40], digits.test.y[:40]
    threat = ThreatModel(norm="linf", eps=0.0001)  # too small to flip anything: every example runs every step
    result = PGD(n_steps=7, random_start=False)(standard_model, x, Misclassify(y), threat)
    n_active = int((standard_model(x).argmax(1) == y).sum())
    assert result.n_backward == 7 * n_active
    # clean pass, 7 steps + the last iterate; PGD hands its scores to the base, so no separate final check
    assert result.n_forward == len(x) + 8 * n_active


@pytest.mark.parametrize(
    ("x", "y", "eps", "match"),
    [
        (torch.rand(4, 8), torch.zeros(3, dtype=torch.long), 0.1, "batch size mismatch"),
        (torch.rand(8), torch.zeros(8, dtype=torch.long), 0.1, "shape"),
        (torch.full((4, 8), float("nan")), torch.zeros(4, dtype=torch.long), 0.1, "NaN"),
        (torch.rand(4, 8) + 2, torch.zeros(4, dtype=torch.long), 0.1, "outside the input domain"),
        (torch.rand(4, 8), torch.full((4,), 7), 0.1, "labels out of range"),
        (torch.randint(0, 2, (4, 8)), torch.zeros(4, dtype=torch.long), 0.1, "floating-point"),
    ],
)
def test_bad_input_gets_a_clear_error(x: torch.Tensor, y: torch.Tensor, eps: float, match: str) -> None:
    model = tiny_model(8, 3, 0)
    with pytest.raises(InputValidationError, match=match):
        PGD(n_steps=2)(model, x, Misclassify(y), ThreatModel(norm="linf", eps=eps))


def test_bad_hyperparameters_are_rejected() -> None:
    with pytest.raises(ConfigError, match="n_steps"):
        PGD(n_steps=0)
    with pytest.raises(ConfigError, match="unknown attack 'pgdd'"):
        ATTACKS.create("pgdd")
    with pytest.raises(ConfigError, match="bad options for attack 'pgd'"):
        ATTACKS.create("pgd", steps=3)
