"""Training: schedules validate, objectives learn, compute is counted exactly."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bastion.data import Dataset, Split
from bastion.errors import ConfigError
from bastion.models.registry import Architecture, build_model
from bastion.threat import ThreatModel
from bastion.training import PGDAT, TRADES, Schedule, Stage, Standard, TrainSettings, fit, progressive


def test_progressive_schedule_grows() -> None:
    s = progressive(epochs=10, eps=0.3, n_stages=3, max_steps=10, min_steps=1)
    assert s.total_epochs == 10 and len(s.stages) == 3
    eps = [st.eps for st in s.stages]
    steps = [st.n_steps for st in s.stages]
    assert eps == sorted(eps) and eps[-1] == pytest.approx(0.3)
    assert steps == [1, 6, 10] or steps == sorted(steps)
    assert s.stage_at(0)[0] == 0 and s.stage_at(9)[0] == 2


@pytest.mark.parametrize(
    ("stages", "match"),
    [
        ([{"epochs": 1, "eps": 0.2}, {"epochs": 1, "eps": 0.1}], "eps may not decrease"),
        (
            [{"epochs": 1, "eps": 0.1, "n_steps": 5}, {"epochs": 1, "eps": 0.2, "n_steps": 2}],
            "steps may not decrease",
        ),
        ([{"epochs": 1, "eps": 0.1, "n_steps": 0}], "n_steps"),
        ([{"epochs": 1, "eps": 0.1, "beta": -1}], "beta"),
        ([{"epochs": 0, "eps": 0.1}], "epochs"),
        ([{"epochs": 1, "eps": 0.1, "steps": 3}], "unknown key"),
        ([], "at least one stage"),
    ],
)
def test_bad_schedules_are_rejected(stages, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Schedule.from_list(stages)


def _tiny(digits: Dataset, seed: int = 0) -> nn.Module:
    arch = Architecture(
        name="mlp", input_shape=(1, 8, 8), num_classes=10, mean=(0.3,), std=(0.4,), options={"hidden": [32]}
    )
    return build_model(arch, seed=seed)


def test_gradient_evaluations_match_the_analytic_count(digits: Dataset) -> None:
    """Per example and epoch, TRADES with K steps costs K attack backward passes plus the outer loss's
    backward through both its branches (clean and adversarial logits): K + 2."""
    train = digits.train.take(100)
    schedule = Schedule((Stage(epochs=2, eps=0.05, n_steps=1), Stage(epochs=1, eps=0.1, n_steps=4)))
    threat = ThreatModel(norm="linf", eps=0.1)
    record = fit(
        _tiny(digits),
        train,
        TRADES(),
        schedule,
        threat,
        settings=TrainSettings(batch_size=32, val_examples=0),
    )
    assert record.gradient_evaluations == 100 * (2 * (1 + 2) + 1 * (4 + 2))
    # forwards: clean + K attack steps + adversarial = K + 2 per example and epoch
    assert record.forward_passes == 100 * (2 * (1 + 2) + 1 * (4 + 2))
    assert [s["gradient_evaluations"] for s in record.stages] == [600, 600]
    std = fit(
        _tiny(digits),
        train,
        Standard(),
        Schedule((Stage(epochs=3, eps=0.0),)),
        threat,
        settings=TrainSettings(batch_size=32, val_examples=0),
    )
    assert std.gradient_evaluations == 300


def test_trades_with_beta_zero_is_standard_training(digits: Dataset) -> None:
    train = digits.train.take(200)
    threat = ThreatModel(norm="linf", eps=0.1)
    settings = TrainSettings(batch_size=50, val_examples=0)
    a, b = _tiny(digits), _tiny(digits)
    fit(a, train, Standard(), Schedule((Stage(epochs=2, eps=0.1, beta=0.0),)), threat, settings=settings)
    fit(b, train, TRADES(), Schedule((Stage(epochs=2, eps=0.1, beta=0.0),)), threat, settings=settings)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


@pytest.mark.parametrize("objective", [Standard(), PGDAT(), TRADES()], ids=lambda o: o.name)
def test_each_objective_lowers_its_own_loss(digits: Dataset, objective) -> None:
    train = digits.train.take(512)
    stage = Stage(epochs=5, eps=0.05, n_steps=3)
    threat = ThreatModel(norm="linf", eps=0.05)
    record = fit(
        _tiny(digits),
        train,
        objective,
        Schedule((stage,)),
        threat,
        settings=TrainSettings(batch_size=32, lr=1e-2, val_examples=0),
    )
    losses = [h["loss"] for h in record.history]
    assert losses[-1] < 0.7 * losses[0], losses


def test_training_is_deterministic_for_a_seed(digits: Dataset) -> None:
    train = digits.train.take(128)
    threat = ThreatModel(norm="linf", eps=0.1)
    runs = []
    for _ in range(2):
        m = _tiny(digits, seed=5)
        fit(
            m,
            train,
            TRADES(),
            Schedule((Stage(epochs=1, eps=0.1, n_steps=2),)),
            threat,
            settings=TrainSettings(batch_size=32, val_examples=0),
            seed=5,
        )
        runs.append(torch.cat([p.flatten() for p in m.parameters()]))
    assert torch.equal(runs[0], runs[1])


def test_non_finite_loss_stops_training(digits: Dataset) -> None:
    bad = Split(torch.rand(8, 1, 8, 8), torch.zeros(8, dtype=torch.long))
    model = _tiny(digits)
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="non-finite training loss"):
        fit(
            model,
            bad,
            Standard(),
            Schedule((Stage(epochs=1, eps=0.0),)),
            ThreatModel(norm="linf", eps=0.0),
            settings=TrainSettings(val_examples=0),
        )


def test_trades_gradients_stay_finite_when_clean_predictions_saturate() -> None:
    """A clean softmax that underflows to exact zeros must not turn the TRADES outer loss into NaN.

    Regression: with probabilities as the KL target, d/dp of p*log(p) at p = 0 is -inf and the weights
    became NaN after a few hundred GTSRB batches.
    """

    class Saturated(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.ones(4, 3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            logits = x.flatten(1) @ self.w
            return logits * torch.tensor([1.0, 0.0, 0.0]) * 200.0  # softmax of class 0 is exactly 1.0

    model = Saturated()
    x = torch.full((6, 4), 0.9)
    y = torch.zeros(6, dtype=torch.long)
    assert (model(x).softmax(1) == 0).any()
    out = TRADES()(model, x, y, Stage(epochs=1, eps=0.05, n_steps=2), ThreatModel(norm="linf", eps=0.05), None)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert torch.isfinite(model.w.grad).all()
