"""Probed: the expensive attack goes to every example only when the probe or the gradients call for it."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from attack_fixtures import small_mlp
from torch import Tensor, nn

from bastion.attacks import APGD, APGDT, Attack, cross_entropy
from bastion.attacks.probe import Probed, boundary_order
from bastion.goals import Goal, Misclassify
from bastion.threat import ThreatModel


@dataclass(frozen=True, kw_only=True)
class Recorder(Attack):
    """Remembers how many examples each call attacked; ``shift`` moves every input (0: never succeeds)."""

    shift: float = 0.0
    calls: list[int] = field(default_factory=list)
    early_stop: bool = False

    def _perturb(
        self, model: nn.Module, x: Tensor, goal: Goal, threat: ThreatModel, rng: torch.Generator | None
    ) -> Tensor:
        self.calls.append(x.shape[0])
        return x + self.shift


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


def test_a_probe_that_breaks_one_sends_the_attack_to_every_example() -> None:
    model, x, y = batch()
    base = Recorder(shift=0.1)  # the sign of nothing: a big uniform move flips some predictions
    with torch.no_grad():
        flips = model((x + 0.1).clamp(0, 1)).argmax(1) != y
    order = boundary_order(model(x).detach(), Misclassify(y))
    assert flips[order[:8]].any(), "fixture: the shift must break one of the probe's examples"
    Probed(base=base, n_probe=8)(model, x, Misclassify(y), THREAT)
    assert base.calls == [8, 32]


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
