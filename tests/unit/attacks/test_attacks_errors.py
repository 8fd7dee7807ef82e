"""Bad input gets an error that names the problem."""

from __future__ import annotations

import pytest
import torch
from attack_fixtures import small_mlp

from bastion.attacks import APGD, APGDT, ATTACKS, CW, MIFGSM, DeepFool, Square
from bastion.attacks.worst_case import worst_case
from bastion.errors import ConfigError, InputValidationError
from bastion.goals import Misclassify, Reach
from bastion.threat import ThreatModel


@pytest.fixture
def batch():
    model = small_mlp(6, 5)
    x = torch.rand(4, 6, generator=torch.Generator().manual_seed(0))
    return model, x, torch.tensor([0, 1, 2, 3])


def test_negative_or_nan_eps_is_rejected() -> None:
    with pytest.raises(InputValidationError, match="eps"):
        ThreatModel(norm="linf", eps=-0.1)
    with pytest.raises(InputValidationError, match="eps"):
        ThreatModel(norm="linf", eps=float("nan"))


def test_unknown_norm_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown norm 'l3'"):
        ThreatModel(norm="l3", eps=0.1)


@pytest.mark.parametrize("name", ATTACKS.names())
def test_mismatched_batch_and_out_of_range_labels(name, batch) -> None:
    model, x, y = batch
    attack = ATTACKS.create(name)
    threat = ThreatModel(norm="l2", eps=0.1)
    with pytest.raises(InputValidationError, match="batch size mismatch"):
        attack(model, x, Misclassify(y[:3]), threat)
    with pytest.raises(InputValidationError, match="out of range"):
        attack(model, x, Misclassify(torch.tensor([0, 1, 2, 7])), threat)
    with pytest.raises(InputValidationError, match="outside the input domain"):
        attack(model, x + 2, Misclassify(y), threat)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: APGD(n_steps=0), "n_steps"),
        (lambda: APGD(rho=1.5), "rho"),
        (lambda: APGDT(n_targets=0), "n_targets"),
        (lambda: APGDT(max_gap_ratio=0.9), "max_gap_ratio"),
        (lambda: APGDT(max_gap_ratio=float("nan")), "max_gap_ratio"),
        (lambda: MIFGSM(decay=-1), "decay"),
        (lambda: Square(n_queries=0), "n_queries"),
        (lambda: Square(p_init=0), "p_init"),
        (lambda: Square(stall_window=0), "stall_window"),
        (lambda: Square(stall_factor=0), "stall_factor"),
        (lambda: CW(c_init=0), "c_init"),
        (lambda: DeepFool(n_candidates=1), "n_candidates"),
    ],
)
def test_bad_hyperparameters(make, match) -> None:
    with pytest.raises(ConfigError, match=match):
        make()


def test_attacks_refuse_what_they_cannot_do(batch) -> None:
    model, x, y = batch
    with pytest.raises(ConfigError, match=">= 4 classes"):
        APGDT()(small_mlp(6, 3), x, Misclassify(torch.tensor([0, 1, 2, 0])), ThreatModel(norm="linf", eps=0.1))
    with pytest.raises(ConfigError, match="L2"):
        CW()(model, x, Misclassify(y), ThreatModel(norm="linf", eps=0.1))
    with pytest.raises(ConfigError, match="untargeted"):
        DeepFool()(model, x, Reach(y), ThreatModel(norm="l2", eps=0.1))
    with pytest.raises(ConfigError, match="unknown attack"):
        ATTACKS.create("fab")
    with pytest.raises(InputValidationError, match="batch size mismatch"):
        worst_case(model, x, y[:2], {"apgd": APGD()}, ThreatModel(norm="l2", eps=0.1))
