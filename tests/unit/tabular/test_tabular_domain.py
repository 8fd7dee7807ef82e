"""TabularDomain: projection and repair yield legal records inside the ball; attacks keep immutables."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from synthetic import SCHEMA, fitted
from torch import nn

from bastion.attacks import ATTACKS, PGD, CoordinateSearch
from bastion.data.spec import DatasetSpec, domain_from_dict
from bastion.data.tabular import validate_raw
from bastion.data.tabular.domain import TabularDomain, project_simplex
from bastion.domain import BoxDomain
from bastion.goals import Misclassify, Reach
from bastion.models.registry import Architecture, build_model, normalization_stats
from bastion.threat import ThreatModel

PRE, RAW, Y = fitted(200)
DOMAIN = TabularDomain(PRE)
X = torch.tensor(PRE.transform(RAW))
D = X.shape[1]
CHEAP = {"pgd": {"n_steps": 5}, "search": {"n_iters": 4, "n_candidates": 4}}


@pytest.fixture(scope="module")
def model() -> nn.Module:
    mean, std = normalization_stats(X)
    # Four classes, so attacks whose losses need >= 3 or 4 classes (DLR) run in the registry-wide test too.
    arch = Architecture(name="mlp", input_shape=(D,), num_classes=4, mean=mean, std=std, options={"hidden": [16]})
    return build_model(arch, seed=0).eval()


def test_clean_rows_are_feasible() -> None:
    assert DOMAIN.is_feasible(X, X).all()
    assert DOMAIN.is_feasible(X).all()


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    scale=st.floats(0.01, 3.0),
    norm=st.sampled_from(["linf", "l2"]),
    eps=st.floats(0.01, 2.0),
)
def test_projection_then_repair_is_feasible_and_inside_the_ball(seed: int, scale: float, norm: str, eps: float) -> None:
    """Any model-space point, after the threat's projection and the domain's repair, is a legal record in
    the ball that keeps every immutable feature, and the independent raw validator agrees."""
    g = torch.Generator().manual_seed(seed)
    ref = X[:32]
    z = ref + scale * torch.randn(ref.shape, generator=g)
    threat = ThreatModel(norm=norm, eps=eps, domain=DOMAIN)
    out = DOMAIN.repair(threat.project(z, ref), ref)
    assert DOMAIN.is_feasible(out, ref).all()
    assert (threat.distance(out, ref) <= eps + 1e-5).all()
    assert torch.equal(out[:, DOMAIN.immutable], ref[:, DOMAIN.immutable])
    raw = DOMAIN.raw_records(out)
    assert validate_raw(raw, SCHEMA, reference=RAW.iloc[:32].reset_index(drop=True)).all()


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(1, 6))
def test_simplex_projection_is_exact(seed: int, k: int) -> None:
    v = torch.randn(5, k, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 3
    p = project_simplex(v)
    assert torch.allclose(p.sum(1), torch.ones(5, dtype=torch.float64))
    assert (p >= 0).all()
    # Optimality: no random simplex point is closer to v than p.
    other = torch.distributions.Dirichlet(torch.ones(k, dtype=torch.float64)).sample((5, 50))
    assert ((other - v[:, None]).norm(dim=-1) >= (p - v).norm(dim=-1)[:, None] - 1e-9).all()


def test_repair_rounds_toward_the_reference() -> None:
    ref = X[:1].clone()
    col = PRE.feature_slices_["total"].start
    step = 1 / 40
    x = ref.clone()
    x[0, col] = ref[0, col] + 0.6 * step if ref[0, col] < 0.5 else ref[0, col] - 0.6 * step
    out = DOMAIN.repair(x, ref)
    assert out[0, col] == ref[0, col]  # nearest would be one step away, outside a 0.6-step ball
    x[0, col] = ref[0, col] + 1.4 * step if ref[0, col] < 0.5 else ref[0, col] - 1.4 * step
    out = DOMAIN.repair(x, ref)
    assert abs(abs(float(out[0, col] - ref[0, col])) - step) < 1e-6


def test_repair_fixes_a_broken_relation() -> None:
    ref = X[:50]
    x = ref.clone()
    x[:, PRE.feature_slices_["subset"].start] = 1.0  # subset = 40 >= total for most rows
    x[:, PRE.feature_slices_["total"].start] = 0.0
    assert not DOMAIN.is_feasible(DOMAIN.project(x, ref), ref).all()
    out = DOMAIN.repair(x, ref)
    assert DOMAIN.is_feasible(out, ref).all()
    assert (DOMAIN.violation(out) == 0).all()
    assert (DOMAIN.violation(x) > 0).any()


def test_violation_is_differentiable() -> None:
    x = X[:4].clone().requires_grad_(True)
    DOMAIN.violation(x * 0 + 1).sum().backward()
    assert x.grad is not None


def test_domain_round_trips_through_json_in_a_spec() -> None:
    spec = DatasetSpec(
        name="synthetic",
        source="csv:x",
        modality="tabular",
        classes=("benign", "malicious"),
        input_shape=(D,),
        domain=DOMAIN,
        benign=0,
        feature_names=PRE.columns_,
    )
    import json

    again = DatasetSpec.from_dict(json.loads(json.dumps(spec.to_dict(), sort_keys=True)))  # as model.json
    assert isinstance(again.domain, TabularDomain)
    assert again.domain.preprocessor.columns_ == PRE.columns_
    assert again.fingerprint() == spec.fingerprint()
    assert isinstance(domain_from_dict(BoxDomain.unit().to_dict()), BoxDomain)
    z = X[:8] + 0.2
    assert torch.equal(again.domain.repair(z, X[:8]), DOMAIN.repair(z, X[:8]))


@pytest.mark.parametrize("name", ATTACKS.names())
@pytest.mark.parametrize("norm,eps", [("linf", 0.3), ("l2", 1.5)])
def test_every_attack_keeps_immutables_and_feasibility(name: str, norm: str, eps: float, model: nn.Module) -> None:
    attack = ATTACKS.create(name, **CHEAP.get(name, {}))
    if not attack.supports(norm):
        pytest.skip(f"{name} is not defined for {norm}")
    threat = ThreatModel(norm=norm, eps=eps, domain=DOMAIN)
    x = X[:64]
    with torch.no_grad():
        y = model(x).argmax(1)
    result = attack(model, x, Misclassify(y), threat, rng=torch.Generator().manual_seed(0))
    assert torch.equal(result.x_adv[:, DOMAIN.immutable], x[:, DOMAIN.immutable])
    assert threat.contains(result.x_adv, x, atol=1e-5).all()
    assert validate_raw(DOMAIN.raw_records(result.x_adv), SCHEMA, reference=RAW.iloc[:64].reset_index(drop=True)).all()


class NoBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):  # type: ignore[no-untyped-def, override]
        return x.clone()

    @staticmethod
    def backward(ctx, grad):  # type: ignore[no-untyped-def, override]
        raise AssertionError("backward was called")


class ForwardOnly(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(NoBackward.apply(x))


def test_search_attack_never_calls_backward_and_still_evades(model: nn.Module) -> None:
    guarded = ForwardOnly(model)
    threat = ThreatModel(norm="linf", eps=0.5, domain=DOMAIN)
    with pytest.raises(AssertionError, match="backward"):  # the guard works
        PGD(n_steps=1)(guarded, X[:8], Misclassify(model(X[:8]).argmax(1).detach()), threat)
    pred = model(X).argmax(1)
    malicious = (pred == 1).nonzero().squeeze(1)[:40]
    x = X[malicious]
    result = CoordinateSearch(n_iters=10, n_candidates=8)(
        guarded, x, Reach(torch.zeros(len(x), dtype=torch.long)), threat, rng=torch.Generator().manual_seed(0)
    )
    assert result.n_backward == 0
    assert result.success.float().mean() > 0.3
    assert DOMAIN.is_feasible(result.x_adv, x).all()


def test_search_moves_categories_only_when_the_ball_allows() -> None:
    """A category switch moves two one-hot columns by 1: impossible at L-inf eps < 1, possible at 1."""
    mode = PRE.feature_slices_["mode"]

    def wants_mode_c(x: torch.Tensor) -> torch.Tensor:
        return torch.stack([x[:, mode.stop - 1] * 0, x[:, mode.stop - 1]], dim=1) * 10

    ref = X[torch.tensor(RAW["mode"].to_numpy() != "c")][:20]
    goal = Reach(torch.ones(len(ref), dtype=torch.long))
    small = CoordinateSearch(n_iters=5, n_candidates=8)(
        wants_mode_c, ref, goal, ThreatModel(norm="linf", eps=0.9, domain=DOMAIN)
    )
    assert not small.success.any()
    big = CoordinateSearch(n_iters=10, n_candidates=8)(
        wants_mode_c, ref, goal, ThreatModel(norm="linf", eps=1.0, domain=DOMAIN), rng=torch.Generator().manual_seed(1)
    )
    assert big.success.all()
    assert np.all(DOMAIN.raw_records(big.x_adv)["mode"].to_numpy() == "c")
