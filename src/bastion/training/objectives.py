"""Training objectives ``(model, x, y, stage, threat, rng) -> LossOutput``, one per method, from the papers.

Every objective calls the model it is given; the trainer hands in a counting wrapper, so the attack's
passes and the training pass are all counted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.attacks.base import evaluating, loss_gradient
from bastion.attacks.losses import cross_entropy, kl_between_logits, kl_to_reference
from bastion.attacks.pgd import PGD
from bastion.compute import CountingModel
from bastion.errors import ConfigError
from bastion.goals import Diverge, Misclassify
from bastion.threat import ThreatModel
from bastion.training.carry import PerturbationStore
from bastion.training.schedules import Stage


def _f(t: Tensor) -> float:
    return float(t.detach())


@dataclass
class LossOutput:
    """The batch loss to minimise, metrics to log, and an optional callback run right after its backward
    (Free AT reads the input gradient of that same backward pass to update its perturbation)."""

    loss: Tensor
    metrics: dict[str, float] = field(default_factory=dict)
    after_backward: Callable[[], None] | None = None


class Objective(Protocol):
    @property
    def name(self) -> str: ...

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
    """Empirical risk minimisation: cross-entropy on clean inputs, optionally at a softmax temperature
    (the teacher of defensive distillation is trained at temperature T)."""

    name: str = "standard"
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature}")

    def __call__(self, model, x, y, stage, threat, rng):
        logits = model(x)
        loss = F.cross_entropy(logits / self.temperature, y)
        return LossOutput(loss, {"loss": _f(loss), "acc": float((logits.argmax(1) == y).float().mean())})


@dataclass(frozen=True)
class PGDAT:
    """Madry et al. 2018: cross-entropy on PGD examples (inner max of the same loss).

    ``clean_weight`` w > 0 keeps part of the clean loss, w CE(f(x), y) + (1 - w) CE(f(x'), y) (the mixed
    objective of Goodfellow et al. 2015, arXiv:1412.6572): on tabular intrusion data it holds clean
    detection closer to a standard model's (docs/tabular.md). With w = 0 no clean pass is run.
    """

    clean_weight: float = 0.0
    name: str = "pgd-at"

    def __post_init__(self) -> None:
        if not 0.0 <= self.clean_weight < 1.0:
            raise ConfigError(f"pgd-at clean_weight must be in [0, 1), got {self.clean_weight}")

    def __call__(self, model, x, y, stage, threat, rng):
        threat = threat.with_eps(stage.eps)
        x_adv = _inner_attack(stage, cross_entropy).perturb(model, x, Misclassify(y), threat, rng=rng)
        clean = F.cross_entropy(model(x), y) if self.clean_weight else None
        logits = model(x_adv)
        loss = F.cross_entropy(logits, y)
        if clean is not None:
            loss = self.clean_weight * clean + (1 - self.clean_weight) * loss
        return LossOutput(loss, {"loss": _f(loss), "adv_acc": float((logits.argmax(1) == y).float().mean())})


@dataclass(frozen=True)
class TRADES:
    """Zhang et al. 2019 (arXiv:1901.08573): CE(f(x), y) + beta * KL(f(x) || f(x')).

    x' maximises the KL to the clean prediction inside the ball, by ``stage.n_steps`` signed-gradient
    steps of ``stage.step_fraction * eps`` from a uniform point of the ball (the whole L-inf cube, not
    the paper's 0.001-Gaussian start, at which a one-step KL attack has almost no gradient). A stage with
    ``start: carry`` starts each example from its perturbation of the previous epoch instead (ATTA; see
    ``bastion.training.carry``). With beta = 0 (or eps = 0) no attack is run and the objective is exactly
    standard training. The progressive multi-stage variant is this objective under a staged schedule.
    """

    name: str = "trades"
    carry: PerturbationStore = field(default_factory=PerturbationStore, compare=False, repr=False)

    def select_batch(self, index: Tensor, n_total: int, example_shape: tuple[int, ...]) -> None:
        """The trainer names the next batch's examples (positions in the training split) for carry-over."""
        self.carry.select(index, n_total, example_shape)

    def __call__(self, model, x, y, stage, threat, rng):
        logits = model(x)
        natural = F.cross_entropy(logits, y)
        if stage.beta == 0 or stage.eps == 0:
            return LossOutput(natural, {"loss": _f(natural), "natural": _f(natural), "robust": 0.0})
        threat = threat.with_eps(stage.eps)
        ref = logits.detach().softmax(dim=1)
        if stage.start == "carry":
            x_adv = self._carried_attack(model, x.detach(), ref, stage, threat, rng)
        else:
            x_adv = _inner_attack(stage, kl_to_reference).perturb(model, x, Diverge(ref), threat, rng=rng)
        adv_logits = model(x_adv)
        robust = kl_between_logits(adv_logits, logits).mean()
        loss = natural + stage.beta * robust
        return LossOutput(loss, {"loss": _f(loss), "natural": _f(natural), "robust": _f(robust)})

    def _carried_attack(
        self, model: nn.Module, x: Tensor, ref: Tensor, stage: Stage, threat: ThreatModel, rng: torch.Generator | None
    ) -> Tensor:
        """The KL ascent from each example's carried perturbation; the result is carried on."""
        step = stage.step_fraction * stage.eps
        goal = Diverge(ref)
        with evaluating(model):
            x_adv = self.carry.start(x, threat, rng)
            for _ in range(stage.n_steps):
                _, grad, _ = loss_gradient(model, x_adv, goal, kl_to_reference)
                x_adv = threat.project(x_adv + step * threat.steepest(grad), x)
            x_adv = threat.domain.repair(x_adv, x).detach()
        self.carry.put(x_adv, x, stage.eps)
        return x_adv

    def state_tensors(self) -> dict[str, Tensor]:
        return self.carry.state_tensors()

    def load_state_tensors(self, state: dict[str, Tensor], device: torch.device) -> None:
        self.carry.load_state_tensors(state, device)


def _accuracy(logits: Tensor, y: Tensor) -> float:
    return float((logits.argmax(1) == y).float().mean())


def _counted_like(model: nn.Module, other: nn.Module) -> nn.Module:
    """``other`` counted on the same tally as ``model`` (a teacher's or a static model's passes are
    training compute too)."""
    if isinstance(model, CountingModel):
        return CountingModel(other, model.counter)
    return other


@dataclass(frozen=True)
class MART:
    """Wang et al. 2020, "Improving adversarial robustness requires revisiting misclassified examples"
    (ICLR 2020): boosted cross-entropy on PGD examples plus beta * KL(p(x) || p(x')) weighted by
    1 - p_y(x), so misclassified clean examples weigh more.

    BCE(p(x'), y) = -log p_y(x') - log(1 - max_{k != y} p_k(x')). The inner attack maximises
    cross-entropy (stage eps, steps, step size); ``stage.beta`` is the paper's lambda.
    """

    name: str = "mart"

    def __call__(self, model, x, y, stage, threat, rng):
        threat = threat.with_eps(stage.eps)
        x_adv = _inner_attack(stage, cross_entropy).perturb(model, x, Misclassify(y), threat, rng=rng)
        logits = model(x)
        adv_logits = model(x_adv)
        adv_probs = adv_logits.softmax(dim=1)
        true_mask = F.one_hot(y, adv_logits.shape[1]).bool()
        top_other = adv_probs.masked_fill(true_mask, 0.0).amax(dim=1)
        boosted = F.cross_entropy(adv_logits, y, reduction="none") - torch.log((1.0 - top_other).clamp_min(1e-12))
        probs = logits.softmax(dim=1)
        kl = (probs * (logits.log_softmax(dim=1) - adv_logits.log_softmax(dim=1))).sum(dim=1)
        weight = 1.0 - probs.gather(1, y[:, None]).squeeze(1)
        robust = (kl * weight).mean()
        loss = boosted.mean() + stage.beta * robust
        return LossOutput(
            loss,
            {
                "loss": _f(loss),
                "boosted_ce": _f(boosted.mean()),
                "robust": _f(robust),
                "adv_acc": _accuracy(adv_logits, y),
            },
        )


@dataclass(frozen=True)
class FastAT:
    """Single-step adversarial training.

    ``guard="none"``: Wong et al. 2020, "Fast is better than free" (arXiv:2001.03994): FGSM from a uniform
    random start in the eps-ball, step ``stage.step_fraction * eps`` (1.25 eps for a one-step stage),
    projected back onto the ball. Prone to catastrophic overfitting at large eps.

    ``guard="n-fgsm"`` (default): de Jorge et al. 2022, "Make some noise" (arXiv:2202.01181): noise drawn
    from a ball of ``noise * eps`` (k = 2 in the paper), one step of eps, and *no* projection back onto the
    eps-ball (only onto the input domain). The stronger noise and the unclipped step avoid catastrophic
    overfitting at the cost of one single-step attack, unlike GradAlign's double backpropagation.

    Costs 2 forward and 2 backward passes per example (one of each for the attack, one for training).
    """

    name: str = "fast-at"
    guard: Literal["none", "n-fgsm"] = "n-fgsm"
    noise: float = 2.0

    def __post_init__(self) -> None:
        if self.guard not in ("none", "n-fgsm"):
            raise ConfigError(f"unknown fast-at guard {self.guard!r}; expected 'none' or 'n-fgsm'")
        if not self.noise >= 0:
            raise ConfigError(f"noise must be >= 0, got {self.noise}")

    def __call__(self, model, x, y, stage, threat, rng):
        x_adv = self.perturb(model, x, y, stage, threat, rng)
        logits = model(x_adv)
        loss = F.cross_entropy(logits, y)
        return LossOutput(loss, {"loss": _f(loss), "adv_acc": _accuracy(logits, y)})

    def perturb(
        self, model: nn.Module, x: Tensor, y: Tensor, stage: Stage, threat: ThreatModel, rng: torch.Generator | None
    ) -> Tensor:
        """The training example: inside the domain, within (noise + 1) * eps (n-fgsm) or eps (none)."""
        eps = stage.eps
        if eps == 0:
            return x.detach().clone()
        x = x.detach()
        if self.guard == "none":
            ball = threat.with_eps(eps)
            step = stage.step_fraction * eps
        else:
            # The final perturbation may reach (noise + 1) * eps: N-FGSM deliberately does not clip.
            ball = threat.with_eps((self.noise + 1.0) * eps)
            step = (stage.rel_step_size or 1.0) * eps
        with evaluating(model):
            noise_ball = threat.with_eps(self.noise * eps) if self.guard == "n-fgsm" else ball
            start = noise_ball.random_start(x, rng)
            _, grad, _ = loss_gradient(model, start, Misclassify(y), cross_entropy)
            x_adv = ball.project(start + step * threat.steepest(grad), x)
        return threat.domain.repair(x_adv, x).detach()


@dataclass
class FreeAT:
    """Shafahi et al. 2019, "Adversarial training for free!" (arXiv:1904.12843).

    Each minibatch is replayed ``replays`` (m) times; every replay is one forward and one backward pass
    whose input gradient also updates a perturbation that persists across replays and minibatches
    (step eps, projected onto the ball). The trainer takes one optimiser step per replay, so an epoch
    costs m forward and m backward passes per example. The perturbation is objective state, saved with
    the training checkpoint.
    """

    name: str = "free-at"
    replays: int = 4
    delta: Tensor | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.replays, int) or self.replays < 1:
            raise ConfigError(f"free-at replays must be an integer >= 1, got {self.replays!r}")

    def __call__(self, model, x, y, stage, threat, rng):
        ball = threat.with_eps(stage.eps)
        x = x.detach()
        n = x.shape[0]
        if self.delta is None or self.delta.shape[1:] != x.shape[1:] or self.delta.device != x.device:
            self.delta = torch.zeros_like(x)
        if self.delta.shape[0] < n:
            pad = torch.zeros((n - self.delta.shape[0], *x.shape[1:]), dtype=x.dtype, device=x.device)
            self.delta = torch.cat([self.delta, pad])
        x_adv = ball.project(x + self.delta[:n], x).requires_grad_(True)
        logits = model(x_adv)
        loss = F.cross_entropy(logits, y)

        def update_delta() -> None:
            if x_adv.grad is None or self.delta is None:
                return
            moved = ball.project(x_adv.detach() + stage.eps * threat.steepest(x_adv.grad), x)
            self.delta[:n] = moved - x

        return LossOutput(loss, {"loss": _f(loss), "adv_acc": _accuracy(logits, y)}, after_backward=update_delta)

    def state_tensors(self) -> dict[str, Tensor]:
        return {} if self.delta is None else {"delta": self.delta.detach().cpu()}

    def load_state_tensors(self, state: dict[str, Tensor], device: torch.device) -> None:
        self.delta = state["delta"].to(device) if "delta" in state else None


@dataclass(frozen=True)
class Distillation:
    """Papernot et al. 2016, "Distillation as a defense" (arXiv:1511.04508): the student is trained on
    the teacher's soft labels softmax(teacher(x) / T) with its own softmax at the same temperature T, and
    deployed at temperature 1 (its raw logits). The teacher (trained at temperature T, see
    ``Standard(temperature=T)``) is frozen; its forward passes are counted as training compute.
    """

    teacher: nn.Module
    temperature: float = 20.0
    name: str = "distillation"

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature}")
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.teacher.eval()

    def __call__(self, model, x, y, stage, threat, rng):
        teacher = _counted_like(model, self.teacher.to(x.device))
        with torch.no_grad():
            soft = (teacher(x) / self.temperature).softmax(dim=1)
        logits = model(x)
        # KL(soft || student at T): the soft-label cross-entropy minus the teacher's entropy (a constant),
        # so the gradient is the paper's and the reported loss reaches 0 when the student matches.
        log_soft = soft.clamp_min(1e-12).log()
        loss = (soft * (log_soft - (logits / self.temperature).log_softmax(dim=1))).sum(dim=1).mean()
        return LossOutput(loss, {"loss": _f(loss), "acc": _accuracy(logits, y)})


@dataclass
class EnsembleAT:
    """Tramèr et al. 2018, "Ensemble adversarial training" (arXiv:1705.07204).

    Batches cycle through the sources: the model being trained, then each static pre-trained model in
    turn. The adversarial examples of a batch are crafted on its source with the stage's attack (a
    one-step stage gives the paper's single-step attack) and the loss is
    0.5 * CE(clean) + 0.5 * CE(adversarial). Static models stay frozen; their passes are counted.
    """

    static_models: tuple[nn.Module, ...] = ()
    name: str = "ensemble-at"
    batches_seen: int = 0

    def __post_init__(self) -> None:
        if not self.static_models:
            raise ConfigError("ensemble-at needs at least one static pre-trained model (static_models)")
        for m in self.static_models:
            for p in m.parameters():
                p.requires_grad_(False)
            m.eval()

    def source_of(self, batch: int) -> int:
        """0 for the model itself, i >= 1 for static model i - 1."""
        return batch % (1 + len(self.static_models))

    def __call__(self, model, x, y, stage, threat, rng):
        source = self.source_of(self.batches_seen)
        self.batches_seen += 1
        crafter = model if source == 0 else _counted_like(model, self.static_models[source - 1].to(x.device))
        threat = threat.with_eps(stage.eps)
        x_adv = _inner_attack(stage, cross_entropy).perturb(crafter, x, Misclassify(y), threat, rng=rng)
        logits = model(x)
        adv_logits = model(x_adv)
        loss = 0.5 * F.cross_entropy(logits, y) + 0.5 * F.cross_entropy(adv_logits, y)
        return LossOutput(loss, {"loss": _f(loss), "adv_acc": _accuracy(adv_logits, y), "source": float(source)})

    def state_tensors(self) -> dict[str, Tensor]:
        return {"batches_seen": torch.tensor([self.batches_seen], dtype=torch.int64)}

    def load_state_tensors(self, state: dict[str, Tensor], device: torch.device) -> None:
        self.batches_seen = int(state["batches_seen"][0])
