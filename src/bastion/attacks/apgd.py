"""Auto-PGD (Croce & Hein 2020, arXiv:2003.01690): PGD without a step-size to tune.

The step starts at 2 eps and is halved at checkpoints when progress stalls; updates carry momentum; after
a halving the iterate restarts from the best point found. APGD-T runs the targeted DLR loss against the
top-k most likely wrong classes in turn, each only on examples still robust.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from bastion._typing import Classifier, Loss
from bastion.attacks.base import Attack, Perturbation, keep_best
from bastion.attacks.losses import cross_entropy, dlr_targeted
from bastion.errors import ConfigError
from bastion.goals import Diverge, Goal, Reach
from bastion.threat import ThreatModel

#: (logits (n, C), rows (n,) indices into the attacked batch) -> (n,) objective to maximise.
Objective = Callable[[Tensor, Tensor], Tensor]
#: (logits (n, C), rows (n,)) -> (n,) bool goal reached.
Criterion = Callable[[Tensor, Tensor], Tensor]


def checkpoints(n_steps: int) -> list[int]:
    """Iterations w_j = ceil(p_j * n_steps) where the step size may be halved (paper, section 3.2).

    p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06).
    """
    p = [0.0, 0.22]
    while p[-1] < 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    return sorted({math.ceil(round(pj * n_steps, 6)) for pj in p if pj <= 1})


def run_apgd(
    model: Classifier,
    x: Tensor,
    x_start: Tensor,
    objective: Objective,
    reached: Criterion,
    threat: ThreatModel,
    *,
    n_steps: int,
    rho: float,
    momentum: float,
    early_stop: bool,
    settle: int | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One APGD run from ``x_start``.

    Returns (best iterate (n, *S), its objective (n,), reached (n,) bool, forward passes per example (n,)).
    A reached example keeps the iterate that reached the goal and leaves the active set (early_stop).
    """
    n, device = x.shape[0], x.device
    view = (-1, *[1] * (x.dim() - 1))
    marks = checkpoints(n_steps)
    eta = torch.full((n,), 2 * threat.eps, device=device, dtype=x.dtype)
    best_x, best_f = x_start.clone(), torch.full((n,), -math.inf, device=device)
    best_grad = torch.zeros_like(x)
    done = torch.zeros(n, dtype=torch.bool, device=device)
    queries = torch.zeros(n, dtype=torch.long, device=device)
    f_prev = torch.full((n,), -math.inf, device=device)
    n_improved = torch.zeros(n, dtype=torch.long, device=device)
    eta_at_mark, best_at_mark = eta.clone(), best_f.clone()
    last_mark = 0
    live = torch.arange(n, device=device)
    x_adv, x_prev = x_start.clone(), x_start.clone()
    for k in range(n_steps + 1):
        x_adv = x_adv.detach().requires_grad_(True)
        logits = model(x_adv)
        f = objective(logits, live)
        grad = torch.autograd.grad(f.sum(), x_adv)[0] if k < n_steps else None
        x_adv, f, logits = x_adv.detach(), f.detach(), logits.detach()
        queries[live] += 1
        hit = reached(logits, live) if early_stop else torch.zeros_like(f, dtype=torch.bool)
        if k > 0:
            n_improved[live] += (f > f_prev[live]).long()
        f_prev[live] = f
        better = (f > best_f[live]) | hit
        best_x[live] = keep_best(best_x[live], x_adv, better)
        best_f[live] = torch.where(better, f, best_f[live])
        if grad is not None:
            best_grad[live] = keep_best(best_grad[live], grad, better)
        done[live] |= hit
        if k == 0:
            best_at_mark[live] = best_f[live]  # f_max at w_0, for the first checkpoint's "no change" test
        if grad is None:
            break
        if hit.any():
            keep = ~hit
            live, x_adv, x_prev, grad = live[keep], x_adv[keep], x_prev[keep], grad[keep]
            if live.numel() == 0:
                break
        if k in marks and k > 0:
            # Halve where fewer than rho of the steps since the last mark improved the objective, or where
            # neither the step nor the best objective changed since then; restart there from the best point.
            stalled = n_improved[live] < rho * (k - last_mark)
            flat = (eta_at_mark[live] == eta[live]) & (best_at_mark[live] == best_f[live])
            halve = stalled | flat
            eta[live] = torch.where(halve, eta[live] / 2, eta[live])
            x_adv = keep_best(x_adv, best_x[live], halve)
            x_prev = keep_best(x_prev, best_x[live], halve)
            grad = keep_best(grad, best_grad[live], halve)
            if settle is not None:
                # Converged: the step was halved at least ``settle`` times and the best objective moved by
                # less than 1% of its distance to the goal since the last mark; further steps rarely break it.
                gained = best_f[live] - best_at_mark[live]
                still = (eta[live] > 2 * threat.eps / 2**settle) | (gained > 0.01 * best_f[live].abs().clamp_min(1e-3))
                if not bool(still.all()):
                    eta_at_mark[live], best_at_mark[live] = eta[live], best_f[live]
                    live, x_adv, x_prev, grad = live[still], x_adv[still], x_prev[still], grad[still]
                    if live.numel() == 0:
                        break
                    n_improved[live] = 0
                    last_mark = k
                    x0 = x[live]
                    z = threat.project(x_adv + eta[live].view(view) * threat.steepest(grad), x0)
                    x_next = threat.project(x_adv + momentum * (z - x_adv) + (1 - momentum) * (x_adv - x_prev), x0)
                    x_prev, x_adv = x_adv, x_next
                    continue
            eta_at_mark[live], best_at_mark[live] = eta[live], best_f[live]
            n_improved[live] = 0
            last_mark = k
        x0 = x[live]
        z = threat.project(x_adv + eta[live].view(view) * threat.steepest(grad), x0)
        x_next = z if k == 0 else threat.project(x_adv + momentum * (z - x_adv) + (1 - momentum) * (x_adv - x_prev), x0)
        x_prev, x_adv = x_adv, x_next
    return best_x, best_f, done, queries


