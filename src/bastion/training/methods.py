"""Training methods by name: each is an objective plus the schedule it runs under."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from bastion.errors import ConfigError
from bastion.registry import Registry
from bastion.training.objectives import PGDAT, TRADES, Objective, Standard
from bastion.training.schedules import Schedule, constant, progressive


@dataclass(frozen=True, kw_only=True)
class MethodConfig:
    """Method hyperparameters. ``stages`` (a list of stage dicts) overrides the generated schedule."""

    epochs: int = 10
    eps: float = 0.1
    n_steps: int = 10
    beta: float = 6.0
    n_stages: int = 3
    min_steps: int = 1
    growth: Literal["linear", "cosine"] = "linear"
    final_fraction: float = 0.4
    stages: tuple[dict[str, Any], ...] | None = None


METHODS: Registry[Callable[[MethodConfig], tuple[Objective, Schedule]]] = Registry("training method")


@METHODS.register("standard")
def _standard(c: MethodConfig) -> tuple[Objective, Schedule]:
    return Standard(), constant(epochs=c.epochs, eps=0.0, n_steps=1, beta=0.0)


@METHODS.register("pgd-at")
def _pgd_at(c: MethodConfig) -> tuple[Objective, Schedule]:
    return PGDAT(), constant(epochs=c.epochs, eps=c.eps, n_steps=c.n_steps, beta=0.0)


@METHODS.register("trades")
def _trades(c: MethodConfig) -> tuple[Objective, Schedule]:
    return TRADES(), constant(epochs=c.epochs, eps=c.eps, n_steps=c.n_steps, beta=c.beta)


@METHODS.register("progressive-trades")
def _progressive_trades(c: MethodConfig) -> tuple[Objective, Schedule]:
    if c.stages is not None:
        schedule = Schedule.from_list(list(c.stages))
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
        )
    return TRADES(name="progressive-trades"), schedule


def build_method(name: str, config: MethodConfig) -> tuple[Objective, Schedule]:
    """(objective, schedule) for a method name; unknown names list the available ones."""
    if config.stages is not None and name != "progressive-trades":
        raise ConfigError(f"explicit stages are only used by 'progressive-trades', not {name!r}")
    return METHODS.get(name)(config)
