"""Square attack (Andriushchenko et al. 2020, arXiv:1912.00049): score-based black-box random search.

Each query changes one random square window (L-inf: to +-eps per channel; L2: moves the perturbation mass
of a second window into it, shaped as a pseudo-gaussian bump) and keeps the change only if the margin
loss drops. The window's area is a fraction p of the input, halved on a fixed schedule. It needs logits
only: it never calls backward, so gradient masking cannot fool it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from bastion._typing import Classifier, Norm
from bastion.attacks.base import Attack, Perturbation, keep_best
from bastion.attacks.losses import goal_score
from bastion.errors import ConfigError
from bastion.goals import Goal, Misclassify, Reach
from bastion.threat import ThreatModel

log = logging.getLogger(__name__)

#: Iterations (of a 10,000-query run) after which p is halved; rescaled to the actual budget (paper, App. A).
_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def p_schedule(p_init: float, iteration: int, n_queries: int) -> float:
    """The window-area fraction at ``iteration``: p_init halved at each rescaled checkpoint passed."""
    it = int(iteration / max(n_queries, 1) * 10000)
    return p_init / 2 ** sum(it > h for h in _HALVINGS)


def _window_mask(
    n: int, shape: tuple[int, int], size: tuple[int, int], rng: torch.Generator | None, device: torch.device
) -> Tensor:
    """(n, 1, H, W) bool: one random window of ``size`` per example."""
    (h, w), (sh, sw) = shape, size
    r0 = torch.randint(0, h - sh + 1, (n,), generator=rng, device=device)
    c0 = torch.randint(0, w - sw + 1, (n,), generator=rng, device=device)
    rows = torch.arange(h, device=device)
    cols = torch.arange(w, device=device)
    in_rows = (rows >= r0[:, None]) & (rows < (r0 + sh)[:, None])
    in_cols = (cols >= c0[:, None]) & (cols < (c0 + sw)[:, None])
    return (in_rows[:, :, None] & in_cols[:, None, :])[:, None]


def _bump(h: int, w: int, device: torch.device) -> Tensor:
    """(h, w) concentric-rectangle bump: sum over the rings outside each pixel of 1 / (ring + 1)^2."""
    rows = (torch.arange(h, device=device) - (h - 1) / 2).abs()
    cols = (torch.arange(w, device=device) - (w - 1) / 2).abs()
    ring = torch.maximum(rows[:, None], cols[None, :]).floor().long()
    n_rings = int(ring.max()) + 1
    weights = 1.0 / (torch.arange(n_rings, device=device, dtype=torch.float32) + 1) ** 2
    tail = weights.flip(0).cumsum(0).flip(0)  # tail[k] = sum_{j >= k} weights[j]
    return tail[ring]


def _meta_pattern(sh: int, sw: int, device: torch.device) -> Tensor:
    """(sh, sw) unit-L2 pattern: a bump on each half with opposite signs (the paper's eta)."""
    if sw >= 2:
        left = sw // 2
        pattern = torch.cat([_bump(sh, left, device), -_bump(sh, sw - left, device)], dim=1)
    else:
        pattern = _bump(sh, sw, device)
    return pattern / pattern.norm().clamp_min(1e-12)


@dataclass(frozen=True, kw_only=True)
class Square(Attack):
    """Square attack, L-inf and L2 (chosen by the threat model).

    Args:
        n_queries: forward passes per example, the initial one included (AutoAttack uses 5,000).
        p_init: initial window area as a fraction of the input (0.8 as in AutoAttack's setting).
        early_stop: skip examples already satisfying the goal; stop querying an example once it does.
        stall_window: if set, every ``stall_window`` queries an example whose margin, extrapolated at
            ``stall_factor`` times its progress over the last window, cannot reach the goal within the
            remaining budget stops being queried (label goals only; see :meth:`_stalled`).
        stall_factor: slack on that extrapolation; larger keeps more examples running.

    Inputs of shape (N, C, H, W) get square windows; (N, D) or (N, C, L) inputs are treated as one row,
    so a window is a contiguous run of features.
    """

    n_queries: int = 5000
    p_init: float = 0.8
    early_stop: bool = True
    stall_window: int | None = None
    stall_factor: float = 2.0
    name = "square"

    def __post_init__(self) -> None:
        if self.n_queries < 1:
            raise ConfigError(f"n_queries must be >= 1, got {self.n_queries}")
        if self.stall_window is not None and self.stall_window < 1:
            raise ConfigError(f"stall_window must be >= 1 or None, got {self.stall_window}")
        if not self.stall_factor > 0:
            raise ConfigError(f"stall_factor must be > 0, got {self.stall_factor}")
        if not 0 < self.p_init <= 1:
            raise ConfigError(f"p_init must be in (0, 1], got {self.p_init}")

    @torch.no_grad()
    def _perturb(
        self, model: Classifier, x: Tensor, goal: Goal, threat: ThreatModel, rng: torch.Generator | None
    ) -> Perturbation:
        return self.perturb_in_chunks(model, x, goal, threat, rng, [torch.arange(x.shape[0], device=x.device)])

    @torch.no_grad()
    def perturb_in_chunks(
        self,
        model: Classifier,
        x: Tensor,
        goal: Goal,
        threat: ThreatModel,
        rng: torch.Generator | None,
        chunks: Sequence[Tensor],
    ) -> Perturbation:
        """Square on the rows of ``chunks[0]``; ``chunks[k + 1]`` joins as soon as chunk k has met the goal
        on one of its rows, and runs its own full budget and window schedule from there. Rows of chunks
        that never join stay unperturbed, with no query.

        This is :class:`~bastion.attacks.probe.Probed`'s rule (attack the next chunk only when the last one
        broke an example) without waiting for a chunk to spend its whole budget first: one forward pass
        per iteration serves every running chunk, and per-pass overhead, not batch size, is what a small
        model's query costs (digits CNN, 5,000 queries: 8 examples 3.1 s, 48 examples 8.7 s).
        """
        shape = x.shape
        x4 = x.reshape(shape[0], shape[1], shape[2], shape[3]) if x.dim() == 4 else x.reshape(shape[0], 1, 1, -1)
        n, channels, height, width = x4.shape
        device = x.device
        eps = threat.eps

        def query(x_new: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
            logits = model(x_new.reshape(-1, *shape[1:]))
            sub = goal.subset(rows)
            return goal_score(logits, sub), sub.satisfied(logits)

        def project(x_new: Tensor, rows: Tensor) -> Tensor:
            return threat.project(x_new.reshape(-1, *shape[1:]), x[rows]).reshape(x_new.shape)

        best = x4.clone()
        best_score = torch.full((n,), float("inf"), device=device, dtype=x.dtype)
        done = torch.zeros(n, dtype=torch.bool, device=device)
        queries = torch.zeros(n, dtype=torch.long, device=device)
        window = self.stall_window if isinstance(goal, (Misclassify, Reach)) else None
        stalled = torch.zeros_like(done)
        checkpoint = best_score.clone()
        joined: list[int] = []  # the iteration at which each running chunk joined

        def join(rows: Tensor, at: int) -> None:
            k = rows.numel()
            if threat.norm is Norm.LINF:
                signs = torch.randint(0, 2, (k, channels, 1, width), generator=rng, device=device) * 2 - 1
                delta = eps * signs.to(x.dtype).expand(-1, -1, height, -1)
            else:
                delta = self._l2_init(k, channels, height, width, eps, rng, device, x.dtype)
            start = project(x4[rows] + delta, rows)
            best[rows] = start
            best_score[rows], done[rows] = query(start, rows)
            queries[rows] = 1
            checkpoint[rows] = best_score[rows]
            joined.append(at)
            log.debug("square: chunk %d of %d (%d rows) joins at iteration %d", len(joined), len(chunks), k, at)

        def next_may_join() -> bool:
            return len(joined) < len(chunks) and bool(done[chunks[len(joined) - 1]].any())

        join(chunks[0], 0)
        i = 0
        while True:
            if next_may_join():
                join(chunks[len(joined)], i)
            lives, candidates = [], []
            for rows, at in zip(chunks, joined, strict=False):
                j = i - at  # the chunk's own iteration
                if j >= self.n_queries - 1:
                    continue
                if window is not None and j > 0 and j % window == 0:
                    stalled[rows] |= ~done[rows] & self._stalled(
                        best_score[rows], checkpoint[rows], self.n_queries - 1 - j, window
                    )
                    checkpoint[rows] = best_score[rows]
                active = ~stalled[rows] & ~done[rows] if self.early_stop else ~stalled[rows]
                live = rows[active]
                if live.numel() == 0:
                    continue
                size = self._window(p_schedule(self.p_init, j, self.n_queries), height, width)
                step = self._linf_step if threat.norm is Norm.LINF else self._l2_step
                lives.append(live)
                candidates.append(step(x4[live], best[live], size, eps, rng))
            if not lives:
                if next_may_join():
                    continue  # the newest chunk broke one on its last query: the next joins now
                break
            i += 1
            live = torch.cat(lives) if len(lives) > 1 else lives[0]
            candidate = torch.cat(candidates) if len(candidates) > 1 else candidates[0]
            candidate = project(candidate, live)
            cur = best[live]
            # A window already at the sampled corner (often, once windows are a pixel) leaves the input as
            # it is: its score could not improve, so that example is not queried. Same result, fewer passes.
            moved = (candidate != cur).flatten(1).any(dim=1)
            live, cur, candidate = live[moved], cur[moved], candidate[moved]
            if live.numel() == 0:
                continue
            score, hit = query(candidate, live)
            queries[live] += 1
            better = score < best_score[live]
            best[live] = keep_best(cur, candidate, better)
            best_score[live] = torch.where(better, score, best_score[live])
            done[live] |= hit & better
        return Perturbation(best.reshape(shape), n_queries=queries)

    def _stalled(self, score: Tensor, checkpoint: Tensor, remaining: int, window: int) -> Tensor:
        """(n,) bool: margins that ``stall_factor`` times the last window's pace would leave above 0.

        On robust models most survivors' margins barely move after the first windows, while the few that
        Square does break fall steadily toward 0; extrapolating each example's own recent pace separates
        them, and the factor keeps the ones whose pace merely slowed for a while.
        """
        progress = (checkpoint - score).clamp_min(0.0)
        return score > self.stall_factor * progress * (remaining / window)

    @staticmethod
    def _window(p: float, height: int, width: int) -> tuple[int, int]:
        if height > 1:
            side = round(math.sqrt(p * height * width))
            side = max(1, min(side, min(height, width) - 1 if min(height, width) > 1 else 1))
            return side, side
        return 1, max(1, min(round(p * width), max(width - 1, 1)))

    @staticmethod
    def _linf_step(x0: Tensor, cur: Tensor, size: tuple[int, int], eps: float, rng: torch.Generator | None) -> Tensor:
        n, channels, height, width = x0.shape
        mask = _window_mask(n, (height, width), size, rng, x0.device)
        signs = (torch.randint(0, 2, (n, channels, 1, 1), generator=rng, device=x0.device) * 2 - 1).to(x0.dtype)
        return torch.where(mask, x0 + eps * signs, cur)

    @staticmethod
    def _l2_init(
        n: int,
        channels: int,
        height: int,
        width: int,
        eps: float,
        rng: torch.Generator | None,
        device: torch.device,
        dtype: torch.dtype,
    ) -> Tensor:
        """Tiles of bumps with random signs per tile and channel, scaled to L2 norm eps."""
        tile = max(height // 5, 1) if height > 1 else 1
        tile_w = max(width // 5, 1) if height > 1 else max(width // 25, 1)
        delta = torch.zeros(n, channels, height, width, device=device, dtype=dtype)
        for r in range(0, height, tile):
            for c in range(0, width, tile_w):
                h, w = min(tile, height - r), min(tile_w, width - c)
                signs = (torch.randint(0, 2, (n, channels, 1, 1), generator=rng, device=device) * 2 - 1).to(dtype)
                delta[:, :, r : r + h, c : c + w] = signs * _bump(h, w, device).to(dtype)
        norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
        return delta * (eps / norms).view(-1, 1, 1, 1)

    @staticmethod
    def _l2_step(x0: Tensor, cur: Tensor, size: tuple[int, int], eps: float, rng: torch.Generator | None) -> Tensor:
        """Move window 2's mass (and the unused budget) into window 1, reshaped by a signed meta pattern."""
        n, channels, height, width = x0.shape
        delta = cur - x0
        first = _window_mask(n, (height, width), size, rng, x0.device)
        second = _window_mask(n, (height, width), size, rng, x0.device)
        rest = delta.masked_fill(first | second, 0.0)
        avail = (eps**2 - rest.flatten(1).pow(2).sum(dim=1)).clamp_min(0.0).sqrt()
        pattern = torch.zeros_like(delta)
        sh, sw = size
        meta = _meta_pattern(sh, sw, x0.device).to(x0.dtype)
        if bool(torch.randint(0, 2, (1,), generator=rng, device=x0.device)) and sh == sw:
            meta = meta.T
        signs = (torch.randint(0, 2, (n, channels, 1, 1), generator=rng, device=x0.device) * 2 - 1).to(x0.dtype)
        pattern[first.expand_as(pattern)] = (signs * meta).reshape(-1)
        inside = delta.masked_fill(~first, 0.0)
        inside_norm = inside.flatten(1).norm(dim=1)
        new = inside + pattern * inside_norm.clamp_min(avail / 2).view(-1, 1, 1, 1)
        new_norm = new.flatten(1).norm(dim=1).clamp_min(1e-12)
        new = new * (avail / new_norm).view(-1, 1, 1, 1)
        return x0 + rest + new