@dataclass(frozen=True, kw_only=True)
class APGD(Attack):
    """APGD with any per-sample loss (cross_entropy -> APGD-CE, dlr -> APGD-DLR, margin for binary tasks).

    Args:
        n_steps: iterations per restart (the paper's 100).
        n_restarts: random restarts; each only attacks examples still robust.
        loss: per-sample loss; maximised for Misclassify/Diverge goals, minimised for Reach.
        rho: halve the step when fewer than rho of the steps since the last checkpoint improved.
        momentum: the paper's alpha = 0.75 weight on the new projected step.
        random_start: start uniformly in the ball (as the reference implementation does).
        early_stop: skip examples already satisfying the goal; stop on an example once it does.
    """

    n_steps: int = 100
    n_restarts: int = 1
    loss: Loss = cross_entropy
    rho: float = 0.75
    momentum: float = 0.75
    random_start: bool = True
    early_stop: bool = True
    settle: int | None = None
    name = "apgd"

    def __post_init__(self) -> None:
        _check_common(self)

    def _perturb(
        self, model: Classifier, x: Tensor, goal: Goal, threat: ThreatModel, rng: torch.Generator | None
    ) -> Perturbation:
        sign = 1.0 if goal.ascend else -1.0

        def objective(logits: Tensor, rows: Tensor) -> Tensor:
            return sign * self.loss(logits, goal.reference[rows])

        def reached(logits: Tensor, rows: Tensor) -> Tensor:
            return goal.subset(rows).satisfied(logits)

        return _restarts(self, model, x, threat, rng, [(objective, reached, None)])


@dataclass(frozen=True, kw_only=True)
class APGDT(Attack):
    """APGD-T: targeted DLR against each of the ``n_targets`` most likely wrong classes in turn.

    With a Misclassify(y) goal, targets are the classes ranked 2nd, 3rd, ... by the clean logits; an
    example counts as broken once it is misclassified (to any class). With a Reach(t) goal there is one
    target, t, and the true class is the clean prediction. Needs >= 4 classes.

    Args:
        n_targets: how many target classes to try (the paper's 9; capped at C - 1).
        max_gap_ratio: attack each target after the first only on examples whose clean logit gap to it,
            z_y - z_t, is at most this multiple of the gap to the first (the runner-up class). Far targets
            almost never break an example that nearer ones could not, so they cost time for nothing; on
            the MNIST TRADES and digits models every break by a later target had a ratio <= 1.32
            (docs/attacks.md).
            None (the paper's behaviour) tries every target on every survivor.
        n_steps, n_restarts, rho, momentum, random_start, early_stop: as in APGD, per target.
    """

    n_targets: int = 9
    max_gap_ratio: float | None = None
    n_steps: int = 100
    n_restarts: int = 1
    rho: float = 0.75
    momentum: float = 0.75
    random_start: bool = True
    early_stop: bool = True
    settle: int | None = None
    name = "apgd-t"

    def __post_init__(self) -> None:
        if self.n_targets < 1:
            raise ConfigError(f"n_targets must be >= 1, got {self.n_targets}")
        if self.max_gap_ratio is not None and not self.max_gap_ratio >= 1:
            raise ConfigError(f"max_gap_ratio must be >= 1 (or None), got {self.max_gap_ratio}")
        _check_common(self)

    def check(self, goal: Goal, threat: ThreatModel, n_classes: int) -> None:
        if isinstance(goal, Diverge):
            raise ConfigError("APGD-T attacks labels; use APGD with kl_to_reference for a Diverge goal")
        if n_classes < 4:
            raise ConfigError(
                f"APGD-T needs >= 4 classes for the targeted DLR loss, got {n_classes}; "
                "use the 'binary' suite (APGD-CE, APGD-margin, Square) for such tasks"
            )

    def _perturb(
        self, model: Classifier, x: Tensor, goal: Goal, threat: ThreatModel, rng: torch.Generator | None
    ) -> Perturbation:
        with torch.no_grad():
            clean_logits = model(x)
        n_classes = clean_logits.shape[1]
        self.check(goal, threat, n_classes)
        eligible: list[Tensor | None] = [None]
        if isinstance(goal, Reach):
            y = clean_logits.argmax(dim=1)
            targets = [goal.reference]
        else:
            y = goal.reference
            ranked = clean_logits.masked_fill(torch.nn.functional.one_hot(y, n_classes).bool(), -math.inf)
            wrong, order = ranked.sort(dim=1, descending=True)
            targets = [order[:, r] for r in range(min(self.n_targets, n_classes - 1))]
            eligible = eligible * len(targets)
            if self.max_gap_ratio is not None:
                # Gaps of a misclassified example are <= 0 and the ratio is meaningless: keep every target.
                gaps = clean_logits.gather(1, y[:, None]) - wrong[:, : len(targets)]
                far = (gaps > self.max_gap_ratio * gaps[:, :1]) & (gaps[:, :1] > 0)
                eligible = [None] + [~far[:, r] for r in range(1, len(targets))]

        def make(target: Tensor) -> tuple[Objective, Criterion]:
            def objective(logits: Tensor, rows: Tensor) -> Tensor:
                return dlr_targeted(logits, y[rows], target[rows])

            def reached(logits: Tensor, rows: Tensor) -> Tensor:
                return goal.subset(rows).satisfied(logits)

            return objective, reached

        runs = [(*make(t), keep) for t, keep in zip(targets, eligible, strict=True)]
        out = _restarts(self, model, x, threat, rng, runs)
        queries = out.n_queries + 1 if out.n_queries is not None else None
        return Perturbation(out.x_adv, n_queries=queries)


