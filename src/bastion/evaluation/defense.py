"""Evaluate a runtime defense with the attacks that ignore it and the adaptive attacks that target it.

The number that matters is the failure rate: the share of all test inputs that end misclassified AND
unflagged, what an attacker actually gets. It is reported per attack and eps, with the worst case over
all attacks (``ensemble``) per input.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from bastion.attacks import PGD, Attack
from bastion.attacks.adaptive import AdaptivePGD, Transfer
from bastion.data.spec import Split
from bastion.defenses.pipeline import DefendedClassifier
from bastion.defenses.transforms import is_randomized
from bastion.evaluation.evaluate import ENSEMBLE, CellHook, Evaluation, _set, evaluate
from bastion.evaluation.stats import wilson
from bastion.threat import ThreatModel


def adaptive_attacks(
    defended: DefendedClassifier, *, n_steps: int = 50, eot_samples: int = 8, detector_weight: float = 2.0
) -> dict[str, Attack]:
    """The adaptive attacks this defense calls for (Tramer et al. 2020's checklist, in miniature).

    - ``bpda-pgd`` (deterministic defense) or ``eot-pgd`` (randomized: transforms, model or detector):
      PGD on the whole defense, non-differentiable transforms under BPDA, gradients averaged over
      ``eot_samples`` draws when randomized;
    - ``detector-aware-pgd`` when there is a detector: the same plus ``-lambda * max(0, margin + kappa)``;
    - ``transfer-pgd``: PGD crafted on the undefended model, replayed on the defense.
    """
    randomized = is_randomized_defense(defended)
    eot = eot_samples if randomized else 1
    attacks: dict[str, Attack] = {}
    attacks["eot-pgd" if randomized else "bpda-pgd"] = AdaptivePGD(n_steps=n_steps, eot_samples=eot)
    if defended.detector is not None:
        attacks["detector-aware-pgd"] = AdaptivePGD(n_steps=n_steps, eot_samples=eot, detector_weight=detector_weight)
    attacks["transfer-pgd"] = Transfer(base=PGD(n_steps=n_steps))
    return attacks


def is_randomized_defense(defended: DefendedClassifier) -> bool:
    """True when any part (transforms, model, detector) draws randomness: the evaluation then needs EOT."""
    return bool(getattr(defended, "randomized", False)) or any(is_randomized(t) for t in defended.transforms)


def auroc(clean_scores: Tensor, adv_scores: Tensor) -> float | None:
    """Area under the ROC curve separating adversarial (positive) from clean scores; None if either is empty."""
    if clean_scores.numel() == 0 or adv_scores.numel() == 0:
        return None
    from sklearn.metrics import roc_auc_score

    labels = torch.cat([torch.zeros(clean_scores.numel()), torch.ones(adv_scores.numel())])
    scores = torch.cat([clean_scores.cpu().double(), adv_scores.cpu().double()])
    return round(float(roc_auc_score(labels.numpy(), scores.numpy())), 6)


def roc_points(clean_scores: Tensor, adv_scores: Tensor, n_points: int = 51) -> dict[str, list[float]] | None:
    """The ROC curve (adversarial = positive) sampled at ``n_points`` evenly spaced false-positive rates."""
    if clean_scores.numel() == 0 or adv_scores.numel() == 0:
        return None
    import numpy as np
    from sklearn.metrics import roc_curve

    labels = np.r_[np.zeros(clean_scores.numel()), np.ones(adv_scores.numel())]
    scores = np.r_[clean_scores.cpu().double().numpy(), adv_scores.cpu().double().numpy()]
    fpr, tpr, _ = roc_curve(labels, scores)
    grid = np.linspace(0.0, 1.0, n_points)
    return {"fpr": [round(float(v), 4) for v in grid], "tpr": [round(float(v), 4) for v in np.interp(grid, fpr, tpr)]}


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
    eot_samples: int = 8,
) -> Evaluation:
    """Attack the whole defense with ``attacks`` (non-adaptive: they ignore the detector; gradients go
    through the transforms by their straight-through BPDA) and, when ``adaptive``, with
    :func:`adaptive_attacks` too. Per (attack, eps): robust accuracy of the defended classifier;
    ``detection_rate``, the share of fooled inputs (correct when clean, wrong after the attack) that are
    flagged; ``failure_rate``, the share of all inputs that end misclassified and unflagged; ``auroc`` of
    the anomaly score on clean inputs vs fooled adversarial inputs. ``failure_rate["ensemble"]`` is the
    per-input worst case over all attacks.
    """
    suite = dict(attacks)
    adaptive_names: list[str] = []
    if adaptive:
        extra = adaptive_attacks(defended, n_steps=adaptive_steps, eot_samples=eot_samples)
        adaptive_names = [n for n in extra if n not in suite]
        suite.update({n: extra[n] for n in adaptive_names})
    ev, adversarial = evaluate(
        defended,
        test,
        suite,
        threat,
        eps_values,
        seed=seed,
        batch_size=batch_size,
        on_cell=on_cell,
        keep_adversarial=True,
    )
    device = next(defended.parameters()).device
    test = test.to(device)
    detector = defended.detector
    clean = defended.decide(test.x)
    clean_bare = bare_model(defended)
    with torch.no_grad():
        bare_correct = torch.cat(
            [clean_bare(test.x[i : i + 512]).argmax(1) == test.y[i : i + 512] for i in range(0, len(test), 512)]
        )
    n = len(test)
    fp = int(clean.flagged.sum())
    report: dict[str, Any] = {
        "description": defended.describe(),
        "false_positive_rate": round(fp / n, 6) if detector is not None else 0.0,
        "false_positive_rate_ci": [round(v, 6) for v in wilson(fp, n)] if detector is not None else None,
        "clean_accuracy_bare": round(float(bare_correct.float().mean()), 6),
        "detection_rate": {},
        "failure_rate": {},
        "failure_rate_ci": {},
        "auroc": {},
        "adaptive": bool(adaptive_names),
        "adaptive_attacks": adaptive_names,
    }
    if clean.actions is not None:
        report["reject_rate"] = round(float((clean.actions == 2).float().mean()), 6)
    worst: dict[float, Tensor] = {}
    for (name, eps), x_adv in adversarial.items():
        d = defended.decide(x_adv)
        wrong = d.labels != test.y
        fooled = wrong & (clean.labels == test.y)
        failed = wrong & ~d.flagged
        worst[eps] = worst.get(eps, torch.zeros_like(failed)) | failed
        detected = d.flagged[fooled]
        _set(
            report["detection_rate"],
            name,
            eps,
            round(float(detected.float().mean()), 6) if detected.numel() else None,
        )
        _set(report["failure_rate"], name, eps, round(float(failed.float().mean()), 6))
        _set(report["failure_rate_ci"], name, eps, [round(v, 6) for v in wilson(int(failed.sum()), n)])
        _set(report["auroc"], name, eps, auroc(clean.scores, d.scores[fooled]) if detector is not None else None)
        if detector is not None and eps == max(eps_values):
            _set(report.setdefault("roc", {}), name, eps, roc_points(clean.scores, d.scores[fooled]))
    if len(suite) > 1:
        for eps, failed in worst.items():
            _set(report["failure_rate"], ENSEMBLE, eps, round(float(failed.float().mean()), 6))
            _set(report["failure_rate_ci"], ENSEMBLE, eps, [round(v, 6) for v in wilson(int(failed.sum()), n)])
    ratio, per_def, per_bare = latency_ratio(defended, test.x[: min(len(test), 256)])
    report["latency_ratio"] = round(ratio, 3)
    report["latency_ms_per_input"] = {"defended": round(1e3 * per_def, 4), "bare": round(1e3 * per_bare, 4)}
    ev.defense = report
    return ev
