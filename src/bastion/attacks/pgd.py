"""Projected gradient descent with random start and restarts (Madry et al. 2018, arXiv:1706.06083)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from bastion._typing import Classifier, Loss
from bastion.attacks.base import Attack, Perturbation, keep_best, loss_gradient
from bastion.attacks.losses import cross_entropy
from bastion.errors import ConfigError
from bastion.goals import Goal
from bastion.threat import ThreatModel


@dataclass(frozen=True, kw_only=True)
class PGD(Attack):
    """Iterated steepest-ascent steps, each projected onto ball ∩ domain.

    Args:
        n_steps: gradient steps per restart.
        step_size: absolute step; None means ``rel_step_size * eps``.
        rel_step_size: step as a fraction of eps (Madry's 2.5 * eps / n_steps when left at None).
        n_restarts: independent random starts; each restart only attacks examples still robust.
        random_start: start uniformly in the ball (the first restart too).
        loss: per-sample loss; cross_entropy for labels, kl_to_reference for TRADES.
        early_stop: skip examples already satisfying the goal and stop updating them once they do.
            Training (TRADES) turns it off to maximise the loss itself.
        keep_best_iterate: return each example's best iterate rather than the last one. Training turns
            it off (with early_stop) to save the bookkeeping and one forward pass per batch; with both
            off nothing is scored, so only one run is made whatever n_restarts says.
    """

    n_steps: int = 10
    step_size: float | None = None
    rel_step_size: float | None = None
    n_restarts: int = 1
    random_start: bool = True
    loss: Loss = cross_entropy
    early_stop: bool = True
    keep_best_iterate: bool = True
    name = "pgd"

    def __post_init__(self) -> None:
        if self.n_steps < 1:
            raise ConfigError(f"n_steps must be >= 1, got {self.n_steps}")
        if self.n_restarts < 1:
            raise ConfigError(f"n_restarts must be >= 1, got {self.n_restarts}")
        if self.step_size is not None and self.step_size <= 0:
            raise ConfigError(f"step_size must be > 0, got {self.step_size}")
        if self.rel_step_size is not None and self.rel_step_size <= 0:
            raise ConfigError(f"rel_step_size must be > 0, got {self.rel_step_size}")

    def _step(self, eps: float) -> float:
        if self.step_size is not None:
            return self.step_size
        rel = self.rel_step_size if self.rel_step_size is not None else 2.5 / self.n_steps
        return rel * eps

    def _perturb(
        self, model: Classifier, x: Tensor, goal: Goal, threat: ThreatModel, rng: torch.Generator | None
    ) -> Perturbation:
        step = self._step(threat.eps)
        if not (self.early_stop or self.keep_best_iterate):
            # The lean training path: no scoring at all, so restarts have nothing to choose by; one run.
            x_adv = threat.random_start(x, rng) if self.random_start else x.clone()
            for _ in range(self.n_steps):
                _, grad, _ = loss_gradient(model, x_adv, goal, self.loss)
                x_adv = threat.project(x_adv + step * threat.steepest(grad), x)
            return Perturbation(x_adv)
        best_x = x.clone()
        best_logits: Tensor | None = None
        best_loss = torch.full((x.shape[0],), float("-inf"), device=x.device)
        done = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        for _ in range(self.n_restarts):
            active = (~done).nonzero().squeeze(1) if self.early_stop else torch.arange(x.shape[0], device=x.device)
            if active.numel() == 0:
                break
            x0, sub_goal = x[active], goal.subset(active)
            x_adv = threat.random_start(x0, rng) if self.random_start else x0.clone()
            run = self._run(model, x0, x_adv, sub_goal, threat, step)
            if best_logits is None:
                best_logits = torch.zeros(x.shape[0], run.logits.shape[1], device=x.device, dtype=run.logits.dtype)
            improved = run.done | (~done[active] & (run.loss > best_loss[active]))
            best_x[active] = keep_best(best_x[active], run.x, improved)
            best_logits[active] = keep_best(best_logits[active], run.logits, improved)
            best_loss[active] = torch.where(improved, run.loss, best_loss[active])
            done[active] |= run.done
        # Every restart scores every example it returns, so the base needs no success forward of its own.
        return Perturbation(best_x, logits=best_logits)

    def _run(self, model: Classifier, x: Tensor, x_adv: Tensor, goal: Goal, threat: ThreatModel, step: float) -> _Run:
        """One restart: the best iterate per example, its logits and goal-oriented loss, and which succeeded."""
        n = x.shape[0]
        best_x, best_loss = x_adv.clone(), torch.full((n,), float("-inf"), device=x.device)
        best_logits: Tensor | None = None
        done = torch.zeros(n, dtype=torch.bool, device=x.device)
        live = torch.arange(n, device=x.device)

        def record(x_live: Tensor, logits: Tensor, loss: Tensor, frozen: Tensor) -> Tensor:
            """Keep each live example's best iterate so far; returns which of them now satisfy the goal."""
            nonlocal best_logits
            if best_logits is None:
                best_logits = torch.zeros(n, logits.shape[1], device=x.device, dtype=logits.dtype)
            score = loss if goal.ascend else -loss
            sub = goal.subset(live)
            hit = sub.satisfied(logits) if self.early_stop else torch.zeros_like(score, dtype=torch.bool)
            better = (hit | (score > best_loss[live])) & ~frozen
            best_x[live] = keep_best(best_x[live], x_live, better)
            best_logits[live] = keep_best(best_logits[live], logits, better)
            best_loss[live] = torch.where(better, torch.maximum(score, best_loss[live]), best_loss[live])
            done[live] |= hit
            return hit

        for _ in range(self.n_steps):
            loss, grad, logits = loss_gradient(model, x_adv, goal.subset(live), self.loss)
            hit = record(x_adv, logits, loss, done[live])
            if self.early_stop and hit.any():
                keep = ~hit
                live, x_adv, grad = live[keep], x_adv[keep], grad[keep]
                if live.numel() == 0:
                    assert best_logits is not None
                    return _Run(best_x, best_logits, best_loss, done)
            x_adv = threat.project(x_adv + step * threat.steepest(grad), x[live])
        # The last step's iterate has not been scored yet.
        with torch.no_grad():
            logits = model(x_adv)
        record(x_adv, logits, self.loss(logits, goal.subset(live).reference), done[live])
        assert best_logits is not None
        return _Run(best_x, best_logits, best_loss, done)


@dataclass(frozen=True)
class _Run:
    """One restart's outcome per example: best iterate, its logits and goal-oriented loss, success."""

    x: Tensor
    logits: Tensor
    loss: Tensor
    done: Tensor
