"""Issue 15: cheap TRADES stages that start in the whole ball, per-example perturbations carried across
epochs (compact, rescaled with eps, resumed bit-exactly), and the ``gap`` transition policy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from bastion.app.config import TrainConfig
from bastion.data import Dataset
from bastion.data.spec import BoxDomain
from bastion.errors import ConfigError
from bastion.models.registry import Architecture, build_model
from bastion.threat import ThreatModel
from bastion.training import PGDAT, TRADES, MethodConfig, Schedule, Stage, TrainSettings, build_method, fit
from bastion.training import trainer as trainer_module
from bastion.training.carry import LEVELS, PerturbationStore
from bastion.training.schedules import GapPolicy

SETTINGS = TrainSettings(batch_size=32, val_examples=32)


def tiny(seed: int = 0) -> nn.Module:
    arch = Architecture(
        name="mlp", input_shape=(1, 8, 8), num_classes=10, mean=(0.3,), std=(0.4,), options={"hidden": [16]}
    )
    return build_model(arch, seed=seed)


def threat(eps: float) -> ThreatModel:
    return ThreatModel(norm="linf", eps=eps, domain=BoxDomain(0.0, 1.0))


def small(digits: Dataset, n: int = 96) -> Dataset:
    from dataclasses import replace

    return replace(digits, train=digits.train.take(n))


CARRY = [
    {"epochs": 2, "eps": 0.1, "n_steps": 1, "start": "carry"},
    {"epochs": 2, "eps": 0.2, "n_steps": 1, "start": "carry"},
]


@settings(max_examples=25, deadline=None)
@given(eps=st.floats(0.01, 0.45), n=st.integers(64, 128), seed=st.integers(0, 2**16))
def test_first_visit_starts_uniformly_in_the_whole_ball(eps: float, n: int, seed: int) -> None:
    x = torch.full((n, 1, 8, 8), 0.5)  # away from the pixel box, so the ball is not clipped
    store = PerturbationStore()
    store.select(torch.arange(n), 1000, (1, 8, 8))
    delta = store.start(x, threat(eps), torch.Generator().manual_seed(seed)) - x
    assert delta.abs().max() <= eps + 1e-6  # within budget
    # spread over the whole cube, not a tiny Gaussian: U(-eps, eps) has mean |d| = eps / 2, max near eps
    assert delta.abs().max() > 0.95 * eps
    assert abs(float(delta.abs().mean()) - eps / 2) < 0.05 * eps
    assert float((delta > 0).float().mean()) == pytest.approx(0.5, abs=0.05)


def test_carried_perturbation_is_quantised_within_eps_over_254_and_rescaled_with_eps() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand((10, 1, 8, 8), generator=gen) * 0.2 + 0.4
    eps = 0.1
    delta = (torch.rand(x.shape, generator=gen) * 2 - 1) * eps
    store = PerturbationStore()
    index = torch.arange(3, 13)
    store.select(index, 20, (1, 8, 8))
    store.put(x + delta, x, eps)
    assert store.q is not None and store.q.dtype == torch.int8
    back = store.start(x, threat(eps), gen) - x
    assert (back - delta).abs().max() <= eps / (2 * LEVELS) + 1e-6
    # when eps doubles between stages the stored perturbation doubles with it
    grown = store.start(x, threat(2 * eps), gen) - x
    assert torch.allclose(grown, 2 * back, atol=1e-6)
    # rows of other examples were never visited: they still start fresh
    store.select(torch.arange(0, 3), 20, (1, 8, 8))
    assert store.seen is not None and not bool(store.seen[:3].any())


def test_carry_over_persists_across_epochs_and_costs_one_step(digits: Dataset) -> None:
    data = small(digits)
    objective, schedule = build_method("progressive-trades", MethodConfig(eps=0.2, stages=tuple(CARRY)))
    assert isinstance(objective, TRADES)
    record = fit(
        tiny(), data.train, objective, schedule, threat(0.2), settings=TrainSettings(batch_size=32, val_examples=0)
    )
    assert objective.carry.seen is not None and bool(objective.carry.seen.all())
    assert objective.carry.q is not None and int(objective.carry.q.abs().max()) == LEVELS  # reaches the ball's edge
    # one attack step plus the clean and adversarial training passes, per example and epoch
    assert record.gradient_evaluations == 4 * 3 * len(data.train)
    assert record.policy_gradient_evaluations == 0


def test_explicit_stages_take_the_config_beta_unless_they_name_their_own() -> None:
    stages = ({"epochs": 1, "eps": 0.1, "n_steps": 1}, {"epochs": 1, "eps": 0.2, "n_steps": 2, "beta": 1.5})
    _, schedule = build_method("progressive-trades", MethodConfig(eps=0.2, beta=2.0, stages=stages))
    assert [s.beta for s in schedule.stages] == [2.0, 1.5]


class _Interrupt(Exception):
    pass


def _run(data: Dataset, directory: Path, *, interrupt_at: tuple[int, int] | None = None, resume: bool = False):
    objective, schedule = build_method(
        "progressive-trades",
        MethodConfig(eps=0.2, stages=tuple(CARRY), policy="gap", policy_gap=0.01, policy_confidence=0.5, n_steps=3),
    )
    model = tiny()

    def hook(epoch: int, batch: int, n_batches: int) -> None:
        if interrupt_at is not None and (epoch, batch) == interrupt_at:
            raise _Interrupt

    record = fit(
        model,
        data.train,
        objective,
        schedule,
        threat(0.2),
        settings=SETTINGS,
        val=data.val,
        seed=5,
        on_batch=hook,
        checkpoint_dir=directory,
        resume=resume,
    )
    return model, objective, record


def test_resume_restores_the_carried_perturbations_and_the_policy_bit_exactly(digits: Dataset, tmp_path: Path) -> None:
    data = small(digits)
    model_a, objective_a, record_a = _run(data, tmp_path / "a")
    with pytest.raises(_Interrupt):
        _run(data, tmp_path / "b", interrupt_at=(3, 2))  # killed during the last epoch
    model_b, objective_b, record_b = _run(data, tmp_path / "b", resume=True)
    assert record_b.resumed_at_epoch == 3
    for (k, a), b in zip(model_a.state_dict().items(), model_b.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    assert torch.equal(objective_a.carry.q, objective_b.carry.q)  # type: ignore[arg-type]
    assert torch.equal(objective_a.carry.seen, objective_b.carry.seen)  # type: ignore[arg-type]
    assert record_a.gradient_evaluations == record_b.gradient_evaluations
    assert record_a.policy_gradient_evaluations == record_b.policy_gradient_evaluations > 0
    assert record_a.history == [
        dict(h, wall_time_s=a["wall_time_s"]) for h, a in zip(record_b.history, record_a.history, strict=True)
    ]
    assert record_a.events == record_b.events
    assert any(e["kind"] == "policy-transition" for e in record_a.events)  # the policy state was resumed too


def _fake_accuracy(cheap: float, strong: float):
    """robust_accuracy as if the stage's attack (few steps) reported ``cheap`` and PGD-10 ``strong``."""

    class Result:
        def __init__(self, correct: torch.Tensor) -> None:
            self.correct = correct

    def fake(model, split, attack, threat, rng=None, **kwargs):
        n = len(split)
        if attack.n_steps < 10:  # the cheap attack, on every held-out example
            return Result(torch.arange(n) < round(cheap * n))
        # PGD-10 on the cheap attack's survivors: all but a ``strong`` fraction of the whole batch break
        total = round(n / cheap)
        return Result(torch.arange(n) < round(strong * total))

    return fake


