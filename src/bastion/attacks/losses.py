"""Per-sample attack losses ``(logits (N, C), reference) -> (N,)``. A loss is an argument, not a subclass."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from bastion.goals import Diverge, Goal, Reach


def cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    """(N,) cross-entropy against integer labels."""
    return F.cross_entropy(logits, y, reduction="none")


def margin(logits: Tensor, y: Tensor) -> Tensor:
    """(N,) Carlini-Wagner margin ``max_{j != y} z_j - z_y``: positive once misclassified."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf")).amax(dim=1)
    return other - true


def kl_to_reference(logits: Tensor, ref_probs: Tensor) -> Tensor:
    """(N,) KL(ref || softmax(logits)), the TRADES inner objective (Zhang et al. 2019)."""
    return F.kl_div(logits.log_softmax(dim=1), ref_probs, reduction="none").sum(dim=1)


def kl_between_logits(logits: Tensor, ref_logits: Tensor) -> Tensor:
    """(N,) KL(softmax(ref_logits) || softmax(logits)), computed from log-probabilities on both sides.

    Use this when gradients must flow into the reference too (the TRADES outer loss): with probabilities
    as the target, a class whose probability underflows to exactly 0 gives log(0) in the gradient and NaN
    weights; in log space every term stays finite.
    """
    return F.kl_div(logits.log_softmax(dim=1), ref_logits.log_softmax(dim=1), reduction="none", log_target=True).sum(
        dim=1
    )


def dlr(logits: Tensor, y: Tensor) -> Tensor:
    """Difference-of-logits-ratio loss per sample (Croce & Hein 2020, arXiv:2003.01690).

    Args:
        logits: (N, C) pre-softmax scores.  y: (N,) true labels.
    Returns:
        (N,) loss, larger when closer to misclassification; invariant to shifting and scaling the logits.
    Raises:
        ValueError: if C < 3. Binary security tasks must use cross_entropy or margin.
    """
    if logits.shape[1] < 3:
        raise ValueError(f"the DLR loss needs >= 3 classes, got {logits.shape[1]}")
    sorted_logits, _ = logits.sort(dim=1, descending=True)
    true = logits.gather(1, y[:, None]).squeeze(1)
    top_is_true = sorted_logits[:, 0] == true
    best_other = torch.where(top_is_true, sorted_logits[:, 1], sorted_logits[:, 0])
    scale = (sorted_logits[:, 0] - sorted_logits[:, 2]).clamp_min(1e-12)
    return (best_other - true) / scale


def dlr_targeted(logits: Tensor, y: Tensor, target: Tensor) -> Tensor:
    """Targeted DLR loss per sample (Croce & Hein 2020, eq. 7): ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)``.

    Args:
        logits: (N, C) pre-softmax scores.  y: (N,) true labels.  target: (N,) target labels.
    Returns:
        (N,) loss to maximise; positive once the target logit exceeds the true one.
    Raises:
        ValueError: if C < 4 (the normaliser needs the 4th largest logit).
    """
    if logits.shape[1] < 4:
        raise ValueError(f"the targeted DLR loss needs >= 4 classes, got {logits.shape[1]}")
    sorted_logits, _ = logits.sort(dim=1, descending=True)
    true = logits.gather(1, y[:, None]).squeeze(1)
    tgt = logits.gather(1, target[:, None]).squeeze(1)
    scale = (sorted_logits[:, 0] - (sorted_logits[:, 2] + sorted_logits[:, 3]) / 2).clamp_min(1e-12)
    return -(true - tgt) / scale


def goal_score(logits: Tensor, goal: Goal) -> Tensor:
    """(N,) how far each example is from its goal, to minimise: for label goals the margin of the label
    to keep (or, for ``Reach``, of the best other label over the target), <= 0 once the goal is met; for
    ``Diverge`` minus the KL divergence from the reference (no zero crossing).

    One scale for every attack, so the worst-case sequence can tell which survivors an earlier attack
    brought nearest to breaking (``bastion.attacks.worst_case``).
    """
    if isinstance(goal, Diverge):
        return -kl_to_reference(logits, goal.reference)
    gap = margin(logits, goal.reference)  # best other label over the reference
    return gap if isinstance(goal, Reach) else -gap
