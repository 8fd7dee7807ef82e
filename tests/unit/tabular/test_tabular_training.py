"""Training with the constrained domain in the loop; distillation, ensembles and detectors on tabular data."""

from __future__ import annotations

import copy

import pytest
import torch
from synthetic import fitted
from torch import nn

from bastion.attacks import PGD, CoordinateSearch
from bastion.data.spec import Split
from bastion.data.tabular.domain import TabularDomain
from bastion.defenses.detectors.mahalanobis import MahalanobisDetector
from bastion.goals import Misclassify
from bastion.models.ensemble import AverageEnsemble
from bastion.models.registry import Architecture, build_model, normalization_stats
from bastion.threat import ThreatModel
from bastion.training import MethodConfig, TrainSettings, build_method, fit
from bastion.training.objectives import Distillation
from bastion.training.schedules import constant

PRE, RAW, Y = fitted(400)
DOMAIN = TabularDomain(PRE)
X = torch.tensor(PRE.transform(RAW))
YT = torch.tensor(Y)
THREAT = ThreatModel(norm="linf", eps=0.1, domain=DOMAIN)


def mlp(seed: int) -> nn.Module:
    mean, std = normalization_stats(X)
    arch = Architecture(
        name="mlp", input_shape=(X.shape[1],), num_classes=2, mean=mean, std=std, options={"hidden": [32]}
    )
    return build_model(arch, seed=seed)


class SpyDomain(TabularDomain):
    """Counts repairs, to show the training attack runs through the tabular domain."""

    repairs = 0

    def repair(self, x: torch.Tensor, x_ref: torch.Tensor) -> torch.Tensor:
        SpyDomain.repairs += 1
        out = super().repair(x, x_ref)
        assert self.is_feasible(out, x_ref).all()
        return out


@pytest.fixture(scope="module")
def standard() -> nn.Module:
    model = mlp(0)
    objective, schedule = build_method("standard", MethodConfig(epochs=15))
    fit(
        model, Split(X, YT), objective, schedule, THREAT, settings=TrainSettings(batch_size=64, val_examples=0, lr=1e-2)
    )
    return model.eval()


@pytest.mark.parametrize("method", ["pgd-at", "progressive-trades"])
def test_adversarial_training_runs_the_constrained_attack(method: str) -> None:
    SpyDomain.repairs = 0
    threat = ThreatModel(norm="linf", eps=0.1, domain=SpyDomain(PRE))
    objective, schedule = build_method(method, MethodConfig(epochs=3, eps=0.1, n_steps=2, n_stages=3))
    record = fit(
        mlp(1),
        Split(X[:128], YT[:128]),
        objective,
        schedule,
        threat,
        settings=TrainSettings(batch_size=64, val_examples=0),
    )
    assert SpyDomain.repairs >= 2
    assert record.to_dict()["gradient_evaluations"] > 0


def test_distillation_trains_a_student_that_agrees_with_its_teacher(standard: nn.Module) -> None:
    student = mlp(2)
    fit(
        student,
        Split(X, YT),
        Distillation(teacher=standard, temperature=10.0),
        constant(epochs=15, eps=0.0, n_steps=1, beta=0.0),
        THREAT,
        settings=TrainSettings(batch_size=64, val_examples=0, lr=1e-2),
    )
    with torch.no_grad():
        agree = (student.eval()(X).argmax(1) == standard(X).argmax(1)).float().mean()
    assert agree > 0.85


def test_ensemble_is_attackable_and_detectors_work_on_tabular_features(standard: nn.Module) -> None:
    ensemble = AverageEnsemble([standard, mlp(3).eval()])
    assert ensemble(X[:5]).exp().sum(1).allclose(torch.ones(5))
    for attack in (PGD(n_steps=5), CoordinateSearch(n_iters=3, n_candidates=4)):
        result = attack(ensemble, X[:32], Misclassify(YT[:32]), THREAT)
        assert DOMAIN.is_feasible(result.x_adv, X[:32]).all()
    detector = MahalanobisDetector(ensemble, target_fpr=0.1).fit(X[:250], YT[:250]).calibrate(X[250:300])
    flagged = detector.predict(X[300:])
    assert 0 < float(flagged.float().mean()) < 0.4
    far = DOMAIN.repair(X[300:] * 0 + 1, X[300:])  # legal rows pushed to the box corner
    assert detector.score(far).mean() > detector.score(X[300:]).mean()


