"""Contract tests driven by the registry: every attack stays inside the threat model, on any box."""

from __future__ import annotations

import math

import pytest
import torch
from attack_fixtures import CHEAP, small_mlp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.attacks import ATTACKS
from bastion.domain import BoxDomain
from bastion.errors import ConfigError
from bastion.goals import Misclassify
from bastion.threat import ThreatModel

SHAPES = [(6,), (2, 3), (1, 4, 4), (2, 3, 5)]


@pytest.mark.parametrize("name", ATTACKS.names())
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    shape=st.sampled_from(SHAPES),
    n=st.integers(1, 4),
    norm=st.sampled_from(["linf", "l2"]),
    eps=st.floats(0.01, 2.0),
    lower=st.floats(-3.0, 1.0),
    width=st.floats(0.2, 4.0),
    seed=st.integers(0, 2**16),
)
def test_attack_stays_in_threat_model(name, shape, n, norm, eps, lower, width, seed) -> None:
    gen = torch.Generator().manual_seed(seed)
    d = math.prod(shape)
    model = small_mlp(d, 5, seed)
    domain = BoxDomain(torch.tensor(lower), torch.tensor(lower + width))
    x = lower + width * torch.rand((n, *shape), generator=gen)
    y = torch.randint(0, 5, (n,), generator=gen)
    threat = ThreatModel(norm=norm, eps=eps, domain=domain)
    attack = ATTACKS.create(name, **CHEAP.get(name, {}))
    if not attack.supports(norm):
        with pytest.raises(ConfigError, match="L2"):
            attack(model, x, Misclassify(y), threat, rng=gen)
        return
    model.train()
    result = attack(model, x, Misclassify(y), threat, rng=gen)
    assert model.training, "the attack must restore the model's mode"
    assert result.x_adv.shape == x.shape and result.success.shape == (n,)
    assert (threat.distance(result.x_adv, x) <= eps * (1 + 1e-5) + 1e-6).all()
    assert domain.is_feasible(result.x_adv, x).all()
    assert result.n_forward >= n  # the clean pass; attacks that score their output spare the final one
    with torch.no_grad():
        wrong = model.eval()(result.x_adv).argmax(1) != y
    assert torch.equal(wrong, result.success), "success must be judged on the returned examples"
    if result.n_queries is not None:
        assert result.n_queries.shape == (n,) and (result.n_queries >= 2).all()
        assert int(result.n_queries.sum()) <= result.n_forward
    if result.min_norm is not None:
        assert (result.min_norm >= 0).all()


@pytest.mark.parametrize("name", ATTACKS.names())
def test_attack_at_eps_zero_returns_clean_inputs(name, gen) -> None:
    model = small_mlp(6, 5)
    x, y = torch.rand(4, 6, generator=gen), torch.randint(0, 5, (4,), generator=gen)
    threat = ThreatModel(norm="l2", eps=0.0)
    result = ATTACKS.create(name, **CHEAP.get(name, {}))(model, x, Misclassify(y), threat, rng=gen)
    assert torch.equal(result.x_adv, x)
    assert torch.equal(result.success, model(x).argmax(1) != y)


@pytest.mark.parametrize("name", ATTACKS.names())
def test_attack_skips_examples_already_misclassified(name, gen) -> None:
    model = small_mlp(6, 5)
    x = torch.rand(6, 6, generator=gen)
    wrong = (model(x).argmax(1) + 1) % 5
    result = ATTACKS.create(name, **CHEAP.get(name, {}))(
        model, x, Misclassify(wrong), ThreatModel(norm="l2", eps=0.5), rng=gen
    )
    assert torch.equal(result.x_adv, x) and result.success.all()
    assert result.n_backward == 0 and result.n_forward == 6  # the clean pass only: nothing left to attack or re-check
