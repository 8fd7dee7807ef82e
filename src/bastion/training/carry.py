"""Per-example perturbations carried across epochs (ATTA, Zheng et al. CVPR 2020, arXiv:1912.11969).

Each training example keeps the perturbation its inner attack ended with, and its next visit (one epoch
later) starts from there. A one-step attack per epoch thus accumulates into a many-step attack over the
run at the cost of one step.

Storage is compact and exact: a perturbation is kept *relative to the eps it was made at*, as int8
``round(127 * delta / eps)`` (quantisation error at most eps / 254 per coordinate), plus a bool per
example marking whether it has been visited. Reading multiplies by the current eps, so when eps grows
between stages a perturbation is rescaled with it (its direction and relative position in the ball are
kept); it is then projected onto ball ∩ domain around the (possibly augmented) input. Because the
training loop only ever sees the quantised values, a checkpoint of the int8 tensor resumes bit-exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from bastion.threat import ThreatModel

#: int8 levels per unit of eps.
LEVELS = 127


@dataclass
class PerturbationStore:
    """Per-example perturbations indexed by the example's position in the training split.

    ``select(index)`` names the examples of the next batch; ``start`` and ``put`` then read and write
    their rows. Rows never visited start uniformly in the ball.
    """

    q: Tensor | None = None  # (N, *S) int8, perturbation / eps * LEVELS
    seen: Tensor | None = None  # (N,) bool
    index: Tensor | None = None  # rows of the current batch

    def select(self, index: Tensor, n_total: int, example_shape: tuple[int, ...]) -> None:
        if self.q is None or self.q.shape[0] != n_total or tuple(self.q.shape[1:]) != example_shape:
            self.q = torch.zeros((n_total, *example_shape), dtype=torch.int8, device=index.device)
            self.seen = torch.zeros(n_total, dtype=torch.bool, device=index.device)
        self.index = index.to(self.q.device)

    def start(self, x: Tensor, threat: ThreatModel, rng: torch.Generator | None) -> Tensor:
        """Starting points (N, *S) for the current batch: carried perturbations, else uniform in the ball."""
        fresh = threat.random_start(x, rng)
        if self.q is None or self.seen is None or self.index is None or self.index.shape[0] != x.shape[0]:
            return fresh
        delta = self.q[self.index].to(x.dtype) * (threat.eps / LEVELS)
        carried = threat.project(x + delta, x)
        seen = self.seen[self.index].view(-1, *[1] * (x.dim() - 1))
        return torch.where(seen, carried, fresh)

    def put(self, x_adv: Tensor, x: Tensor, eps: float) -> None:
        """Keep the current batch's final perturbations (relative to ``eps``, quantised)."""
        if self.q is None or self.seen is None or self.index is None or eps == 0:
            return
        rel = ((x_adv.detach() - x.detach()) / eps).clamp(-1.0, 1.0)
        self.q[self.index] = torch.round(rel * LEVELS).to(torch.int8)
        self.seen[self.index] = True

    def state_tensors(self) -> dict[str, Tensor]:
        if self.q is None or self.seen is None:
            return {}
        return {"carry.q": self.q.detach().cpu(), "carry.seen": self.seen.detach().cpu()}

    def load_state_tensors(self, state: dict[str, Tensor], device: torch.device) -> None:
        if "carry.q" in state:
            self.q = state["carry.q"].to(device)
            self.seen = state["carry.seen"].to(device)