def test_detector_evaluation_counts_only_valid_unflagged_evasions(standard: nn.Module) -> None:
    from bastion.attacks.adaptive import AdaptivePGD, DetectorPenalty
    from bastion.defenses import Defense
    from bastion.defenses.pipeline import detection_margin
    from bastion.errors import ConfigError
    from bastion.evaluation.tabular import evaluate_tabular, evaluate_tabular_detector

    test, raw = Split(X[300:], YT[300:]), RAW.iloc[300:]
    budgets = (0.1, 0.3)
    _, outcomes = evaluate_tabular(
        standard, test, raw, DOMAIN, 0, {"pgd": PGD(n_steps=5)}, "linf", budgets, unconstrained=False
    )
    defense = Defense(standard, detectors=[MahalanobisDetector(standard)], target_fpr=0.1)
    defense.fit(X[:250], YT[:250]).calibrate(X[250:300])
    adaptive = {
        "detector-aware pgd": AdaptivePGD(n_steps=5, detector_weight=2.0),
        "detector-aware search": CoordinateSearch(n_iters=3, n_candidates=4),
    }
    args = (test, raw, DOMAIN, 0, outcomes, "linf", budgets)
    report = evaluate_tabular_detector(defense, *args, adaptive=adaptive)
    flagged = defense.decide(test.x).flagged
    assert report["false_positive_rate"] == pytest.approx(float(flagged.float().mean()), abs=1e-6)
    assert report["n_malicious"] == int((test.y != 0).sum())
    for key in ("0.1", "0.3"):
        cells = {a: v[key] for a, v in report["failure_rate"].items() if a != "ensemble"}
        assert set(cells) == {"pgd", "detector-aware pgd", "detector-aware search"}
        for attack, failure in cells.items():
            assert failure <= report["evasion_rate"][attack][key] + 1e-9
        assert max(cells.values()) <= report["failure_rate"]["ensemble"][key] <= sum(cells.values()) + 1e-9
    # the search's surrogate: the benign logit drops by lambda * max(0, margin + kappa), nothing else moves
    penalized = DetectorPenalty(defense, 0, weight=10.0, kappa=0.5)(test.x).detach()
    plain = defense(test.x).detach()
    margins = detection_margin(defense, test.x).detach()
    assert torch.equal(penalized[:, 1], plain[:, 1])
    assert torch.allclose(plain[:, 0] - penalized[:, 0], 10.0 * (margins + 0.5).clamp_min(0), atol=1e-5)
    # a detector that flags everything leaves the attacker nothing
    defense.detector.threshold_ = -1e9
    flag_all = evaluate_tabular_detector(defense, *args[:-1], (0.3,), adaptive=adaptive)
    assert flag_all["false_positive_rate"] == 1.0
    assert all(v == 0.0 for cells in flag_all["failure_rate"].values() for v in cells.values())
    with pytest.raises(ConfigError, match="detector"):
        evaluate_tabular_detector(Defense(standard), *args)


def rounded_logits(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose logits are rounded: zero input gradient everywhere, so a gradient attack
    breaks nothing."""
    rounded = copy.deepcopy(model).eval()
    rounded.register_forward_hook(lambda _module, _inputs, logits: torch.round(logits))
    return rounded


def _tabular_checks(model: nn.Module, domain: TabularDomain) -> tuple[dict, dict]:
    from bastion.evaluation.checks import CheckSettings, run_checks
    from bastion.evaluation.tabular import evaluate_tabular, malicious_rows

    test, raw = Split(X[300:], YT[300:]), RAW.iloc[300:]
    suite = {"pgd-50": PGD(n_steps=50), "search": CoordinateSearch(n_iters=10, n_candidates=8)}
    ev, _ = evaluate_tabular(model, test, raw, domain, 0, suite, "linf", (0.1, 0.3), unconstrained=False)
    target = malicious_rows(test, raw, domain, 0)
    threat = ThreatModel(norm="linf", eps=0.3, domain=domain)
    checks = run_checks(model, target.split, ev, suite, threat, (0.1, 0.3), CheckSettings(n_examples=30), target=target)
    return ev.to_dict(), checks


def test_tabular_checks_attack_the_malicious_rows_within_the_domain(standard: nn.Module) -> None:
    from bastion.evaluation.checks import PASS, SKIPPED

    SpyDomain.repairs = 0
    _, checks = _tabular_checks(standard, SpyDomain(PRE))
    repairs_in_evaluation = SpyDomain.repairs
    assert checks["gradient-health"]["status"] == PASS
    n_malicious = int((YT[300:] != 0).sum())
    for code in ("gradient-health", "attack-converged", "noise-weaker-than-attack"):
        assert checks[code]["measured"]["n_examples"] == min(30, n_malicious), code
    # constrained: the unbounded budget is held to the constraint limit, not to ~0%
    unbounded = checks["unbounded-eps-reaches-zero"]
    assert unbounded["status"] == PASS and "unbounded attack reaches" in unbounded["detail"]
    assert unbounded["measured"]["accuracy"] <= unbounded["measured"]["bounded_accuracy"] + 0.03
    assert checks["white-box-beats-black-box"]["status"] != SKIPPED  # PGD vs the gradient-free search
    # the baseline of the eps ordering is the clean detection rate of the malicious rows, not all-row accuracy
    assert checks["accuracy-monotone-in-eps"]["status"] == PASS
    assert repairs_in_evaluation > 0


def test_tabular_checks_flag_a_gradient_attack_that_broke_nothing(standard: nn.Module) -> None:
    from bastion.evaluation.checks import SUSPECT

    entry, checks = _tabular_checks(rounded_logits(standard), DOMAIN)
    robust = entry["robust_accuracy"]
    assert all(robust["pgd-50"][e] > robust["search"][e] + 0.03 for e in ("0.1", "0.3"))  # PGD lost to a black box
    assert checks["gradient-health"]["status"] == SUSPECT
    assert checks["gradient-health"]["measured"]["zero_gradient_share"] == 1.0
    assert checks["white-box-beats-black-box"]["status"] == SUSPECT
