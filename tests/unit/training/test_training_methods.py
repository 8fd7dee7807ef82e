"""The issue-4 methods: each lowers its own loss, costs what the analytic count says, and is registered."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bastion.data import Dataset
from bastion.errors import ConfigError
from bastion.models.registry import Architecture, build_model
from bastion.threat import ThreatModel
from bastion.training import (
    MART,
    METHODS,
    PGDAT,
    Distillation,
    EnsembleAT,
    FastAT,
    FreeAT,
    MethodConfig,
    Schedule,
    Stage,
    Standard,
    TrainSettings,
    build_method,
    fit,
)

N_TRAIN, BATCH = 96, 32


def tiny(seed: int = 0) -> nn.Module:
    arch = Architecture(
        name="mlp", input_shape=(1, 8, 8), num_classes=10, mean=(0.3,), std=(0.4,), options={"hidden": [32]}
    )
    return build_model(arch, seed=seed)


def frozen(seed: int) -> nn.Module:
    return tiny(seed).eval()


def objectives() -> dict[str, object]:
    return {
        "mart": MART(),
        "pgd-at-mixed": PGDAT(clean_weight=0.5),
        "fast-at": FastAT(),
        "fast-at-none": FastAT(guard="none"),
        "free-at": FreeAT(replays=3),
        "ensemble-at": EnsembleAT(static_models=(frozen(7), frozen(8))),
        "distillation": Distillation(teacher=frozen(9), temperature=1.0),
    }


#: (forward, backward) passes per example and epoch for a K-step stage, from each paper's algorithm.
def analytic(name: str, k: int) -> tuple[int, int]:
    return {
        "mart": (k + 2, k + 2),  # K attack steps, then clean + adversarial forward, backward through both
        "pgd-at-mixed": (k + 2, k + 2),  # K attack steps, then clean + adversarial forward, backward through both
        "fast-at": (2, 2),  # one attack step, one training pass
        "fast-at-none": (2, 2),
        "free-at": (3, 3),  # m = 3 replays, one pass each (input and weight gradients share it)
        "ensemble-at": (k + 2, k + 2),  # K steps on the source (itself or a static model), clean + adversarial
        "distillation": (2, 1),  # teacher forward (no grad) + student forward and backward
    }[name]


@pytest.mark.parametrize("name", list(objectives()))
def test_each_new_objective_lowers_its_own_loss(digits: Dataset, name: str) -> None:
    train = digits.train.take(256)
    stage = Stage(epochs=4, eps=0.05, n_steps=2)
    record = fit(
        tiny(),
        train,
        objectives()[name],  # type: ignore[arg-type]
        Schedule((stage,)),
        ThreatModel(norm="linf", eps=0.05),
        settings=TrainSettings(batch_size=32, lr=1e-2, val_examples=0),
    )
    losses = [h["loss"] for h in record.history]
    assert losses[-1] < 0.75 * losses[0], losses


@pytest.mark.parametrize("name", list(objectives()))
def test_pass_counts_match_the_analytic_count(digits: Dataset, name: str) -> None:
    k = 3
    schedule = Schedule((Stage(epochs=2, eps=0.05, n_steps=k),))
    record = fit(
        tiny(),
        digits.train.take(N_TRAIN),
        objectives()[name],  # type: ignore[arg-type]
        schedule,
        ThreatModel(norm="linf", eps=0.05),
        settings=TrainSettings(batch_size=BATCH, val_examples=0),
    )
    fwd, bwd = analytic(name, k)
    assert record.forward_passes == 2 * N_TRAIN * fwd
    assert record.gradient_evaluations == 2 * N_TRAIN * bwd
    assert record.stages[0]["gradient_evaluations"] == record.gradient_evaluations


def test_free_at_takes_one_optimizer_step_per_replay(digits: Dataset) -> None:
    """m replays of each minibatch are m optimiser steps: the LR schedule spans epochs x batches x m."""
    model = tiny()
    opt_steps = []
    orig = torch.optim.Adam.step

    def counting_step(self, *a, **k):  # type: ignore[no-untyped-def]
        opt_steps.append(1)
        return orig(self, *a, **k)

    torch.optim.Adam.step = counting_step  # type: ignore[method-assign]
    try:
        fit(
            model,
            digits.train.take(N_TRAIN),
            FreeAT(replays=4),
            Schedule((Stage(epochs=1, eps=0.05, n_steps=1),)),
            ThreatModel(norm="linf", eps=0.05),
            settings=TrainSettings(batch_size=BATCH, val_examples=0),
        )
    finally:
        torch.optim.Adam.step = orig  # type: ignore[method-assign]
    assert len(opt_steps) == 4 * (N_TRAIN // BATCH)


def test_free_at_perturbation_persists_and_stays_in_the_ball(digits: Dataset) -> None:
    objective = FreeAT(replays=2)
    fit(
        tiny(),
        digits.train.take(N_TRAIN),
        objective,
        Schedule((Stage(epochs=1, eps=0.05, n_steps=1),)),
        ThreatModel(norm="linf", eps=0.05),
        settings=TrainSettings(batch_size=BATCH, val_examples=0),
    )
    assert objective.delta is not None and objective.delta.abs().max() > 0
    assert objective.delta.abs().max() <= 0.05 + 1e-6


@pytest.mark.parametrize(("guard", "reach"), [("none", 1.0), ("n-fgsm", 3.0)])
def test_fast_at_examples_stay_in_their_ball_and_domain(digits: Dataset, guard: str, reach: float) -> None:
    x, y = digits.train.x[:64], digits.train.y[:64]
    threat = ThreatModel(norm="linf", eps=0.1)
    rng = torch.Generator().manual_seed(0)
    x_adv = FastAT(guard=guard).perturb(tiny(), x, y, Stage(epochs=1, eps=0.1, n_steps=1), threat, rng)  # type: ignore[arg-type]
    dist = (x_adv - x).flatten(1).abs().amax(1)
    assert (dist <= reach * 0.1 + 1e-6).all()
    assert ((x_adv >= 0) & (x_adv <= 1)).all()
    if guard == "n-fgsm":
        assert dist.max() > 0.1 + 1e-3, "N-FGSM does not clip back to the eps-ball"


def test_ensemble_at_cycles_through_its_sources(digits: Dataset) -> None:
    objective = EnsembleAT(static_models=(frozen(1), frozen(2)))
    record = fit(
        tiny(),
        digits.train.take(6 * 16),
        objective,
        Schedule((Stage(epochs=1, eps=0.05, n_steps=1),)),
        ThreatModel(norm="linf", eps=0.05),
        settings=TrainSettings(batch_size=16, val_examples=0),
    )
    assert objective.batches_seen == 6
    assert [objective.source_of(b) for b in range(6)] == [0, 1, 2, 0, 1, 2]
    assert record.history[0]["source"] == pytest.approx(1.0)  # mean over 0,1,2,0,1,2
    for m in objective.static_models:
        assert all(not p.requires_grad for p in m.parameters())


def test_distilled_student_matches_its_teacher(digits: Dataset) -> None:
    """Defensive distillation: a student trained on the teacher's soft labels at T reaches the teacher's
    test accuracy (within 5 points) on the held-out split."""
    from bastion.evaluation.accuracy import accuracy

    settings = TrainSettings(batch_size=32, lr=1e-2, val_examples=0)
    schedule = Schedule((Stage(epochs=5, eps=0.0),))
    threat = ThreatModel(norm="linf", eps=0.0)
    teacher = tiny(0)
    fit(teacher, digits.train, Standard(temperature=4.0), schedule, threat, settings=settings)
    student = tiny(1)
    fit(student, digits.train, Distillation(teacher=teacher, temperature=4.0), schedule, threat, settings=settings)
    t_acc, s_acc = accuracy(teacher, digits.test), accuracy(student, digits.test)
    assert t_acc > 0.9
    assert abs(s_acc - t_acc) <= 0.05, (t_acc, s_acc)


def test_every_method_is_registered_with_its_schedule(tmp_path) -> None:
    from bastion.data.sources import load_dataset
    from bastion.models.checkpoint import save_model

    data = load_dataset("digits")
    arch = Architecture(
        name="mlp", input_shape=(1, 8, 8), num_classes=10, mean=(0.3,), std=(0.4,), options={"hidden": [32]}
    )
    path = save_model(build_model(arch, seed=0), arch, data.spec, tmp_path / "m")
    cfg = MethodConfig(epochs=4, eps=0.1, n_steps=5, teacher=str(path), static_models=(str(path),))
    expected = {
        "standard": 0.0,
        "pgd-at": 0.1,
        "trades": 0.1,
        "progressive-trades": 0.1,
        "mart": 0.1,
        "fast-at": 0.1,
        "free-at": 0.1,
        "distillation-teacher": 0.0,
        "distillation": 0.0,
        "ensemble-at": 0.1,
    }
    assert set(METHODS.names()) == set(expected)
    for name, final_eps in expected.items():
        objective, schedule = build_method(name, cfg)
        assert schedule.total_epochs == 4 and schedule.final_eps == pytest.approx(final_eps)
        assert objective.name == name
    with pytest.raises(ConfigError, match="teacher"):
        build_method("distillation", MethodConfig())
    with pytest.raises(ConfigError, match="static"):
        build_method("ensemble-at", MethodConfig())
    with pytest.raises(ConfigError, match="replays"):
        build_method("free-at", MethodConfig(replays=0))
    with pytest.raises(ConfigError, match="guard"):
        build_method("fast-at", MethodConfig(guard="gradalign"))  # type: ignore[arg-type]


def test_pgd_at_clean_weight_mixes_clean_and_adversarial_cross_entropy(digits: Dataset) -> None:
    model, (x, y) = tiny(), (digits.train.x[:32], digits.train.y[:32])
    threat, stage = ThreatModel(norm="linf", eps=0.3), Stage(epochs=1, eps=0.3, n_steps=3, beta=0.0)
    mixed = PGDAT(clean_weight=0.25)(model, x, y, stage, threat, torch.Generator().manual_seed(3))
    adv = PGDAT()(model, x, y, stage, threat, torch.Generator().manual_seed(3)).loss  # same attack, same start
    clean = F.cross_entropy(model(x), y)
    assert adv > clean  # the attack did something, so the weights matter
    assert float(mixed.loss.detach()) == pytest.approx(float((0.25 * clean + 0.75 * adv).detach()), rel=1e-5)
    objective, _ = build_method("pgd-at", MethodConfig(clean_weight=0.25, epochs=1, eps=0.3))
    assert objective == PGDAT(clean_weight=0.25)
    with pytest.raises(ConfigError, match=r"clean_weight must be in \[0, 1\)"):
        PGDAT(clean_weight=1.0)
    with pytest.raises(ConfigError, match="clean_weight is only used by 'pgd-at', not 'trades'"):
        build_method("trades", MethodConfig(clean_weight=0.25))
