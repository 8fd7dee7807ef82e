"""ThreatModel geometry: projections land in ball ∩ domain, random starts too, whatever the norm and box."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.domain import BoxDomain
from bastion.errors import InputValidationError
from bastion.threat import ThreatModel

norms = st.sampled_from(["linf", "l2"])


@st.composite
def boxed_batches(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor, BoxDomain]:
    """A batch x inside a random per-feature box, and an arbitrary far-away x_adv."""
    n = draw(st.integers(1, 6))
    d = draw(st.integers(1, 12))
    seed = draw(st.integers(0, 2**16))
    g = torch.Generator().manual_seed(seed)
    lower = torch.randn(d, generator=g) * 3
    upper = lower + torch.rand(d, generator=g) * 5
    x = lower + (upper - lower) * torch.rand(n, d, generator=g)
    x_adv = x + torch.randn(n, d, generator=g) * draw(st.floats(0.01, 100))
    return x, x_adv, BoxDomain(lower, upper)


@settings(max_examples=60, deadline=None)
@given(boxed_batches(), norms, st.floats(0, 10))
def test_project_lands_in_ball_and_domain(batch, norm, eps) -> None:
    x, x_adv, domain = batch
    threat = ThreatModel(norm=norm, eps=eps, domain=domain)
    p = threat.project(x_adv, x)
    assert (threat.distance(p, x) <= eps * (1 + 1e-5) + 1e-5).all()
    assert domain.is_feasible(p).all()


@settings(max_examples=40, deadline=None)
@given(boxed_batches(), norms, st.floats(0, 10))
def test_random_start_lands_in_ball_and_domain(batch, norm, eps) -> None:
    x, _, domain = batch
    threat = ThreatModel(norm=norm, eps=eps, domain=domain)
    r = threat.random_start(x, torch.Generator().manual_seed(0))
    assert threat.contains(r, x, atol=1e-5).all()


def test_projection_is_idempotent_and_keeps_interior_points() -> None:
    x = torch.full((3, 4), 0.5)
    threat = ThreatModel(norm="linf", eps=0.1)
    inside = x + 0.05
    assert torch.equal(threat.project(inside, x), inside)
    once = threat.project(x + 1.0, x)
    assert torch.allclose(threat.project(once, x), once)


def test_steepest_has_unit_norm() -> None:
    g = torch.randn(5, 7)
    assert torch.allclose(ThreatModel(norm="l2", eps=1).steepest(g).norm(dim=1), torch.ones(5))
    assert set(ThreatModel(norm="linf", eps=1).steepest(g).unique().tolist()) <= {-1.0, 1.0}


@pytest.mark.parametrize("eps", [-0.1, float("nan"), float("inf")])
def test_bad_eps_is_rejected(eps: float) -> None:
    with pytest.raises(InputValidationError, match="eps"):
        ThreatModel(norm="linf", eps=eps)


def test_unknown_norm_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown norm 'l3'"):
        ThreatModel(norm="l3", eps=0.1)  # type: ignore[arg-type]


def test_box_rejects_inverted_bounds() -> None:
    with pytest.raises(InputValidationError, match="lower bound exceeds"):
        BoxDomain(torch.tensor([1.0]), torch.tensor([0.0]))
