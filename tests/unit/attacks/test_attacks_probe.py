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
    """Remembers how many examples each call attacked; ``shift`` moves every input (0: never succeeds) in
    the first ``shifted_calls`` calls (None: all)."""

    shift: float = 0.0
    shifted_calls: int | None = None
    calls: list[int] = field(default_factory=list)
    early_stop: bool = False

    def _perturb(
        self, model: nn.Module, x: Tensor, goal: Goal, threat: ThreatModel, rng: torch.Generator | None
    ) -> Tensor:
        self.calls.append(x.shape[0])
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
