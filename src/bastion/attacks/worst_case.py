"""The worst case over a sequence of attacks, AutoAttack style: each attack only sees the examples every
earlier attack failed on, so the strong but expensive attacks run on few examples.

Each attack is also told, per survivor, the lowest goal score (margin) any earlier attack reached
(``prior_score``): the probed Square attacks the survivors APGD brought nearest to breaking first. On the
MNIST TRADES benchmark model every example Square broke was among the 4 nearest of 115-123 survivors by
that score, against ranks up to 39 by the clean cross-entropy.

The per-example record says which attack broke each example and what it cost. Robust accuracy "after"
an attack is the share still robust after it and all earlier ones (AutoAttack's convention), so it
never increases along the sequence and the last value is the ensemble's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from bastion import progress
from bastion._typing import Classifier
from bastion.attacks.base import Attack, evaluating
from bastion.attacks.losses import goal_score
from bastion.errors import InputValidationError
from bastion.goals import Misclassify
from bastion.threat import ThreatModel

log = logging.getLogger(__name__)

#: ``broken_by`` code for examples the model gets wrong without any attack.
CLEAN = "clean"


class AttackSequence(dict[str, Attack]):
    """Attacks in the order they run (cheapest first). An evaluation runs it as a worst-case sequence."""


@dataclass(frozen=True)
class WorstCaseResult:
    """Per-example outcome of a sequence on one batch.

    x_adv: (N, *S) the breaking input where an attack succeeded, else x.
    robust: (N,) bool, correct on x and unbroken by every attack.
    broken_by: (N,) names: the first attack that broke it, ``clean`` if misclassified unattacked, None if robust.
    robust_after: attack -> (N,) bool, robust after this attack and all earlier ones.
    forward, backward: (N,) float per-example passes over all attacks that ran on the example (exact for
        attacks reporting ``n_queries``; otherwise the attack's total split evenly over the examples it ran on).
    cost: attack -> totals (forward_passes, backward_passes, wall_time_s, examples_attacked).
    nearest: (N,) the lowest :func:`~bastion.attacks.losses.goal_score` (margin) reached on the example
        by any attack, or at the clean input; the ``prior_score`` the next attack would be given.
    """

    x_adv: Tensor
    robust: Tensor
    broken_by: list[str | None]
    robust_after: dict[str, Tensor]
    forward: Tensor
    backward: Tensor
    cost: dict[str, dict[str, float]]
    nearest: Tensor

    def rows(self, start: int, stop: int, *, first: bool) -> WorstCaseResult:
        """Examples ``start:stop`` as a result of their own. The cost totals stay whole on the ``first``
        slice and are zero on the others (so summing the slices gives the totals), except
        ``examples_attacked``, which is counted per slice."""
        sl = slice(start, stop)
        cost: dict[str, dict[str, float]] = {}
        before = self.robust_after_clean[sl]
        for name, c in self.cost.items():
            entry: dict[str, float] = dict(c) if first else dict.fromkeys(c, 0.0)
            entry["examples_attacked"] = int(before.sum())
            cost[name] = entry
            before = self.robust_after[name][sl]
        return WorstCaseResult(
            self.x_adv[sl],
            self.robust[sl],
            self.broken_by[sl],
            {k: v[sl] for k, v in self.robust_after.items()},
            self.forward[sl],
            self.backward[sl],
            cost,
            self.nearest[sl],
        )

    @property
    def robust_after_clean(self) -> Tensor:
        """(N,) bool: correct on the unattacked input."""
        return torch.tensor([b != CLEAN for b in self.broken_by], dtype=torch.bool, device=self.robust.device)

    def to(self, device: torch.device) -> WorstCaseResult:
        return WorstCaseResult(
            self.x_adv.to(device),
            self.robust.to(device),
            list(self.broken_by),
            {k: v.to(device) for k, v in self.robust_after.items()},
            self.forward.to(device),
            self.backward.to(device),
            {k: dict(v) for k, v in self.cost.items()},
            self.nearest.to(device),
        )


def merge(results: Sequence[WorstCaseResult]) -> WorstCaseResult:
    """Consecutive batches' results (same attacks) as one: per-example fields joined, costs summed."""
    first = results[0]
    cost = {name: {k: sum(r.cost[name][k] for r in results) for k in c} for name, c in first.cost.items()}
    return WorstCaseResult(
        torch.cat([r.x_adv for r in results]),
        torch.cat([r.robust for r in results]),
        [b for r in results for b in r.broken_by],
        {k: torch.cat([r.robust_after[k] for r in results]) for k in first.robust_after},
        torch.cat([r.forward for r in results]),
        torch.cat([r.backward for r in results]),
        cost,
        torch.cat([r.nearest for r in results]),
    )


def deferred_part(attacks: Mapping[str, Attack]) -> int:
    """How many attacks at the end of ``attacks`` spend their budget nearest-first (:class:`Probed`):
    run over many batches, they do best once on every batch's survivors together, ordered by the margins
    the earlier attacks left, instead of one probe per batch."""
    from bastion.attacks.probe import Probed

    k = 0
    for attack in reversed(list(attacks.values())):
        if not isinstance(attack, Probed):
            break
        k += 1
    return k


def worst_case(
    model: Classifier,
    x: Tensor,
    y: Tensor,
    attacks: Mapping[str, Attack],
    threat: ThreatModel,
    *,
    rng: torch.Generator | None = None,
) -> WorstCaseResult:
    """Run ``attacks`` in order, each on the examples still robust, and keep the worst case per example."""
    if not attacks:
        raise InputValidationError("worst_case needs at least one attack")
    return extend(model, x, y, attacks, threat, clean_start(model, x, y), rng=rng)


def worst_case_in_batches(
    model: Classifier,
    x: Tensor,
    y: Tensor,
    attacks: Mapping[str, Attack],
    threat: ThreatModel,
    *,
    batches: Sequence[tuple[int, int]],
    rng_of: Callable[[int], torch.Generator | None],
    gather: Callable[[list[tuple[int, WorstCaseResult]]], list[tuple[int, WorstCaseResult]]] = lambda r: r,
) -> WorstCaseResult:
    """The worst case over every example of ``x``, batch by batch, with the trailing nearest-first attacks
    (:func:`deferred_part`) run once over all batches' survivors.

    ``batches`` are the (start, stop) rows this process attacks; ``rng_of(start)`` gives each batch's
    generator and ``rng_of(len(x))`` the deferred attacks'. ``gather`` turns this process's (start,
    result) pairs into every process's (identity in one process); the deferred attacks then run on
    every process alike, so a sharded run gives the single-process result.
    """
    if not attacks:
        raise InputValidationError("worst_case needs at least one attack")
    names = list(attacks)
    k = deferred_part(attacks)
    early = {n: attacks[n] for n in names[: len(names) - k]}
    late = {n: attacks[n] for n in names[len(names) - k :]}
    mine = []
    for b, (start, stop) in enumerate(batches):
        progress.advance(b, len(batches), "batches")
        xb, yb = x[start:stop], y[start:stop]
        with progress.task(f"batch {b + 1}/{len(batches)}"):
            r = extend(model, xb, yb, early, threat, clean_start(model, xb, yb), rng=rng_of(start))
        mine.append((start, r.to(torch.device("cpu"))))
    progress.advance(len(batches), len(batches), "batches")
    parts = sorted(gather(mine), key=lambda p: p[0])
    if parts:
        whole = merge([r for _, r in parts]).to(x.device)
    else:  # no examples anywhere: the attacks have nothing to run on, but every one gets its record
        whole = extend(model, x, y, early, threat, clean_start(model, x, y))
    if not late:
        return whole
    with progress.task("every batch's survivors"):
        return extend(model, x, y, late, threat, whole, rng=rng_of(len(x)))


def clean_start(model: Classifier, x: Tensor, y: Tensor) -> WorstCaseResult:
    """The worst case before any attack: robust where the model is right on the clean input."""
    if y.shape[0] != x.shape[0]:
        raise InputValidationError(f"batch size mismatch: x has {x.shape[0]} examples, y has {y.shape[0]}")
    n = x.shape[0]
    with torch.no_grad(), evaluating(model):
        clean_logits = model(x)
    robust = clean_logits.argmax(dim=1) == y
    return WorstCaseResult(
        x_adv=x.clone(),
        robust=robust,
        broken_by=[None if bool(r) else CLEAN for r in robust],
        robust_after={},
        forward=torch.ones(n, dtype=torch.float64, device=x.device),
        backward=torch.zeros(n, dtype=torch.float64, device=x.device),
        cost={},
        nearest=goal_score(clean_logits, Misclassify(y)),
    )


def extend(
    model: Classifier,
    x: Tensor,
    y: Tensor,
    attacks: Mapping[str, Attack],
    threat: ThreatModel,
    start: WorstCaseResult,
    *,
    rng: torch.Generator | None = None,
) -> WorstCaseResult:
    """``start`` (on the same ``x``, ``y``) followed by ``attacks``, each on the examples still robust."""
    robust = start.robust.clone()
    nearest = start.nearest.clone()
    broken_by = list(start.broken_by)
    x_adv = start.x_adv.clone()
    forward, backward = start.forward.clone(), start.backward.clone()
    robust_after = dict(start.robust_after)
    cost = {k: dict(v) for k, v in start.cost.items()}
    for k, (name, attack) in enumerate(attacks.items()):
        progress.advance(k, len(attacks), "attacks", current=name)
        idx = robust.nonzero().squeeze(1)
        t0 = time.perf_counter()
        n_fwd = n_bwd = 0
        if idx.numel():
            goal = Misclassify(y[idx])
            result = attack(model, x[idx], goal, threat, rng=rng, prior_score=nearest[idx])
            if result.logits is not None:
                nearest[idx] = torch.minimum(nearest[idx], goal_score(result.logits, goal))
            n_fwd, n_bwd = result.n_forward, result.n_backward
            if result.n_queries is not None:
                forward[idx] += result.n_queries.to(forward)
            else:
                forward[idx] += n_fwd / idx.numel()
            backward[idx] += n_bwd / idx.numel()
            hit = idx[result.success]
            x_adv[hit] = result.x_adv[result.success]
            robust[hit] = False
            for i in hit.tolist():
                broken_by[i] = name
        robust_after[name] = robust.clone()
        cost[name] = {
            "forward_passes": n_fwd,
            "backward_passes": n_bwd,
            "wall_time_s": round(time.perf_counter() - t0, 4),
            "examples_attacked": int(idx.numel()),
        }
        log.debug("%s: %d of %d still robust", name, int(robust.sum()), x.shape[0])
    progress.advance(len(attacks), len(attacks), "attacks")
    return WorstCaseResult(x_adv, robust, broken_by, robust_after, forward, backward, cost, nearest)
