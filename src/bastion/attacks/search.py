"""A gradient-free greedy coordinate search: for constraints and models gradients cannot follow.

Each iteration proposes ``n_candidates`` single-block moves per example (one column shifted by a random
fraction of eps in either direction, or one mutable one-hot block set to a random category), sends every
proposal through the threat model's projection and the domain's repair, so each one is a legal point of
the ball, scores them with forward passes only, and keeps the best if it improves the goal's loss. It
never calls backward, so it also attacks non-differentiable models (trees, ensembles behind an API),
and it moves on integer, discrete and categorical grids directly, where a relaxed gradient step that
is rounded back toward the reference may not move at all. In the spirit of the greedy/random local
searches of the tabular evasion literature (e.g. Ballet et al. 2019, arXiv:1911.03274, and
Square-style random search, Andriushchenko et al. 2020, arXiv:1912.00049), written for bastion's
domain interface.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from bastion._typing import Classifier, Loss
from bastion.attacks.base import Attack, keep_best
from bastion.attacks.losses import cross_entropy
from bastion.errors import ConfigError
from bastion.goals import Goal
from bastion.threat import ThreatModel

_FRACTIONS = (0.25, 0.5, 1.0)


@dataclass(frozen=True, kw_only=True)
class CoordinateSearch(Attack):
    """Greedy random coordinate search with forward passes only.

    Args:
        n_iters: improvement rounds; each costs ``n_candidates`` forward passes per live example.
        n_candidates: proposals per example and round.
        loss: per-sample loss of the goal (maximised for untargeted goals, minimised for targeted ones).
        early_stop: skip examples already satisfying the goal and stop once they do.
    """

    n_iters: int = 30
    n_candidates: int = 16
    loss: Loss = cross_entropy
    early_stop: bool = True
    name = "search"

    def __post_init__(self) -> None:
        if self.n_iters < 1:
            raise ConfigError(f"n_iters must be >= 1, got {self.n_iters}")
        if self.n_candidates < 1:
            raise ConfigError(f"n_candidates must be >= 1, got {self.n_candidates}")

    def _perturb(
        self, model: Classifier, x: Tensor, goal: Goal, threat: ThreatModel, rng: torch.Generator | None
    ) -> Tensor:
        shape = x.shape  # images are searched pixel by pixel: units index the flattened example
        blocks, columns = _search_units(threat, x[0].numel(), x.device)
        n_units = len(blocks) + columns.numel()
        if n_units == 0:
            return x.clone()
        with torch.no_grad():
            x_adv = x.clone()
            score = self._score(model, x_adv, goal)
            done = goal.satisfied(model(x_adv)) if self.early_stop else torch.zeros_like(score, dtype=torch.bool)
            for _ in range(self.n_iters):
                live = (~done).nonzero().squeeze(1)
                if live.numel() == 0:
                    break
                sub_goal = goal.subset(live)
                best_x, best_score = x_adv[live], score[live]
                best_hit = torch.zeros_like(best_score, dtype=torch.bool)
                # All proposals of a round are repaired and scored as one batch (the repair's per-call
                # cost dominates on tabular domains); they are kept in the same order as one at a time.
                origin = x[live]
                flat = torch.cat(
                    [
                        self._propose(x_adv[live].flatten(1), blocks, columns, threat.eps, rng)
                        for _ in range(self.n_candidates)
                    ]
                )
                ref = origin.repeat(self.n_candidates, *[1] * (origin.dim() - 1))
                cands = threat.domain.repair(threat.project(flat.view(-1, *shape[1:]), ref), ref)
                logits_all = model(cands)
                reference = sub_goal.reference
                reference = reference.repeat(self.n_candidates, *[1] * (reference.dim() - 1))
                loss_all = self.loss(logits_all, reference)
                score_all = loss_all if goal.ascend else -loss_all
                n_live = live.numel()
                for k in range(self.n_candidates):
                    rows = slice(k * n_live, (k + 1) * n_live)
                    cand, cand_score = cands[rows], score_all[rows]
                    hit = sub_goal.satisfied(logits_all[rows]) if self.early_stop else torch.zeros_like(best_hit)
                    better = (cand_score > best_score) & ~best_hit | (hit & ~best_hit)
                    best_x = keep_best(best_x, cand, better)
                    best_score = torch.where(better, cand_score, best_score)
                    best_hit |= hit
                x_adv[live], score[live] = best_x, best_score
                done[live] |= best_hit
        return x_adv

    def _score(self, model: Classifier, x: Tensor, goal: Goal) -> Tensor:
        loss = self.loss(model(x), goal.reference)
        return loss if goal.ascend else -loss

    def _propose(
        self,
        x_adv: Tensor,
        blocks: list[Tensor],
        columns: Tensor,
        eps: float,
        rng: torch.Generator | None,
    ) -> Tensor:
        """One random single-unit move per row (a column shift or a one-hot block switch)."""
        n, device = x_adv.shape[0], x_adv.device
        n_units = len(blocks) + columns.numel()
        unit = torch.randint(n_units, (n,), generator=rng, device=device)
        cand = x_adv.clone()
        is_col = unit >= len(blocks)
        if is_col.any():
            rows = is_col.nonzero().squeeze(1)
            cols = columns[unit[rows] - len(blocks)]
            fraction = torch.tensor(_FRACTIONS, device=device, dtype=x_adv.dtype)[
                torch.randint(len(_FRACTIONS), (rows.numel(),), generator=rng, device=device)
            ]
            sign = torch.randint(2, (rows.numel(),), generator=rng, device=device).to(x_adv.dtype) * 2 - 1
            cand[rows, cols] = x_adv[rows, cols] + sign * fraction * eps
        for b, block in enumerate(blocks):
            rows = (unit == b).nonzero().squeeze(1)
            if rows.numel() == 0:
                continue
            if block.numel() < 2:
                continue
            current = x_adv[rows[:, None], block[None, :]].argmax(dim=1)  # another category than now
            shift = torch.randint(block.numel() - 1, (rows.numel(),), generator=rng, device=device)
            position = (current + 1 + shift) % block.numel()
            vertex = torch.zeros(rows.numel(), block.numel(), device=device, dtype=x_adv.dtype)
            vertex[torch.arange(rows.numel(), device=device), position] = 1.0
            cand[rows[:, None], block[None, :]] = vertex
        return cand


def _search_units(threat: ThreatModel, n_features: int, device: torch.device) -> tuple[list[Tensor], Tensor]:
    """Mutable one-hot blocks and the remaining mutable columns, read from the domain when it says so.

    A domain without structure (a box) makes every column a unit; immutable columns would be reset by the
    projection anyway, so leaving them out only saves proposals.
    """
    domain = threat.domain
    groups = [torch.as_tensor(g, device=device) for g in getattr(domain, "mutable_groups", ())]
    immutable = getattr(domain, "immutable", None)
    free = torch.ones(n_features, dtype=torch.bool, device=device)
    if immutable is not None:
        free &= ~torch.as_tensor(immutable, device=device).bool()
    for g in getattr(domain, "groups", ()):
        free[torch.as_tensor(g, device=device)] = False
    return groups, free.nonzero().squeeze(1)
