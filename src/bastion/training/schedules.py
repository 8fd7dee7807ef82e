"""Training schedules as plain data: which eps, attack steps and TRADES beta apply at each epoch.

The progressive multi-stage TRADES schedule grows eps and attack steps stage by stage, so early epochs
(cheap attacks at small budgets) cost a fraction of a full-strength epoch.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

from bastion.errors import ConfigError

if TYPE_CHECKING:
    from torch import Tensor


@dataclass(frozen=True, kw_only=True)
class Stage:
    """One stage: ``epochs`` epochs at budget ``eps`` with an ``n_steps``-step attack.

    Args:
        epochs: epochs spent in this stage (>= 1).
        eps: perturbation budget (model-space units, >= 0).
        n_steps: inner attack steps (>= 1).
        rel_step_size: attack step as a fraction of eps; None -> 2.5 / n_steps (Madry), or 1.25 for a
            single step (the random-start FGSM step of Wong et al. 2020).
        beta: TRADES trade-off weight (>= 0); ignored by PGD-AT and standard training.
        start: where TRADES' inner attack starts. ``uniform``: a fresh uniform point of the eps-ball (the
            whole cube under L-inf, as in FGSM-RS). ``carry``: each example's perturbation from its
            previous visit (ATTA, Zheng et al. CVPR 2020), rescaled to this stage's eps; uniform on the
            first visit. Other objectives accept ``uniform`` only.
    """

    epochs: int
    eps: float
    n_steps: int = 10
    rel_step_size: float | None = None
    beta: float = 6.0
    start: Literal["uniform", "carry"] = "uniform"

    def __post_init__(self) -> None:
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise ConfigError(f"stage epochs must be an integer >= 1, got {self.epochs!r}")
        if not math.isfinite(self.eps) or self.eps < 0:
            raise ConfigError(f"stage eps must be finite and >= 0, got {self.eps}")
        if not isinstance(self.n_steps, int) or self.n_steps < 1:
            raise ConfigError(f"stage n_steps must be an integer >= 1, got {self.n_steps!r}")
        if self.rel_step_size is not None and not self.rel_step_size > 0:
            raise ConfigError(f"stage rel_step_size must be > 0, got {self.rel_step_size}")
        if not math.isfinite(self.beta) or self.beta < 0:
            raise ConfigError(f"stage beta must be finite and >= 0, got {self.beta}")
        if self.start not in ("uniform", "carry"):
            raise ConfigError(f"stage start must be 'uniform' or 'carry', got {self.start!r}")

    @property
    def step_fraction(self) -> float:
        if self.rel_step_size is not None:
            return self.rel_step_size
        return 1.25 if self.n_steps == 1 else 2.5 / self.n_steps

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, kw_only=True)
class GapPolicy:
    """The ``gap`` transition policy: strengthen the inner attack when a cheap attack overstates robustness.

    After every epoch the trainer attacks the first ``examples`` validation examples (held out from
    training, the same ones every epoch) with a fresh copy of the stage's attack (its steps at their
    default step size, 1.25 eps for one step as in FGSM-RS; cross-entropy, uniform start; a carried
    stage's small step is sized for accumulation over epochs, not for one visit), then attacks the examples
    it did not break with a stronger one (PGD-``strong_steps`` with ``strong_restarts`` random restarts).
    The gap is the fraction of examples the cheap attack leaves standing and the strong one breaks: the
    signature of gradient masking and of catastrophic overfitting. It is a proportion measured on a few
    hundred examples, so the policy acts on evidence, not on noise: only when the one-sided lower
    ``confidence`` bound of the gap (normal approximation) exceeds ``gap`` do later epochs use ``factor`` x
    the attack steps (at least one more, at most ``max_steps``; the stage's step size is kept). With
    ``confidence`` 0.5 the point estimate decides. The first ``warmup`` epochs are measured but never
    trigger: early in training every model, TRADES with 5 steps included, shows a large gap between one
    and ten steps. Each measurement goes into the epoch's history; each transition, with its reason, into
    the record's events. Its passes are counted as training compute (also reported separately as
    ``policy_gradient_evaluations``).

    Defaults were chosen on the MNIST validation split before the final benchmark (docs/training.md).
    """

    name: Literal["gap"] = "gap"
    gap: float = 0.2
    warmup: int = 2
    examples: int = 300
    confidence: float = 0.95
    strong_steps: int = 10
    strong_restarts: int = 1
    factor: int = 2
    max_steps: int = 10

    def __post_init__(self) -> None:
        if self.name != "gap":
            raise ConfigError(f"unknown transition policy {self.name!r}; expected 'gap'")
        if not 0 < self.gap < 1:
            raise ConfigError(f"policy gap must be in (0, 1), got {self.gap}")
        for key in ("examples", "strong_steps", "strong_restarts", "max_steps"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"policy {key} must be an integer >= 1, got {value!r}")
        if not 0.5 <= self.confidence < 1:
            raise ConfigError(f"policy confidence must be in [0.5, 1), got {self.confidence}")
        if not isinstance(self.warmup, int) or self.warmup < 0:
            raise ConfigError(f"policy warmup must be an integer >= 0, got {self.warmup!r}")
        if not isinstance(self.factor, int) or self.factor < 2:
            raise ConfigError(f"policy factor must be an integer >= 2, got {self.factor!r}")

    def lower_bound(self, broken: Tensor) -> float:
        """One-sided lower ``confidence`` bound of the gap from per-example outcomes (True: the cheap attack
        left the example standing and the strong one broke it)."""
        n = broken.numel()
        if n == 0:
            return 0.0
        p = float(broken.float().mean())
        z = statistics.NormalDist().inv_cdf(self.confidence)
        return p - z * math.sqrt(p * (1 - p) / n)

    def strengthened(self, n_steps: int) -> int:
        """The step count after a transition from ``n_steps`` (never beyond ``max_steps``)."""
        return min(self.max_steps, max(n_steps + 1, n_steps * self.factor))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GapPolicy:
        allowed = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - allowed
        if unknown:
            raise ConfigError(f"policy: unknown key(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
        return cls(**d)


@dataclass(frozen=True)
class Schedule:
    """An ordered tuple of stages. ``stage_at(epoch)`` gives (stage index, Stage) for a 0-based epoch.

    ``policy`` (None: the stages run as written) lets a measured signal strengthen the stages' attack;
    see :class:`GapPolicy`.
    """

    stages: tuple[Stage, ...]
    policy: GapPolicy | None = None

    def __post_init__(self) -> None:
        if not self.stages:
            raise ConfigError("a schedule needs at least one stage")

    @property
    def total_epochs(self) -> int:
        return sum(s.epochs for s in self.stages)

    @property
    def final_eps(self) -> float:
        return self.stages[-1].eps

    def stage_at(self, epoch: int) -> tuple[int, Stage]:
        if epoch < 0 or epoch >= self.total_epochs:
            raise ConfigError(f"epoch {epoch} is outside the schedule's {self.total_epochs} epochs")
        end = 0
        for i, stage in enumerate(self.stages):
            end += stage.epochs
            if epoch < end:
                return i, stage
        raise AssertionError("unreachable")

    def to_list(self) -> list[dict[str, Any]]:
        return [s.to_dict() for s in self.stages]

    def with_policy(self, policy: GapPolicy | None) -> Schedule:
        return Schedule(self.stages, policy)

    def rows(self) -> list[dict[str, Any]]:
        """One row per stage for printing and logging: epochs covered, eps, steps, step size, beta."""
        rows, start = [], 0
        for i, s in enumerate(self.stages):
            rows.append(
                {
                    "stage": i + 1,
                    "epochs": f"{start + 1}-{start + s.epochs}",
                    "eps": round(s.eps, 6),
                    "n_steps": s.n_steps,
                    "step_size": round(s.step_fraction * s.eps, 6),
                    "beta": s.beta,
                    "start": s.start,
                }
            )
            start += s.epochs
        return rows

    @classmethod
    def from_list(cls, stages: list[dict[str, Any]], *, allow_decreasing: bool = False) -> Schedule:
        """Build from config data; eps and steps must not decrease unless ``allow_decreasing``."""
        allowed = {"epochs", "eps", "n_steps", "rel_step_size", "beta", "start"}
        built = []
        for i, d in enumerate(stages):
            unknown = set(d) - allowed
            if unknown:
                raise ConfigError(f"stage {i}: unknown key(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
            built.append(Stage(**d))
        schedule = cls(tuple(built))
        if not allow_decreasing:
            schedule.check_progressive()
        return schedule

    def check_progressive(self) -> None:
        """Reject a schedule whose eps or attack steps decrease from one stage to the next."""
        for i, (a, b) in enumerate(zip(self.stages, self.stages[1:], strict=False)):
            if b.eps < a.eps:
                raise ConfigError(f"stage {i + 1} eps {b.eps} is below stage {i} eps {a.eps}; eps may not decrease")
            if b.n_steps < a.n_steps:
                raise ConfigError(
                    f"stage {i + 1} n_steps {b.n_steps} is below stage {i} n_steps {a.n_steps}; steps may not decrease"
                )


def constant(*, epochs: int, eps: float, n_steps: int = 10, beta: float = 6.0) -> Schedule:
    """Full strength from the first epoch (PGD-AT, TRADES)."""
    return Schedule((Stage(epochs=epochs, eps=eps, n_steps=n_steps, beta=beta),))


def progressive(
    *,
    epochs: int,
    eps: float,
    n_stages: int = 3,
    max_steps: int = 10,
    min_steps: int = 1,
    beta: float = 6.0,
    growth: Literal["linear", "cosine"] = "linear",
    final_fraction: float = 0.4,
    single_step_epochs: int = 0,
) -> Schedule:
    """Progressive multi-stage schedule: eps and steps grow from stage to stage up to (eps, max_steps).

    The last stage (full eps, max_steps) gets ``final_fraction`` of the epochs; the earlier stages share
    the rest evenly. ``growth`` shapes the ramp of eps and steps over the stages. With
    ``single_step_epochs`` > 0, that many of the epochs go to an extra first stage of cheap one-step
    attacks (random start, step 1.25 eps) at the first stage's budget.
    """
    if not isinstance(single_step_epochs, int) or single_step_epochs < 0:
        raise ConfigError(f"single_step_epochs must be an integer >= 0, got {single_step_epochs!r}")
    if single_step_epochs:
        if epochs - single_step_epochs < n_stages:
            raise ConfigError(
                f"{epochs} epochs cannot hold {single_step_epochs} single-step epochs and {n_stages} stages"
            )
        rest = progressive(
            epochs=epochs - single_step_epochs,
            eps=eps,
            n_stages=n_stages,
            max_steps=max_steps,
            min_steps=min_steps,
            beta=beta,
            growth=growth,
            final_fraction=final_fraction,
        )
        first = Stage(epochs=single_step_epochs, eps=rest.stages[0].eps, n_steps=1, beta=beta)
        return Schedule((first, *rest.stages))
    if n_stages < 1:
        raise ConfigError(f"n_stages must be >= 1, got {n_stages}")
    if epochs < n_stages:
        raise ConfigError(f"{epochs} epochs cannot hold {n_stages} stages (each needs >= 1 epoch)")
    if not 0 < final_fraction <= 1:
        raise ConfigError(f"final_fraction must be in (0, 1], got {final_fraction}")
    if min_steps < 1 or max_steps < min_steps:
        raise ConfigError(f"need 1 <= min_steps <= max_steps, got {min_steps}, {max_steps}")
    if n_stages == 1:
        return constant(epochs=epochs, eps=eps, n_steps=max_steps, beta=beta)
    last = max(1, round(epochs * final_fraction))
    last = min(last, epochs - (n_stages - 1))
    remaining = epochs - last
    early = [remaining // (n_stages - 1) + (1 if i < remaining % (n_stages - 1) else 0) for i in range(n_stages - 1)]
    stages = []
    for i, n_ep in enumerate([*early, last]):
        t = (i + 1) / n_stages
        if growth == "cosine":
            t = 0.5 * (1 - math.cos(math.pi * t))
        elif growth != "linear":
            raise ConfigError(f"unknown growth {growth!r}; expected 'linear' or 'cosine'")
        steps = min_steps + round((max_steps - min_steps) * (i / (n_stages - 1)))
        stages.append(Stage(epochs=n_ep, eps=eps * t, n_steps=steps, beta=beta))
    return Schedule(tuple(stages))
