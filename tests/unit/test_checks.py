"""The sanity checks flag gradient-masked models as SUSPECT and pass a healthy one."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bastion.attacks import PGD, DeepFool
from bastion.data import Dataset
from bastion.evaluation.checks import PASS, SKIPPED, SUSPECT, CheckSettings, run_checks, suspects
from bastion.evaluation.evaluate import Evaluation, evaluate
from bastion.evaluation.suites import build_suite
from bastion.threat import ThreatModel

EPS = [0.05, 0.1, 0.2]


class RoundedLogits(nn.Module):
    """Rounds the logits: zero input gradient everywhere, the textbook shattered gradient."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(self.model(x))


class SaturatedSoftmax(nn.Module):
    """Logits times a huge temperature: the softmax saturates and cross-entropy gradients vanish."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) * 1e4


def _checks(model: nn.Module, digits: Dataset) -> dict[str, dict]:
    test = digits.test.take(100)
    threat = ThreatModel(norm="linf", eps=max(EPS), domain=digits.spec.domain)
    suite = build_suite("quick")
    ev, _ = evaluate(model, test, suite, threat, EPS)
    return run_checks(model, test, ev, suite, threat, EPS, CheckSettings(n_examples=100))


def test_healthy_model_passes_every_check(standard_model: nn.Module, digits: Dataset) -> None:
    checks = _checks(standard_model, digits)
    assert suspects(checks) == []
    for code in ("gradient-health", "unbounded-eps-reaches-zero", "attack-converged", "noise-weaker-than-attack"):
        assert checks[code]["status"] == PASS, code
    assert checks["unbounded-eps-reaches-zero"]["measured"]["accuracy"] <= 0.05
    assert checks["gradient-health"]["measured"]["zero_gradient_share"] == 0.0
    # no defense and no black-box attack in the quick suite: said, not silently passed
    assert checks["eot-for-randomized-defense"]["status"] == SKIPPED
    assert checks["white-box-beats-black-box"]["status"] == SKIPPED


@pytest.mark.parametrize("wrapper", [RoundedLogits, SaturatedSoftmax])
def test_gradient_masked_model_is_suspect(standard_model: nn.Module, digits: Dataset, wrapper: type) -> None:
    checks = _checks(wrapper(standard_model).eval(), digits)
    health = checks["gradient-health"]
    assert health["status"] == SUSPECT
    assert health["measured"]["zero_gradient_share"] > 0.5
    assert checks["unbounded-eps-reaches-zero"]["status"] == SUSPECT
    assert checks["unbounded-eps-reaches-zero"]["measured"]["accuracy"] > 0.05


def _ev(table: dict[str, dict[str, float]], clean: float = 0.95) -> Evaluation:
    return Evaluation(clean_accuracy=clean, n_examples=100, robust_accuracy=table)


def test_table_checks_flag_the_classic_inconsistencies(standard_model: nn.Module, digits: Dataset) -> None:
    rising = _ev({"pgd-10": {"0.05": 0.5, "0.1": 0.7}, "fgsm": {"0.05": 0.2, "0.1": 0.8}, "transfer-pgd": {"0.1": 0.3}})
    test = digits.test.take(8)
    threat = ThreatModel(norm="linf", eps=0.1, domain=digits.spec.domain)
    checks = run_checks(standard_model, test, rising, {}, threat, [0.05, 0.1], CheckSettings(n_examples=0))
    assert checks["accuracy-monotone-in-eps"]["status"] == SUSPECT
    assert {r["attack"] for r in checks["accuracy-monotone-in-eps"]["measured"]["rises"]} == {"pgd-10", "fgsm"}
    assert checks["fgsm-not-stronger-than-pgd"]["status"] == SUSPECT  # FGSM 0.2 < PGD 0.5 at eps 0.05
    assert checks["white-box-beats-black-box"]["status"] == SUSPECT  # transfer 0.3 < white-box 0.7 at eps 0.1
    assert checks["gradient-health"]["status"] == SKIPPED  # n_examples = 0 turns the attacking checks off
    consistent = _ev({"pgd-10": {"0.05": 0.5, "0.1": 0.3}, "fgsm": {"0.05": 0.6, "0.1": 0.4}, "square": {"0.1": 0.5}})
    checks = run_checks(standard_model, test, consistent, {}, threat, [0.05, 0.1], CheckSettings(n_examples=0))
    assert suspects(checks) == []


def test_randomized_defense_needs_eot_and_a_detector_needs_a_detector_aware_attack(standard_model: nn.Module) -> None:
    from bastion.defenses.detectors.mahalanobis import MahalanobisDetector
    from bastion.defenses.pipeline import DefendedClassifier
    from bastion.defenses.transforms import GaussianNoise
    from bastion.evaluation.checks import detector_aware, eot_for_randomized

    defended = DefendedClassifier(standard_model, [GaussianNoise(sigma=0.05)], MahalanobisDetector(standard_model))
    naive = _ev({})
    naive.defense = {"adaptive_attacks": ["bpda-pgd", "transfer-pgd"]}
    assert eot_for_randomized(defended, naive).status == SUSPECT
    assert detector_aware(defended, naive).status == SUSPECT
    adaptive = _ev({})
    adaptive.defense = {"adaptive_attacks": ["eot-pgd", "detector-aware-pgd", "transfer-pgd"]}
    assert eot_for_randomized(defended, adaptive).status == PASS
    assert detector_aware(defended, adaptive).status == PASS
    bare = DefendedClassifier(standard_model)
    assert eot_for_randomized(bare, adaptive).status == SKIPPED
    assert detector_aware(bare, adaptive).status == SKIPPED


def _converged(model: nn.Module, digits: Dataset, suite: dict) -> dict:
    test = digits.test.take(100)
    threat = ThreatModel(norm="linf", eps=0.1, domain=digits.spec.domain)
    ev, _ = evaluate(model, test, suite, threat, [0.1])
    return run_checks(model, test, ev, suite, threat, [0.1], CheckSettings(n_examples=100))["attack-converged"]


def test_an_unconverged_attack_that_sets_the_worst_case_is_suspect(standard_model: nn.Module, digits: Dataset) -> None:
    # two steps of 0.02 cannot cover an eps of 0.1: twice the steps and a restart break far more
    check = _converged(standard_model, digits, {"pgd-weak": PGD(n_steps=2, step_size=0.02, random_start=False)})
    assert check["status"] == SUSPECT
    measured = check["measured"]
    assert measured["worst_case_with_stronger"] < measured["worst_case"] - 0.03


def test_an_unconverged_attack_whose_examples_another_attack_breaks_passes(
    standard_model: nn.Module, digits: Dataset
) -> None:
    # the same weak PGD beside DeepFool: what its stronger version adds, DeepFool already broke
    suite = {"pgd-weak": PGD(n_steps=2, step_size=0.02, random_start=False), "deepfool": DeepFool()}
    check = _converged(standard_model, digits, suite)
    measured = check["measured"]
    assert measured["accuracy_stronger"] < measured["accuracy"] - 0.03  # the attack itself has not converged
    assert measured["worst_case_with_stronger"] >= measured["worst_case"] - 0.03
    assert check["status"] == PASS
    assert "pgd-weak's own accuracy" in check["detail"]
