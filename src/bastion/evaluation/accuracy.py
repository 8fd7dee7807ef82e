"""Accuracy and robust accuracy over a split, in batches, on the model's device."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from bastion import progress
from bastion._typing import Classifier
from bastion.attacks.base import Attack, checked_logits, evaluating
from bastion.data.spec import Split
from bastion.goals import Goal, Misclassify
from bastion.threat import ThreatModel

#: The goal an attack pursues on a batch, from its labels: ``Misclassify`` unless the evaluation says otherwise.
GoalOf = Callable[[Tensor], Goal]


@torch.no_grad()
def predict(model: Classifier, x: Tensor, batch_size: int = 512) -> Tensor:
    """(N,) predicted labels, in eval mode.

    Raises:
        InputValidationError: the model returns NaN or infinite logits (evaluation refuses to report).
    """
    with evaluating(model):
        return torch.cat(
            [checked_logits(model, x[i : i + batch_size], f"x[{i}:]").argmax(1) for i in range(0, len(x), batch_size)]
        )


def accuracy(model: Classifier, split: Split, batch_size: int = 512) -> float:
    if len(split) == 0:
        return float("nan")
    return float((predict(model, split.x, batch_size) == split.y).float().mean())


@dataclass(frozen=True)
class RobustResult:
    """Per-example outcome of one attack at one budget."""

    x_adv: Tensor
    correct: Tensor  # (N,) bool: the attack did not reach its goal (untargeted: prediction on x_adv is right)
    n_forward: int
    n_backward: int
    wall_time_s: float

    @property
    def accuracy(self) -> float:
        return float(self.correct.float().mean()) if self.correct.numel() else float("nan")


def robust_accuracy(
    model: Classifier,
    split: Split,
    attack: Attack,
    threat: ThreatModel,
    *,
    rng: torch.Generator | None = None,
    batch_size: int = 256,
    goal: GoalOf = Misclassify,
    prior_score: Tensor | None = None,
) -> RobustResult:
    """Attack every example (untargeted, unless ``goal`` maps the labels to another goal) and report which
    the attack did not win (``correct``).

    An example the model already gets wrong counts as not robust; the attack skips it. ``prior_score`` (N,):
    the lowest margin earlier attacks reached per example, handed on batch by batch (see ``Attack``).
    """
    xs, correct = [], []
    n_fwd = n_bwd = 0
    wall = 0.0
    starts = range(0, len(split), batch_size)
    progress.advance(0, len(starts), "batches")
    for b, i in enumerate(starts, 1):
        x, y = split.x[i : i + batch_size], split.y[i : i + batch_size]
        prior = prior_score[i : i + batch_size] if prior_score is not None else None
        result = attack(model, x, goal(y), threat, rng=rng, prior_score=prior)
        xs.append(result.x_adv)
        correct.append(~result.success)
        n_fwd, n_bwd, wall = n_fwd + result.n_forward, n_bwd + result.n_backward, wall + result.wall_time_s
        progress.advance(b, len(starts), "batches")
    return RobustResult(torch.cat(xs), torch.cat(correct), n_fwd, n_bwd, wall)
