"""Probed: the expensive attack goes to every example only when the probe or the gradients call for it."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import torch
from attack_fixtures import small_mlp
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from bastion.attacks import APGD, APGDT, FGSM, Attack, cross_entropy
from bastion.attacks.losses import goal_score
from bastion.attacks.probe import Probed, boundary_order
from bastion.attacks.worst_case import merge, worst_case, worst_case_in_batches
from bastion.errors import InputValidationError
from bastion.goals import Goal, Misclassify, Reach
from bastion.threat import ThreatModel


@dataclass(frozen=True, kw_only=True)
class Recorder(Attack):
    """Remembers how many examples each call attacked; ``shift`` moves every input (0: never succeeds) in
    the first ``shifted_calls`` calls (None: all)."""

    shift: float = 0.0
    shifted_calls: int | None = None
    calls: list[int] = field(default_factory=list)
    inputs: list[Tensor] = field(default_factory=list)
    early_stop: bool = False

    def _perturb(
        self, model: nn.Module, x: Tensor, goal: Goal, threat: ThreatModel, rng: torch.Generator | None
    ) -> Tensor:
        self.calls.append(x.shape[0])
        self.inputs.append(x.clone())
        shifted = self.shifted_calls is None or len(self.calls) <= self.shifted_calls
        return x + (self.shift if shifted else 0.0)


class Rounded(nn.Module):
    """A model behind rounding: input gradients are exactly zero (the masking case Square is there for)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: Tensor) -> Tensor:
        return self.inner(torch.round(x * 4) / 4)


def batch(n: int = 40, n_classes: int = 3) -> tuple[nn.Module, Tensor, Tensor]:
    model = small_mlp(8, n_classes)
    x = torch.rand(n, 8, generator=torch.Generator().manual_seed(1))
    return model, x, model(x).argmax(1).detach()


THREAT = ThreatModel(norm="linf", eps=0.1)


def test_a_probe_that_breaks_nothing_on_healthy_gradients_spares_the_rest() -> None:
    model, x, y = batch()
    base = Recorder()
    result = Probed(base=base, n_probe=8)(model, x, Misclassify(y), THREAT)
    assert base.calls == [8]
    assert not result.success.any() and torch.equal(result.x_adv, x)


def test_chunks_double_while_the_attack_keeps_breaking_examples() -> None:
    model, x, y = batch()
    with torch.no_grad():
        flips = model((x + 0.6).clamp(0, 1)).argmax(1) != y
    order = boundary_order(model(x).detach(), Misclassify(y))
    assert flips[order[:8]].any() and flips[order[8:24]].any(), "fixture: the shift must break in both chunks"
    base = Recorder(shift=0.6)
    Probed(base=base, n_probe=8)(model, x, Misclassify(y), ThreatModel(norm="linf", eps=0.6))
    assert base.calls == [8, 16, 16]  # 8, then 16, then the 16 left (a chunk of 32 capped at the rest)


def test_a_chunk_that_breaks_nothing_ends_the_attack() -> None:
    model, x, y = batch()
    base = Recorder(shift=0.1, shifted_calls=1)  # breaks in the probe only
    result = Probed(base=base, n_probe=8)(model, x, Misclassify(y), THREAT)
    assert base.calls == [8, 16]
    assert result.success.any()


def test_zero_gradients_bypass_the_probe() -> None:
    model, x, _ = batch()
    rounded = Rounded(model)
    y = rounded(x).argmax(1)
    base = Recorder()
    Probed(base=base, n_probe=8)(rounded, x, Misclassify(y), THREAT)
    assert base.calls == [40]


def test_the_probe_takes_the_examples_nearest_the_boundary() -> None:
    model, x, y = batch()
    logits = model(x).detach()
    order = boundary_order(logits, Misclassify(y))
    loss = cross_entropy(logits, y)
    assert torch.all(loss[order][:-1] >= loss[order][1:])


def test_a_prior_score_puts_the_examples_earlier_attacks_brought_nearest_first() -> None:
    model, x, y = batch()
    prior = torch.randperm(40, generator=torch.Generator().manual_seed(3)).float()
    base = Recorder()
    Probed(base=base, n_probe_prior=4)(model, x, Misclassify(y), THREAT, prior_score=prior)
    assert torch.equal(base.inputs[0], x[prior.argsort()[:4]])


def test_a_prior_score_of_the_wrong_shape_is_refused() -> None:
    model, x, y = batch()
    with pytest.raises(InputValidationError, match="prior_score"):
        Probed(base=Recorder())(model, x, Misclassify(y), THREAT, prior_score=torch.zeros(39))


