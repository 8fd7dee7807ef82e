"""Training objectives ``(model, x, y, stage, threat, rng) -> LossOutput``, one per method, from the papers.

Every objective calls the model it is given; the trainer hands in a counting wrapper, so the attack's
passes and the training pass are all counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.attacks.losses import kl_to_reference
from bastion.attacks.pgd import PGD
from bastion.goals import Diverge, Misclassify
from bastion.threat import ThreatModel
from bastion.training.schedules import Stage


def _f(t: Tensor) -> float:
    return float(t.detach())


@dataclass
class LossOutput:
    loss: Tensor
    metrics: dict[str, float] = field(default_factory=dict)


class Objective(Protocol):
    name: str

    def __call__(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        stage: Stage,
        threat: ThreatModel,
        rng: torch.Generator | None,
    ) -> LossOutput: ...


def _inner_attack(stage: Stage, loss: object) -> PGD:
    """The training-time attack: no early stop, last iterate (the paper's inner maximisation)."""
    return PGD(
        n_steps=stage.n_steps,
        rel_step_size=stage.step_fraction,
        loss=loss,  # type: ignore[arg-type]
        early_stop=False,
        keep_best_iterate=False,
    )


@dataclass(frozen=True)
class Standard:
    """Empirical risk minimisation: cross-entropy on clean inputs."""

    name: str = "standard"

    def __call__(self, model, x, y, stage, threat, rng):  # type: ignore[no-untyped-def]
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        return LossOutput(loss, {"loss": _f(loss), "acc": float((logits.argmax(1) == y).float().mean())})


@dataclass(frozen=True)
class PGDAT:
    """Madry et al. 2018: cross-entropy on PGD examples (inner max of the same loss)."""

    name: str = "pgd-at"

    def __call__(self, model, x, y, stage, threat, rng):  # type: ignore[no-untyped-def]
        from bastion.attacks.losses import cross_entropy

        threat = threat.with_eps(stage.eps)
        x_adv = _inner_attack(stage, cross_entropy).perturb(model, x, Misclassify(y), threat, rng=rng)
        logits = model(x_adv)
        loss = F.cross_entropy(logits, y)
        return LossOutput(loss, {"loss": _f(loss), "adv_acc": float((logits.argmax(1) == y).float().mean())})


@dataclass(frozen=True)
class TRADES:
    """Zhang et al. 2019 (arXiv:1901.08573): CE(f(x), y) + beta * KL(f(x) || f(x')).

    x' maximises the KL to the clean prediction inside the ball. With beta = 0 (or eps = 0) no attack is
    run and the objective is exactly standard training. The progressive multi-stage variant is this
    objective under a ``progressive`` schedule.
    """

    name: str = "trades"

    def __call__(self, model, x, y, stage, threat, rng):  # type: ignore[no-untyped-def]
        logits = model(x)
        natural = F.cross_entropy(logits, y)
        if stage.beta == 0 or stage.eps == 0:
            return LossOutput(natural, {"loss": _f(natural), "natural": _f(natural), "robust": 0.0})
        threat = threat.with_eps(stage.eps)
        ref = logits.detach().softmax(dim=1)
        x_adv = _inner_attack(stage, kl_to_reference).perturb(model, x, Diverge(ref), threat, rng=rng)
        adv_logits = model(x_adv)
        robust = kl_to_reference(adv_logits, logits.softmax(dim=1)).mean()
        loss = natural + stage.beta * robust
        return LossOutput(loss, {"loss": _f(loss), "natural": _f(natural), "robust": _f(robust)})
