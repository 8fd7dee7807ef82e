"""Evaluate a runtime defense with the attacks that ignore it and the adaptive attacks that target it.

The number that matters is the failure rate: the share of all test inputs that end misclassified AND
unflagged, what an attacker actually gets. It is reported per attack and eps, with the worst case over
all attacks (``ensemble``) per input.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score, roc_curve
from torch import Tensor, nn

from bastion.attacks import PGD, Attack
from bastion.attacks.adaptive import AdaptivePGD, Transfer
from bastion.attacks.losses import goal_score
from bastion.attacks.probe import Probed
from bastion.attacks.worst_case import AttackSequence
from bastion.data.spec import Split
from bastion.defenses.pipeline import Decision, DefendedClassifier
from bastion.defenses.transforms import is_randomized
from bastion.evaluation.plain import AccuracyCells, start_cells
from bastion.evaluation.record import ENSEMBLE, Evaluation, Table, put, stored, stored_interval, worst_case
from bastion.evaluation.runner import CellHook, run_grid
from bastion.goals import Misclassify
from bastion.threat import ThreatModel

#: Decimal places of the stored ROC points and latencies.
ROC_DIGITS = 4
RATIO_DIGITS = 3


#: The detector-aware attack's sweep of penalty weights, one restart each.
DETECTOR_WEIGHTS = (0.5, 2.0, 8.0)


def adaptive_attacks(
    defended: DefendedClassifier, *, n_steps: int = 50, eot_samples: int | None = 8
) -> dict[str, Attack]:
    """The adaptive attacks this defense calls for (Tramer et al. 2020's checklist, in miniature).

    - ``bpda-pgd`` (deterministic defense) or ``eot-pgd`` (randomized: transforms, model or detector):
      PGD with two restarts on the whole defense, non-differentiable transforms under BPDA, gradients
      averaged over ``eot_samples`` draws when randomized;
    - ``detector-aware-pgd`` when there is a detector: the same plus ``-lambda * max(0, margin + kappa)``,
      one restart per lambda of :data:`DETECTOR_WEIGHTS`; success = misclassified and unflagged;
    - ``transfer-pgd``: PGD crafted on the undefended model, replayed on the defense.

    In the evaluation every adaptive attack also keeps, per input, any evasion a plain attack found at the
    same eps (an attacker who knows the defense has the plain attacks too), so it is never weaker.
    """
    randomized = is_randomized_defense(defended)
    eot = (eot_samples or 8) if randomized else 1
    attacks: dict[str, Attack] = {}
    attacks["eot-pgd" if randomized else "bpda-pgd"] = AdaptivePGD(n_steps=n_steps, eot_samples=eot, n_restarts=2)
    if defended.detector is not None:
        attacks["detector-aware-pgd"] = AdaptivePGD(n_steps=n_steps, eot_samples=eot, detector_weights=DETECTOR_WEIGHTS)
    attacks["transfer-pgd"] = Transfer(base=PGD(n_steps=n_steps))
    return attacks


def eot_samples_needed(
    defended: DefendedClassifier,
    x: Tensor,
    y: Tensor,
    *,
    max_samples: int = 64,
    min_cosine: float = 0.9,
    seed: int = 0,
) -> int:
    """The fewest EOT draws (a power of two, up to ``max_samples``) whose averaged gradient has converged:
    two independent estimates of the defense's loss gradient agree to a median cosine of ``min_cosine``.

    Too few draws give a noisy gradient and an attack that understates what EOT can do; too many waste
    the budget. The test runs on the BPDA surrogate, where the attack computes its gradients.
    """
    from bastion.attacks.adaptive import surrogate

    forward = surrogate(defended)

    def estimate(k: int) -> Tensor:
        xr = x.detach().repeat(k, *[1] * (x.dim() - 1)).requires_grad_(True)
        loss = nn.functional.cross_entropy(forward(xr), y.repeat(k), reduction="sum")
        (grad,) = torch.autograd.grad(loss, xr)
        return grad.view(k, *x.shape).mean(dim=0).flatten(1)

    k = 1
    with torch.random.fork_rng(devices=[]):  # the draws do not disturb the caller's random stream
        torch.manual_seed(seed)
        while k < max_samples:
            a, b = estimate(k), estimate(k)
            cosine = nn.functional.cosine_similarity(a, b, dim=1, eps=1e-12)
            if float(cosine.median()) >= min_cosine:
                break
            k *= 2
    return k


def is_randomized_defense(defended: DefendedClassifier) -> bool:
    """True when any part (transforms, model, detector) draws randomness: the evaluation then needs EOT."""
    return bool(getattr(defended, "randomized", False)) or any(is_randomized(t) for t in defended.transforms)


def auroc(clean_scores: Tensor, adv_scores: Tensor) -> float | None:
    """Area under the ROC curve separating adversarial (positive) from clean scores; None if either is empty."""
    if clean_scores.numel() == 0 or adv_scores.numel() == 0:
        return None
    labels = torch.cat([torch.zeros(clean_scores.numel()), torch.ones(adv_scores.numel())])
    scores = torch.cat([clean_scores.cpu().double(), adv_scores.cpu().double()])
    return stored(roc_auc_score(labels.numpy(), scores.numpy()))


def roc_points(clean_scores: Tensor, adv_scores: Tensor, n_points: int = 51) -> dict[str, list[float]] | None:
    """The ROC curve (adversarial = positive) sampled at ``n_points`` evenly spaced false-positive rates."""
    if clean_scores.numel() == 0 or adv_scores.numel() == 0:
        return None
    labels = np.r_[np.zeros(clean_scores.numel()), np.ones(adv_scores.numel())]
    scores = np.r_[clean_scores.cpu().double().numpy(), adv_scores.cpu().double().numpy()]
    fpr, tpr, _ = roc_curve(labels, scores)
    grid = np.linspace(0.0, 1.0, n_points)
    return {
        "fpr": [stored(v, ROC_DIGITS) for v in grid],
        "tpr": [stored(v, ROC_DIGITS) for v in np.interp(grid, fpr, tpr)],
    }


def median_time(fn: Callable[[], object], repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bare_model(defended: DefendedClassifier) -> nn.Module:
    """What the defense wraps, without transforms or detectors (an ensemble's first member)."""
    members = getattr(defended.model, "members", None)
    return members[0] if members is not None else defended.model


def latency_ratio(defended: DefendedClassifier, x: Tensor, repeats: int = 5) -> tuple[float, float, float]:
    """(ratio, defended seconds per input, bare seconds per input): median over repeats of one batch."""
    bare = bare_model(defended)
    with torch.no_grad():
        t_bare = median_time(lambda: bare(x), repeats)
        t_def = median_time(lambda: defended.decide(x), repeats)
    return t_def / max(t_bare, 1e-9), t_def / len(x), t_bare / len(x)


@dataclass
class DefenseCells:
    """Measure: the plain cells on the whole defense, plus what the defense decides on each cell's
    adversarial inputs (detection, failure, AUROC); the ensemble adds the per-input worst failure."""

    defended: DefendedClassifier
    accuracy: AccuracyCells
    clean: Decision
    report: dict[str, Any]
    max_eps: float
    adaptive: frozenset[str] = frozenset()
    always_ensemble: bool = False
    sequence: bool = False
    n: int = field(init=False)
    _plain_robust: dict[float, Tensor] = field(default_factory=dict, init=False)
    #: eps -> (N,) inputs some plain attack made fail, and (N, *S) the worst input a plain attack found for
    #: each: a failing one if any, else a misclassified (flagged) one if any, else the first attack's.
    _plain_failed: dict[float, Tensor] = field(default_factory=dict, init=False)
    _plain_wrong: dict[float, Tensor] = field(default_factory=dict, init=False)
    _plain_x: dict[float, Tensor] = field(default_factory=dict, init=False)
    #: eps -> (N,) the lowest margin (``goal_score``) of the defense's label any plain attack reached per
    #: input: the probed Square attacks the inputs nearest to breaking first, as in a model's sequence.
    _plain_margin: dict[float, Tensor] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.n = len(self.accuracy.target.split)

    def cell(self, name: str, attack: Attack, eps: float) -> tuple[Tensor, Tensor]:
        """(robust, failed) per input: failed = misclassified and not flagged.

        In a ``sequence`` suite each plain attack runs only on the inputs no earlier one made fail, the others
        keep the worst input found for them, and robust accuracy reads "after this attack and all earlier
        ones". A :class:`Probed` attack (the expensive query-based one, spent where it can matter) runs only
        on the inputs no earlier one misclassified: it ignores the detector, so on a misclassified but
        flagged input it mostly re-finds a misclassification it cannot use. On the demo's defense that
        was 40% of the evaluation's time for 2 of 360 inputs at eps 0.1 and 0.2, while re-running the
        gradient attacks there found 20 unflagged evasions at 0.2, so they keep doing it.
        """
        probed = isinstance(attack, Probed)
        skip = self._plain_wrong if probed else self._plain_failed
        done = skip.get(eps) if self.sequence and name not in self.adaptive else None
        prior = self._plain_margin.get(eps) if self.sequence and probed else None
        result = self.accuracy.cell(name, attack, eps, done=done, prior_score=prior)
        robust, x_adv = result.correct, result.x_adv
        if done is not None:
            x_adv = torch.where(done.view(-1, *[1] * (x_adv.dim() - 1)), self._plain_x[eps], x_adv)
            robust = robust & self._plain_robust[eps]
            self.accuracy.ev.record(name, eps, robust)
        if self.sequence and name not in self.adaptive:
            self._plain_robust[eps] = robust
        y = self.accuracy.target.split.y
        d = self.defended.decide(x_adv)
        failed = (d.labels != y) & ~d.flagged
        if name in self.adaptive and eps in self._plain_failed:
            kept = self._plain_failed[eps] & ~failed
            if kept.any():
                x_adv = torch.where(kept.view(-1, *[1] * (x_adv.dim() - 1)), self._plain_x[eps], x_adv)
                robust = robust & ~kept
                self.accuracy.ev.record(name, eps, robust)
                d = self.defended.decide(x_adv)
                failed = (d.labels != y) & ~d.flagged
            put(self.report.setdefault("kept_plain_evasions", {}), name, eps, int(kept.sum()))
        wrong = d.labels != y
        if name not in self.adaptive:
            self._remember_plain(eps, x_adv, failed, wrong)
            self._remember_margin(eps, d)
        fooled = wrong & (self.clean.labels == y)
        detected = d.flagged[fooled]
        has_detector = self.defended.detector is not None
        put(self.report["detection_rate"], name, eps, stored(detected.float().mean()) if detected.numel() else None)
        self.record_failure(name, eps, failed)
        put(self.report["auroc"], name, eps, auroc(self.clean.scores, d.scores[fooled]) if has_detector else None)
        if has_detector and eps == self.max_eps:
            put(self.report.setdefault("roc", {}), name, eps, roc_points(self.clean.scores, d.scores[fooled]))
        return robust, failed

    def _remember_plain(self, eps: float, x_adv: Tensor, failed: Tensor, wrong: Tensor) -> None:
        """Keep per input the worst plain result: failing beats misclassified-but-flagged beats correct."""
        if eps not in self._plain_failed:
            self._plain_failed[eps], self._plain_wrong[eps], self._plain_x[eps] = failed, wrong, x_adv.clone()
            return
        rank = 2 * failed.long() + wrong.long()
        better = rank > 2 * self._plain_failed[eps].long() + self._plain_wrong[eps].long()
        self._plain_x[eps][better] = x_adv[better]
        self._plain_failed[eps] = self._plain_failed[eps] | failed
        self._plain_wrong[eps] = self._plain_wrong[eps] | wrong

    def _remember_margin(self, eps: float, decision: Decision) -> None:
        """Lower the per-input margin record (which starts at the clean input's) with this cell's."""
        before = self._plain_margin.get(eps)
        if before is None:
            before = self._margin(self.clean)
        self._plain_margin[eps] = torch.minimum(before, self._margin(decision))

    def _margin(self, decision: Decision) -> Tensor:
        """(N,) the margin of the defense's label, from the log of its softmax: the log-softmax differs
        from the logits by one constant per input, so the gap between two labels is the same. Inputs
        without usable probabilities count as farthest (they are flagged anyway)."""
        probs = decision.probabilities
        y = self.accuracy.target.split.y
        if probs is None:
            return torch.full(y.shape, float("inf"), device=y.device)
        score = goal_score(probs.clamp_min(torch.finfo(probs.dtype).tiny).log(), Misclassify(y))
        return torch.nan_to_num(score, nan=float("inf"))

    def record_failure(self, name: str, eps: float, failed: Tensor) -> None:
        put(self.report["failure_rate"], name, eps, stored(failed.float().mean()))
        put(self.report["failure_rate_ci"], name, eps, stored_interval(int(failed.sum()), self.n))

    def ensemble(self, eps: float, cells: Sequence[tuple[Tensor, Tensor]]) -> None:
        self.accuracy.record_worst(eps, [robust for robust, _ in cells])
        unfailed = worst_case((~failed for _, failed in cells), torch.ones_like(cells[0][1]))
        self.record_failure(ENSEMBLE, eps, ~unfailed)


def defense_report(
    defended: DefendedClassifier, test: Split, clean: Decision, adaptive_names: list[str]
) -> dict[str, Any]:
    """The ``defense`` section before any attack: description, false positives, bare and reject rates."""
    bare = bare_model(defended)
    with torch.no_grad():
        bare_correct = torch.cat(
            [bare(test.x[i : i + 512]).argmax(1) == test.y[i : i + 512] for i in range(0, len(test), 512)]
        )
    n = len(test)
    fp = int(clean.flagged.sum())
    has_detector = defended.detector is not None
    tables: dict[str, Table] = {"detection_rate": {}, "failure_rate": {}, "failure_rate_ci": {}, "auroc": {}}
    report: dict[str, Any] = {
        "description": defended.describe(),
        "false_positive_rate": stored(fp / n) if has_detector else 0.0,
        "false_positive_rate_ci": stored_interval(fp, n) if has_detector else None,
        "clean_accuracy_bare": stored(bare_correct.float().mean()),
        **tables,
        "adaptive": bool(adaptive_names),
        "adaptive_attacks": adaptive_names,
    }
    if clean.actions is not None:
        report["reject_rate"] = stored((clean.actions == 2).float().mean())
    return report


def evaluate_defense(
    defended: DefendedClassifier,
    test: Split,
    attacks: dict[str, Attack],
    threat: ThreatModel,
    eps_values: Sequence[float],
    *,
    seed: int = 0,
    batch_size: int = 256,
    on_cell: CellHook | None = None,
    adaptive: bool = True,
    adaptive_steps: int = 50,
    eot_samples: int | None = None,
) -> Evaluation:
    """Attack the whole defense with ``attacks`` (non-adaptive: they ignore the detector; gradients go
    through the transforms by their straight-through BPDA) and, when ``adaptive``, with
    :func:`adaptive_attacks` too. Per (attack, eps): robust accuracy of the defended classifier;
    ``detection_rate``, the share of fooled inputs (correct when clean, wrong after the attack) that are
    flagged; ``failure_rate``, the share of all inputs that end misclassified and unflagged; ``auroc`` of
    the anomaly score on clean inputs vs fooled adversarial inputs. ``failure_rate["ensemble"]`` is the
    per-input worst case over all attacks. ``eot_samples`` None: as many as :func:`eot_samples_needed` finds
    on the first test examples (randomized defenses only).
    """
    suite = dict(attacks)
    adaptive_names: list[str] = []
    if adaptive and eot_samples is None and is_randomized_defense(defended):
        probe = test.take(min(len(test), 64)).to(next(defended.parameters()).device)
        eot_samples = eot_samples_needed(defended, probe.x, probe.y, seed=seed)
    if adaptive:
        extra = adaptive_attacks(defended, n_steps=adaptive_steps, eot_samples=eot_samples)
        adaptive_names = [n for n in extra if n not in suite]
        suite.update({n: extra[n] for n in adaptive_names})
    accuracy = start_cells(AccuracyCells, defended, test, threat, seed=seed, batch_size=batch_size)
    test = accuracy.target.split
    clean = defended.decide(test.x)
    report = defense_report(defended, test, clean, adaptive_names)
    if adaptive and is_randomized_defense(defended):
        report["eot_samples"] = eot_samples
    cells = DefenseCells(
        defended,
        accuracy,
        clean,
        report,
        max(eps_values),
        adaptive=frozenset(adaptive_names),
        sequence=isinstance(attacks, AttackSequence),
    )
    run_grid(suite, eps_values, cells, on_cell=on_cell)
    ratio, per_def, per_bare = latency_ratio(defended, test.x[: min(len(test), 256)])
    report["latency_ratio"] = stored(ratio, RATIO_DIGITS)
    report["latency_ms_per_input"] = {
        "defended": stored(1e3 * per_def, ROC_DIGITS),
        "bare": stored(1e3 * per_bare, ROC_DIGITS),
    }
    accuracy.ev.defense = report
    return accuracy.ev