@dataclass(frozen=True, kw_only=True)
class PriorSpy(Attack):
    """Keeps the prior_score it is given and changes nothing."""

    seen: list[Tensor | None] = field(default_factory=list)

    def _perturb_after(self, model, x, goal, threat, rng, prior_score):
        self.seen.append(prior_score)
        return x

    def _perturb(self, model, x, goal, threat, rng):
        raise AssertionError("the sequence must go through _perturb_after")


def test_the_sequence_tells_each_attack_the_nearest_score_earlier_attacks_reached() -> None:
    model, x, y = batch(60)
    threat = ThreatModel(norm="linf", eps=0.05)
    spy = PriorSpy()
    result = worst_case(model, x, y, {"fgsm": FGSM(), "spy": spy}, threat)
    survivors = result.robust_after["fgsm"]
    assert 0 < int(survivors.sum()) < 60, "fixture: FGSM must break some examples and not all"
    x_fgsm = FGSM()(model, x, Misclassify(y), threat).x_adv
    with torch.no_grad():
        clean = goal_score(model(x), Misclassify(y))
        after_fgsm = goal_score(model(x_fgsm), Misclassify(y))
    expected = torch.minimum(clean, after_fgsm)[survivors]
    (prior,) = spy.seen
    assert prior is not None and torch.allclose(prior, expected)
    assert torch.allclose(result.nearest[survivors], expected)  # the spy moved nothing
    assert (result.nearest[~survivors] <= 0).all()  # broken or misclassified: at or past the boundary
    assert (prior < clean[survivors]).any(), "FGSM moved some survivors nearer the boundary"


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n_classes=st.integers(2, 6))
def test_goal_score_is_negative_exactly_when_the_goal_is_met(seed: int, n_classes: int) -> None:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(32, n_classes, generator=g)
    labels = torch.randint(0, n_classes, (32,), generator=g)
    for goal in (Misclassify(labels), Reach(labels)):
        score = goal_score(logits, goal)
        assert torch.equal(score < 0, goal.satisfied(logits))


def test_settled_apgd_breaks_what_full_apgd_breaks_with_fewer_gradients() -> None:
    model, x, y = batch(64, n_classes=5)
    threat = ThreatModel(norm="linf", eps=0.15)
    for full, settled in [
        (APGD(n_steps=60), APGD(n_steps=60, settle=3)),
        (APGDT(n_steps=60, n_targets=2), APGDT(n_steps=60, n_targets=2, settle=3)),
    ]:
        a = full(model, x, Misclassify(y), threat, rng=torch.Generator().manual_seed(0))
        b = settled(model, x, Misclassify(y), threat, rng=torch.Generator().manual_seed(0))
        assert int(b.success.sum()) >= int(a.success.sum()) - 1
        assert b.n_backward <= a.n_backward
        assert (b.x_adv - x).abs().max() <= threat.eps + 1e-6


def test_over_many_batches_the_probed_attack_runs_once_on_every_batchs_survivors() -> None:
    """One probe over the whole set instead of one per batch: the trailing Probed attack sees every
    batch's survivors at once, while the earlier attacks still run batch by batch, as ``worst_case`` would."""
    model, x, y = batch(60)
    threat = ThreatModel(norm="linf", eps=0.05)
    base = Recorder()
    suite = {"fgsm": FGSM(), "probed": Probed(base=base, n_probe_prior=1000)}
    batches = [(a, min(a + 16, 60)) for a in range(0, 60, 16)]
    whole = worst_case_in_batches(
        model, x, y, suite, threat, batches=batches, rng_of=lambda a: torch.Generator().manual_seed(a)
    )
    per_batch = [worst_case(model, x[a:b], y[a:b], {"fgsm": FGSM()}, threat) for a, b in batches]
    survivors = torch.cat([r.robust for r in per_batch])
    assert 0 < int(survivors.sum()) < 60, "fixture: FGSM must break some examples and not all"
    assert base.calls == [int(survivors.sum())]
    assert torch.equal(whole.robust_after["fgsm"], survivors)
    assert torch.equal(whole.nearest, torch.cat([r.nearest for r in per_batch]))
    assert whole.cost["fgsm"]["examples_attacked"] == sum(r.cost["fgsm"]["examples_attacked"] for r in per_batch)
    # Slices put back together give the whole, totals included.
    again = merge([whole.rows(a, b, first=a == 0) for a, b in batches])
    assert torch.equal(again.robust, whole.robust) and again.broken_by == whole.broken_by
    assert again.cost == whole.cost