def _restarts(
    attack: APGD | APGDT,
    model: Classifier,
    x: Tensor,
    threat: ThreatModel,
    rng: torch.Generator | None,
    runs: Sequence[tuple[Objective, Criterion, Tensor | None]],
) -> Perturbation:
    """Every (objective, restart) pair in turn, each on the examples no earlier run has broken.

    A run's (n,) bool mask, when given, limits it further to the examples it is meant for.

    The returned iterate is the breaking one where an example was broken, else the best one of the
    first objective (later objectives are on other scales, so they are not compared).
    """
    n = x.shape[0]
    best_x, best_f = x.clone(), torch.full((n,), -math.inf, device=x.device)
    done = torch.zeros(n, dtype=torch.bool, device=x.device)
    queries = torch.zeros(n, dtype=torch.long, device=x.device)
    for r, (objective, reached, eligible) in enumerate(runs):
        for _ in range(attack.n_restarts):
            todo = ~done if attack.early_stop else torch.ones_like(done)
            rows = (todo if eligible is None else todo & eligible).nonzero().squeeze(1)
            if rows.numel() == 0:
                if not todo.any():
                    return Perturbation(best_x, n_queries=queries)
                break
            x0 = x[rows]
            start = threat.random_start(x0, rng) if attack.random_start else x0.clone()

            def sub_objective(logits: Tensor, idx: Tensor, rows: Tensor = rows, fn: Objective = objective) -> Tensor:
                return fn(logits, rows[idx])

            def sub_reached(logits: Tensor, idx: Tensor, rows: Tensor = rows, fn: Criterion = reached) -> Tensor:
                return fn(logits, rows[idx])

            run_x, run_f, run_done, run_q = run_apgd(
                model,
                x0,
                start,
                sub_objective,
                sub_reached,
                threat,
                n_steps=attack.n_steps,
                rho=attack.rho,
                momentum=attack.momentum,
                early_stop=attack.early_stop,
                settle=attack.settle,
            )
            queries[rows] += run_q
            take = run_done | (~done[rows] & (r == 0) & (run_f > best_f[rows]))
            best_x[rows] = keep_best(best_x[rows], run_x, take)
            best_f[rows] = torch.where(take & (r == 0), run_f, best_f[rows])
            done[rows] |= run_done
    return Perturbation(best_x, n_queries=queries)


def _check_common(attack: APGD | APGDT) -> None:
    if attack.n_steps < 1:
        raise ConfigError(f"n_steps must be >= 1, got {attack.n_steps}")
    if attack.n_restarts < 1:
        raise ConfigError(f"n_restarts must be >= 1, got {attack.n_restarts}")
    if not 0 < attack.rho <= 1:
        raise ConfigError(f"rho must be in (0, 1], got {attack.rho}")
    if not 0 < attack.momentum <= 1:
        raise ConfigError(f"momentum must be in (0, 1], got {attack.momentum}")
