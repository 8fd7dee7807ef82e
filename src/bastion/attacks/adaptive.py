"""Adaptive attacks on runtime defenses (Athalye, Carlini & Wagner 2018, arXiv:1802.00420; Tramer et al.
2020, arXiv:2002.08347): a defense is only as good as the attack that targets it.

- BPDA: a non-differentiable transform g is kept in the forward pass and replaced by a differentiable
  approximation (the identity by default) in the backward pass. bastion's own squeezers already do this;
  :func:`bpda` wraps any other transform, and :class:`AdaptivePGD` wraps every transform of a defense
  marked ``differentiable = False``.
- EOT: for randomized defenses, the gradient is averaged over ``eot_samples`` random draws.
- Detector-aware: the objective adds ``-lambda * max(0, margin(x) + kappa)``, where ``margin`` is the
  defense's differentiable detection margin (> 0 means flagged), Carlini-Wagner style; an iterate
  counts as a success only when it is misclassified AND not flagged.
- Transfer: adversarial examples crafted on the undefended model, replayed on the defense.

These attacks expect the attacked model to be a defense: anything with the :class:`DefenseSurface` they
read (``model``, ``transforms``, ``detector``, ``detection_margin``, ``decide``), which
``bastion.defenses.DefendedClassifier`` and ``Defense`` provide. On a bare model they reduce to PGD.
``AttackResult.success`` reports misclassification only (the Goal protocol sees logits, not the
detector); :func:`evasion_success` gives "misclassified and not flagged".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import torch
from torch import Tensor, nn

from bastion._typing import Classifier, Loss
from bastion.attacks.base import Attack, keep_best
from bastion.attacks.losses import cross_entropy
from bastion.attacks.pgd import PGD
from bastion.compute import CountingModel
from bastion.errors import ConfigError
from bastion.goals import Goal
from bastion.threat import ThreatModel


class Verdict(Protocol):
    """What a defense decides per input: its label and whether its detector flagged the input."""

    @property
    def labels(self) -> Tensor: ...

    @property
    def flagged(self) -> Tensor: ...


class DefenseSurface(Protocol):
    """What the adaptive attacks read from a defense (``bastion.defenses.DefendedClassifier`` has it all).

    Declared here because attacks sit below defenses: a defense may use the attacks, never the reverse.
    ``detection_margin`` is (N,), differentiable, > 0 where the detector flags; it needs a detector.
    """

    @property
    def model(self) -> nn.Module: ...

    @property
    def transforms(self) -> Sequence[Callable[[Tensor], Tensor]]: ...

    @property
    def detector(self) -> object | None: ...

    def __call__(self, x: Tensor) -> Tensor: ...

    def detection_margin(self, x: Tensor) -> Tensor: ...

    def decide(self, x: Tensor) -> Verdict: ...


class _BPDA(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, out: Tensor) -> Tensor:
        return out.clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad, None


@dataclass(frozen=True)
class BPDATransform:
    """``transform`` forward, gradient of ``approx`` backward (identity when approx is None)."""

    transform: Callable[[Tensor], Tensor]
    approx: Callable[[Tensor], Tensor] | None = None
    differentiable: bool = False

    def __call__(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            out = self.transform(x.detach())
        if self.approx is None:
            return _BPDA.apply(x, out)
        smooth = self.approx(x)
        return smooth + (out - smooth).detach()

    def to_dict(self) -> dict[str, Any]:
        inner = getattr(self.transform, "to_dict", None)
        return {"name": "bpda", "transform": inner() if inner is not None else repr(self.transform)}


def bpda(transform: Callable[[Tensor], Tensor], approx: Callable[[Tensor], Tensor] | None = None) -> BPDATransform:
    """Wrap a (possibly non-differentiable) transform for BPDA (Athalye et al. 2018, section 4.1)."""
    return BPDATransform(transform, approx)


def _defense_of(model: Classifier) -> DefenseSurface | None:
    """The defense behind an attack's (counting) model, or None for a bare model."""
    inner = model.inner if isinstance(model, CountingModel) else model
    if hasattr(inner, "transforms") and hasattr(inner, "detector") and hasattr(inner, "model"):
        return cast(DefenseSurface, inner)
    return None


class _Surrogate(nn.Module):
    """The defense's forward with every non-differentiable transform under BPDA."""

    def __init__(self, defense: DefenseSurface) -> None:
        super().__init__()
        self.model = defense.model
        self.transforms = [t if getattr(t, "differentiable", True) else bpda(t) for t in defense.transforms]

    def forward(self, x: Tensor) -> Tensor:
        for t in self.transforms:
            x = t(x)
        return self.model(x)


