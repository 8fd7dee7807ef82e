"""PGD-AT with a clean share on constrained tabular rows: it trains on examples inside the stage's budget
and every constraint (bounds, immutables, grids, if-then rules), and a few steps of it lower its loss.
(The weighing of the two losses and the refused weights are tested in test_training_methods.py.)"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from bastion.data.tabular import Feature, FeatureKind, TabularPreprocessor, TabularSchema
from bastion.data.tabular.constraints import ConstraintSet
from bastion.data.tabular.domain import TabularDomain
from bastion.threat import ThreatModel
from bastion.training import PGDAT, Stage

SCHEMA = TabularSchema(
    name="pgdat-toy",
    features=(
        Feature(name="flag", kind=FeatureKind.CATEGORICAL, values=("SF", "REJ"), mutable=False),
        Feature(name="dst_bytes", kind=FeatureKind.INTEGER, bounds=(0, float("inf")), log_scale=True),
        Feature(name="rate", kind=FeatureKind.CONTINUOUS, bounds=(0, 1)),
        Feature(name="count", kind=FeatureKind.INTEGER, bounds=(0, 100)),
    ),
    label="label",
    classes=("benign", "malicious"),
    benign=0,
)
RULES = ConstraintSet.from_dict(
    {
        "format": "bastion-constraints/1",
        "dataset": "pgdat-toy",
        "grids": [{"features": ["rate"], "decimals": 2}],
        "rules": [{"name": "rejected carry no bytes", "if": {"flag": {"eq": "REJ"}}, "then": {"dst_bytes": {"eq": 0}}}],
    }
)
STAGE = Stage(epochs=1, eps=0.1, n_steps=5, beta=0.0)


def toy(n: int = 128, seed: int = 0) -> tuple[ThreatModel, Tensor, Tensor]:
    """Rows that keep the rule, labels that depend on the mutable features, and a threat wider than STAGE."""
    rng = np.random.default_rng(seed)
    flag = rng.choice(["SF", "REJ"], n)
    raw = pd.DataFrame(
        {
            "flag": flag.astype(object),
            "dst_bytes": np.where(flag == "REJ", 0, rng.integers(0, 50_000, n)).astype(np.int64),
            "rate": rng.integers(0, 101, n) / 100,
            "count": rng.integers(0, 101, n).astype(np.int64),
        }
    )
    pre = TabularPreprocessor(SCHEMA).fit(raw)
    x = torch.tensor(pre.transform(raw))
    y = torch.tensor(((raw["rate"] + raw["count"] / 100) > 1).to_numpy().astype(np.int64))
    threat = ThreatModel(norm="linf", eps=0.5, domain=TabularDomain(pre, RULES))
    assert threat.domain.is_feasible(x).all()
    return threat, x, y


class Recorder(nn.Module):
    """The model, keeping the last batch it was called on (the objective's last call is on x_adv)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.last = model, torch.empty(0)

    def forward(self, x: Tensor) -> Tensor:
        self.last = x.detach().clone()
        return self.model(x)


def mlp(d: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(d, 16), nn.ReLU(), nn.Linear(16, 2))


def test_it_trains_on_examples_within_the_stage_budget_and_the_constraints() -> None:
    threat, x, y = toy()
    model = Recorder(mlp(x.shape[1]))
    PGDAT(clean_weight=0.5)(model, x, y, STAGE, threat, torch.Generator().manual_seed(0))
    x_adv = model.last
    assert x_adv.shape == x.shape and not torch.equal(x_adv, x)  # it did perturb
    assert (threat.distance(x_adv, x) <= STAGE.eps + 1e-6).all()  # the stage's eps, not the threat's 0.5
    assert threat.domain.is_feasible(x_adv, x).all()
    raw = threat.domain.raw_records(x_adv)
    assert (raw.loc[raw["flag"] == "REJ", "dst_bytes"] == 0).all()  # the rule, read back in raw units
    assert raw["flag"].tolist() == threat.domain.raw_records(x)["flag"].tolist()  # immutable


def test_a_few_steps_lower_the_loss() -> None:
    threat, x, y = toy()
    model = mlp(x.shape[1])
    objective, opt = PGDAT(clean_weight=0.5), torch.optim.Adam(model.parameters(), lr=1e-2)

    def loss_at(seed: int) -> float:
        return float(objective(model, x, y, STAGE, threat, torch.Generator().manual_seed(seed)).loss.detach())

    before = loss_at(99)
    for step in range(30):
        opt.zero_grad()
        objective(model, x, y, STAGE, threat, torch.Generator().manual_seed(step)).loss.backward()
        opt.step()
    assert loss_at(99) < 0.8 * before
