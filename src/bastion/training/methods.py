"""Training methods by name: each is an objective plus the schedule it runs under."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from bastion.config import from_config
from bastion.errors import ConfigError
from bastion.models.checkpoint import load_model
from bastion.registry import Registry
from bastion.training import objectives
from bastion.training.objectives import Objective
from bastion.training.schedules import GapPolicy, Schedule, constant, progressive


@dataclass(frozen=True, kw_only=True)
class MethodConfig:
    """Method hyperparameters. ``stages`` (a list of stage dicts) overrides the generated schedule.

    ``guard``/``noise``: fast-at's catastrophic-overfitting guard; ``replays``: free-at's m;
    ``clean_weight``: pgd-at's share of clean cross-entropy in the loss (0: Madry's PGD-AT);
    ``temperature``/``teacher``: distillation (teacher = a saved model folder, trained at that temperature);
    ``static_models``: ensemble-at's pre-trained model folders; ``single_step_epochs``: a cheap first stage
    for progressive-trades. ``policy``: ``fixed`` (the stages as written) or ``gap`` (progressive-trades
    only: strengthen the attack when a cheap attack's validation accuracy exceeds a strong one's by more
    than ``policy_gap`` at ``policy_confidence``; at most ``policy_max_steps`` steps, default ``n_steps``;
    measured on ``policy_examples`` validation examples, never in the first ``policy_warmup`` epochs; see
    ``GapPolicy``).
    """

    epochs: int = 10
    eps: float = 0.1
    n_steps: int = 10
    beta: float = 6.0
    n_stages: int = 3
    min_steps: int = 1
    growth: Literal["linear", "cosine"] = "linear"
    final_fraction: float = 0.4
    stages: tuple[dict[str, Any], ...] | None = None
    single_step_epochs: int = 0
    guard: Literal["none", "n-fgsm"] = "n-fgsm"
    noise: float = 2.0
    replays: int = 4
    temperature: float = 20.0
    teacher: str | None = None
    static_models: tuple[str, ...] = ()
    clean_weight: float = 0.0
    policy: Literal["fixed", "gap"] = "fixed"
    policy_gap: float = 0.2
    policy_examples: int = 300
    policy_confidence: float = 0.95
    policy_warmup: int = 2
    policy_max_steps: int | None = None

    def transition_policy(self) -> GapPolicy | None:
        """The named policy as data (None for ``fixed``); an unknown name is an error."""
        if self.policy == "fixed":
            return None
        if self.policy != "gap":
            raise ConfigError(f"unknown transition policy {self.policy!r}; expected 'fixed' or 'gap'")
        return GapPolicy(
            gap=self.policy_gap,
            warmup=self.policy_warmup,
            examples=self.policy_examples,
            confidence=self.policy_confidence,
            max_steps=self.policy_max_steps if self.policy_max_steps is not None else self.n_steps,
        )

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> MethodConfig:
        """The method's settings out of a wider flat config (e.g. ``TrainConfig``); a missing one is an error."""
        return from_config(cls, config, "the training config")


METHODS: Registry[tuple[Objective, Schedule]] = Registry("training method")


@METHODS.register("standard")
def _standard(c: MethodConfig) -> tuple[Objective, Schedule]:
    return objectives.Standard(), constant(epochs=c.epochs, eps=0.0, n_steps=1, beta=0.0)


@METHODS.register("pgd-at")
def _pgd_at(c: MethodConfig) -> tuple[Objective, Schedule]:
    objective = objectives.PGDAT(clean_weight=c.clean_weight)
    return objective, constant(epochs=c.epochs, eps=c.eps, n_steps=c.n_steps, beta=0.0)


@METHODS.register("trades")
def _trades(c: MethodConfig) -> tuple[Objective, Schedule]:
    return objectives.TRADES(), constant(epochs=c.epochs, eps=c.eps, n_steps=c.n_steps, beta=c.beta)


@METHODS.register("progressive-trades")
def _progressive_trades(c: MethodConfig) -> tuple[Objective, Schedule]:
    if c.stages is not None:
        # A stage that names no beta takes the config's: `beta: 2` beside the stages must not mean 6.
        schedule = Schedule.from_list([{"beta": c.beta, **stage} for stage in c.stages])
    else:
        schedule = progressive(
            epochs=c.epochs,
            eps=c.eps,
            n_stages=c.n_stages,
            max_steps=c.n_steps,
            min_steps=c.min_steps,
            beta=c.beta,
            growth=c.growth,
            final_fraction=c.final_fraction,
            single_step_epochs=c.single_step_epochs,
        )
    return objectives.TRADES(name="progressive-trades"), schedule.with_policy(c.transition_policy())


@METHODS.register("mart")
def _mart(c: MethodConfig) -> tuple[Objective, Schedule]:
    return objectives.MART(), constant(epochs=c.epochs, eps=c.eps, n_steps=c.n_steps, beta=c.beta)


@METHODS.register("fast-at")
def _fast_at(c: MethodConfig) -> tuple[Objective, Schedule]:
    return objectives.FastAT(guard=c.guard, noise=c.noise), constant(epochs=c.epochs, eps=c.eps, n_steps=1, beta=0.0)


@METHODS.register("free-at")
def _free_at(c: MethodConfig) -> tuple[Objective, Schedule]:
    """``epochs`` counts passes over the data; each holds ``replays`` optimiser steps per minibatch."""
    return objectives.FreeAT(replays=c.replays), constant(epochs=c.epochs, eps=c.eps, n_steps=1, beta=0.0)


@METHODS.register("distillation-teacher")
def _distillation_teacher(c: MethodConfig) -> tuple[Objective, Schedule]:
    """The teacher of defensive distillation: standard training at temperature T."""
    objective = objectives.Standard(name="distillation-teacher", temperature=c.temperature)
    return objective, constant(epochs=c.epochs, eps=0.0, n_steps=1, beta=0.0)


@METHODS.register("distillation")
def _distillation(c: MethodConfig) -> tuple[Objective, Schedule]:
    if c.teacher is None:
        raise ConfigError("distillation needs a teacher model folder (teacher=PATH), trained at the same temperature")
    teacher = load_model(c.teacher)
    return objectives.Distillation(teacher=teacher, temperature=c.temperature), constant(
        epochs=c.epochs, eps=0.0, n_steps=1, beta=0.0
    )


@METHODS.register("ensemble-at")
def _ensemble_at(c: MethodConfig) -> tuple[Objective, Schedule]:
    static = tuple(load_model(path) for path in c.static_models)
    schedule = constant(epochs=c.epochs, eps=c.eps, n_steps=c.n_steps, beta=0.0)
    return objectives.EnsembleAT(static_models=static), schedule


def build_method(name: str, config: MethodConfig) -> tuple[Objective, Schedule]:
    """(objective, schedule) for a method name; unknown names list the available ones."""
    if config.stages is not None and name != "progressive-trades":
        raise ConfigError(f"explicit stages are only used by 'progressive-trades', not {name!r}")
    if config.policy != "fixed" and name != "progressive-trades":
        raise ConfigError(f"a transition policy is only used by 'progressive-trades', not {name!r}")
    if config.clean_weight and name != "pgd-at":
        raise ConfigError(f"clean_weight is only used by 'pgd-at', not {name!r}")
    return METHODS.get(name)(config)
