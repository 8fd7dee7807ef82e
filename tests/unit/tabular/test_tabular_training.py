"""Training with the constrained domain in the loop; distillation, ensembles and detectors on tabular data."""

from __future__ import annotations

import pytest
import torch
from synthetic import fitted
from torch import nn

from bastion.attacks import PGD, CoordinateSearch
from bastion.data.spec import Split
from bastion.data.tabular.domain import TabularDomain
from bastion.defenses.detectors.mahalanobis import MahalanobisDetector
from bastion.goals import Misclassify
from bastion.models.registry import Architecture, build_model, normalization_stats
from bastion.threat import ThreatModel
from bastion.training import MethodConfig, TrainSettings, build_method, fit
from bastion.training.distillation import AverageEnsemble, Distillation
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