def surrogate(defense: DefenseSurface) -> nn.Module:
    """What the adaptive attacks differentiate: the defense's forward, non-differentiable transforms under BPDA."""
    return _Surrogate(defense)


def evasion_success(defended: DefenseSurface, x_adv: Tensor, y: Tensor) -> Tensor:
    """(N,) bool: misclassified by the defense AND not flagged by its detector."""
    d = defended.decide(x_adv)
    return (d.labels != y) & ~d.flagged


@dataclass(frozen=True, kw_only=True)
class AdaptivePGD(Attack):
    """PGD against a whole defense, with BPDA, EOT and a detector-evasion term.

    Args:
        n_steps: gradient steps per restart.
        rel_step_size: step as a fraction of eps (default 2.5 / n_steps).
        n_restarts: random restarts; each attacks only examples not yet successful.
        random_start: start uniformly in the ball.
        loss: classification loss (ascended for untargeted goals).
        bpda: replace non-differentiable transforms by BPDA (identity backward).
        eot_samples: random draws averaged per gradient (EOT; 1 = plain gradient).
        detector_weight: lambda of the detection term (0 = detector-unaware).
        detector_weights: a sweep of lambdas, one per restart (cycled; at least one restart each): no single
            weight suits every input, too small ignores the detector and too large forgets the label.
        detector_kappa: push the detection margin this far below the threshold (in margin units).
    """

    n_steps: int = 50
    rel_step_size: float | None = None
    n_restarts: int = 1
    random_start: bool = True
    loss: Loss = cross_entropy
    bpda: bool = True
    eot_samples: int = 1
    detector_weight: float = 0.0
    detector_weights: tuple[float, ...] = ()
    detector_kappa: float = 0.5
    early_stop: bool = True
    name = "adaptive-pgd"

    def __post_init__(self) -> None:
        if self.n_steps < 1 or self.n_restarts < 1 or self.eot_samples < 1:
            raise ConfigError(
                f"n_steps, n_restarts and eot_samples must be >= 1, got {self.n_steps}, {self.n_restarts}, "
                f"{self.eot_samples}"
            )
        if self.detector_weight < 0 or any(w < 0 for w in self.detector_weights):
            raise ConfigError(f"detector weights must be >= 0, got {self.detector_weight}, {self.detector_weights}")

    def _perturb(
        self, model: Classifier, x: Tensor, goal: Goal, threat: ThreatModel, rng: torch.Generator | None
    ) -> Tensor:
        defense = _defense_of(model)
        forward: Classifier = model
        if defense is not None and self.bpda:
            counter = model.counter if isinstance(model, CountingModel) else None
            forward = CountingModel(_Surrogate(defense), counter)
        margin_fn: Callable[[Tensor], Tensor] | None = None
        if defense is not None and defense.detector is not None:
            margin_fn = defense.detection_margin
        step = (self.rel_step_size if self.rel_step_size is not None else 2.5 / self.n_steps) * threat.eps
        best_x = x.clone()
        best = torch.full((x.shape[0],), float("-inf"), device=x.device)
        done = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        weights = self.detector_weights or (self.detector_weight,)
        for r in range(max(self.n_restarts, len(weights))):
            weight = weights[r % len(weights)]
            live = (~done).nonzero().squeeze(1)
            if live.numel() == 0:
                break
            x0 = x[live]
            x_adv = threat.random_start(x0, rng) if self.random_start else x0.clone()
            if r > 0 and weight != weights[(r - 1) % len(weights)]:
                best[live] = float("-inf")  # objectives under another weight are not comparable
            for i in range(self.n_steps + 1):
                objective, grad, hit = self._objective(
                    forward, margin_fn, x_adv, goal.subset(live), i < self.n_steps, weight
                )
                better = ~done[live] & (hit | (objective > best[live]))
                best_x[live] = keep_best(best_x[live], x_adv, better)
                best[live] = torch.where(better, objective, best[live])
                done[live] |= hit
                if i == self.n_steps:
                    break
                keep = ~hit if self.early_stop else torch.ones_like(hit)
                live, x_adv, grad, x0 = live[keep], x_adv[keep], grad[keep], x0[keep]
                if live.numel() == 0:
                    break
                x_adv = threat.project(x_adv + step * threat.steepest(grad), x0)
        return best_x

    def _objective(
        self,
        forward: Classifier,
        margin_fn: Callable[[Tensor], Tensor] | None,
        x_adv: Tensor,
        goal: Goal,
        with_grad: bool,
        weight: float,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(objective (N,) to maximise, its EOT gradient, success (N,) of this iterate)."""
        n = x_adv.shape[0]
        reps = self.eot_samples if with_grad else 1
        xr = x_adv.detach().repeat(reps, *[1] * (x_adv.dim() - 1)).requires_grad_(with_grad)
        with torch.set_grad_enabled(with_grad):
            logits = forward(xr)
            ref = goal.reference.repeat(reps, *[1] * (goal.reference.dim() - 1))
            loss = self.loss(logits, ref)
            objective = loss if goal.ascend else -loss
            margin = None
            if margin_fn is not None:
                margin = margin_fn(xr)
                if weight > 0:
                    objective = objective - weight * (margin + self.detector_kappa).clamp_min(0)
            grad = torch.autograd.grad(objective.sum(), xr)[0] if with_grad else torch.zeros_like(xr)
        objective = objective.detach().view(reps, n).mean(dim=0)
        grad = grad.view(reps, *x_adv.shape).mean(dim=0)
        first = slice(0, n)
        hit = goal.satisfied(logits[first].detach())
        if margin is not None and (weight > 0 or self.detector_weights):
            hit = hit & (margin[first].detach() <= 0)
        return objective, grad, hit


class DetectorPenalty(nn.Module):
    """A defense's logits with the target class pushed down by ``weight * max(0, margin + kappa)``, where
    ``margin`` is the defense's detection margin (> 0 means flagged).

    Makes any attack toward ``Reach(target)`` detector-aware, the gradient-free search included: flagged
    candidates score worse, and one counts as a hit only when its classification margin outweighs the
    penalty. Decisions are judged on the defense itself, never on this surrogate.
    """

    def __init__(self, defense: DefenseSurface, target: int, *, weight: float = 10.0, kappa: float = 0.5) -> None:
        super().__init__()
        if getattr(defense, "detector", None) is None:
            raise ConfigError("DetectorPenalty needs a defense with a detector")
        if weight < 0:
            raise ConfigError(f"weight must be >= 0, got {weight}")
        self.defense, self.target, self.weight, self.kappa = defense, target, weight, kappa

    def forward(self, x: Tensor) -> Tensor:
        logits = self.defense(x)
        penalty = self.weight * (self.defense.detection_margin(x) + self.kappa).clamp_min(0)
        shift = torch.zeros_like(logits)
        shift[:, self.target] = penalty.to(logits.dtype)
        return logits - shift


@dataclass(frozen=True, kw_only=True)
class Transfer(Attack):
    """Craft on a source model (default: the defense's own undefended model), replay on the target.

    Args:
        base: the attack run on the source (its passes are counted too).
        source: the surrogate model; None = ``defense.model`` of the attacked defense (on a bare model,
            the model itself, which makes this the white-box base attack).
    """

    base: Attack = field(default_factory=lambda: PGD(n_steps=50))
    source: nn.Module | None = None
    early_stop: bool = True
    name = "transfer"

    def _perturb(
        self, model: Classifier, x: Tensor, goal: Goal, threat: ThreatModel, rng: torch.Generator | None
    ) -> Tensor:
        source: Classifier | None = self.source
        if source is None:
            defense = _defense_of(model)
            inner = model.inner if isinstance(model, CountingModel) else model
            source = defense.model if defense is not None else inner
        counter = model.counter if isinstance(model, CountingModel) else None
        return self.base.perturb(CountingModel(source, counter), x, goal, threat, rng=rng)


def bpda_pgd(**options: Any) -> AdaptivePGD:
    """PGD through BPDA transforms, ignoring the detector."""
    return AdaptivePGD(**options)


def eot_pgd(**options: Any) -> AdaptivePGD:
    """BPDA + EOT over 8 draws (for randomized defenses)."""
    return AdaptivePGD(**{"eot_samples": 8, **options})


def detector_aware_pgd(**options: Any) -> AdaptivePGD:
    """BPDA (+ EOT if asked) + the detection term; success = misclassified and not flagged."""
    return AdaptivePGD(**{"detector_weight": 2.0, **options})


def transfer_pgd(**options: Any) -> Transfer:
    """PGD-50 on the undefended model, replayed on the defense."""
    return Transfer(**options)