def test_an_injected_gap_strengthens_the_attack_and_is_recorded(
    digits: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = small(digits)
    monkeypatch.setattr(trainer_module, "robust_accuracy", _fake_accuracy(cheap=0.8, strong=0.3))
    stages = ({"epochs": 5, "eps": 0.2, "n_steps": 1, "start": "carry"},)
    objective, schedule = build_method(
        "progressive-trades", MethodConfig(eps=0.2, n_steps=4, stages=stages, policy="gap")
    )
    assert schedule.policy == GapPolicy(max_steps=4)
    record = fit_small(data, objective, schedule)
    assert [h["n_steps"] for h in record.history] == [1, 1, 1, 2, 4]  # two warm-up epochs
    transitions = [e for e in record.events if e["kind"] == "policy-transition"]
    assert [(e["epoch"], e["from_steps"], e["to_steps"], e["action"]) for e in transitions] == [
        (2, 1, 2, "strengthen"),
        (3, 2, 4, "strengthen"),
    ]
    assert transitions[0]["gap"] == pytest.approx(0.5, abs=0.02) and "exceeds PGD-10x1" in transitions[0]["reason"]
    assert 0.2 < transitions[0]["gap_lower"] < transitions[0]["gap"]
    assert all(h["policy_gap"] == pytest.approx(0.5, abs=0.02) for h in record.history)
    assert record.to_dict()["policy"]["name"] == "gap"


def test_the_policy_acts_on_evidence_not_on_noise() -> None:
    policy = GapPolicy()  # gap 0.2 at 95% confidence
    # 25 of 100 examples broken only by the strong attack: a gap of 0.25, but 0.2 is within its noise
    assert policy.lower_bound(torch.arange(100) < 25) < policy.gap
    # the same gap on 300 examples is evidence
    assert policy.lower_bound(torch.arange(300) < 75) > policy.gap
    assert GapPolicy(confidence=0.5).lower_bound(torch.arange(100) < 25) == pytest.approx(0.25)
    with pytest.raises(ConfigError, match="confidence"):
        GapPolicy(confidence=0.3)


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 500), k=st.integers(0, 500), confidence=st.floats(0.5, 0.999))
def test_the_policy_bound_never_exceeds_the_measured_gap(n: int, k: int, confidence: float) -> None:
    broken = torch.arange(n) < min(k, n)
    bound = GapPolicy(confidence=confidence).lower_bound(broken)
    assert bound <= float(broken.float().mean()) + 1e-12


def fit_small(data: Dataset, objective: Any, schedule: Any) -> Any:
    """A tiny model trained at eps 0.2, validated on ``data.val`` (where the gap policy measures)."""
    return fit(
        tiny(),
        data.train,
        objective,
        schedule,
        threat(0.2),
        settings=TrainSettings(batch_size=32, val_examples=0),
        val=data.val,
    )


def test_no_gap_no_transition(digits: Dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    data = small(digits)
    monkeypatch.setattr(trainer_module, "robust_accuracy", _fake_accuracy(cheap=0.5, strong=0.45))
    stages = ({"epochs": 2, "eps": 0.2, "n_steps": 1, "start": "carry"},)
    objective, schedule = build_method("progressive-trades", MethodConfig(eps=0.2, stages=stages, policy="gap"))
    record = fit_small(data, objective, schedule)
    assert [h["n_steps"] for h in record.history] == [1, 1]
    assert not [e for e in record.events if e["kind"] == "policy-transition"]


def test_policy_measurements_are_counted_as_training_compute(digits: Dataset) -> None:
    data = small(digits)
    stages = ({"epochs": 1, "eps": 0.2, "n_steps": 1, "start": "carry"},)
    plain_obj, plain = build_method("progressive-trades", MethodConfig(eps=0.2, stages=stages))
    gap_obj, gap = build_method("progressive-trades", MethodConfig(eps=0.2, stages=stages, policy="gap"))
    kw = {"settings": TrainSettings(batch_size=32, val_examples=0), "val": data.val}
    a = fit(tiny(), data.train, plain_obj, plain, threat(0.2), **kw)
    b = fit(tiny(), data.train, gap_obj, gap, threat(0.2), **kw)
    assert b.policy_gradient_evaluations > 0
    assert b.gradient_evaluations == a.gradient_evaluations + b.policy_gradient_evaluations


def test_schedule_and_policy_config_is_plain_validated_data(digits: Dataset) -> None:
    schedule = Schedule.from_list([{"epochs": 1, "eps": 0.1, "n_steps": 1, "start": "carry"}])
    assert schedule.to_list()[0]["start"] == "carry"
    with pytest.raises(ConfigError, match="start"):
        Stage(epochs=1, eps=0.1, start="gaussian")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="unknown key"):
        Schedule.from_list([{"epochs": 1, "eps": 0.1, "carry": True}])
    with pytest.raises(ConfigError, match="unknown key"):
        GapPolicy.from_dict({"gap": 0.1, "patience": 2})
    with pytest.raises(ConfigError, match="gap"):
        GapPolicy(gap=1.5)
    with pytest.raises(ConfigError, match="unknown transition policy"):
        MethodConfig(policy="plateau").transition_policy()  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="only used by 'progressive-trades'"):
        build_method("trades", MethodConfig(policy="gap"))
    assert GapPolicy.from_dict(GapPolicy().to_dict()) == GapPolicy()
    with pytest.raises(ConfigError, match="needs validation data"):
        _, sched = build_method("progressive-trades", MethodConfig(eps=0.1, epochs=1, n_stages=1, policy="gap"))
        fit(tiny(), digits.train.take(32), TRADES(), sched, threat(0.1))
    with pytest.raises(ConfigError, match="cannot carry"):
        fit(tiny(), digits.train.take(32), PGDAT(), schedule, threat(0.1))
    assert TrainConfig.parse({"policy": "gap", "policy_gap": 0.2}).policy == "gap"
    with pytest.raises(ConfigError):
        TrainConfig.parse({"policy": "gap", "policy_patience": 2})
