"""Asymmetric evasion evaluation for tabular security data.

Only malicious rows are attacked, toward the benign class (``Reach(benign)``). Every adversarial example
is written back as a raw record (``inverse_transform``) and re-checked by the independent raw validator
(``validate_raw`` with the original rows as reference, so immutable features are checked too); an
evasion counts only if that record is valid. The same attacks are re-run with a plain [0, 1] box as the
domain to show, beside it, what an unconstrained attack would claim.

``robust_accuracy`` in the returned entry is the detection rate on the malicious rows under attack
(1 - evasion rate); ``clean_accuracy`` is on every row. Precision, recall and MCC treat "malicious"
(any non-benign class) as positive, with the malicious rows replaced by their adversarial versions.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from bastion._typing import Norm
from bastion.attacks import Attack
from bastion.attacks.adaptive import AdaptivePGD, DetectorPenalty
from bastion.attacks.search import CoordinateSearch
from bastion.data.spec import Split
from bastion.data.tabular.domain import TabularDomain
from bastion.data.tabular.preprocess import validate_raw
from bastion.defenses.pipeline import Defense
from bastion.domain import BoxDomain
from bastion.errors import ConfigError
from bastion.evaluation.accuracy import predict
from bastion.evaluation.defense import auroc
from bastion.evaluation.evaluate import ENSEMBLE, CellHook, eps_key
from bastion.evaluation.stats import wilson
from bastion.goals import Reach
from bastion.threat import ThreatModel

log = logging.getLogger(__name__)


def detection_metrics(pred_malicious: np.ndarray, malicious: np.ndarray) -> dict[str, float]:
    """Precision, recall and Matthews correlation with malicious as the positive class."""
    tp = float((pred_malicious & malicious).sum())
    fp = float((pred_malicious & ~malicious).sum())
    fn = float((~pred_malicious & malicious).sum())
    tn = float((~pred_malicious & ~malicious).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    denom = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    mcc = (tp * tn - fp * fn) / denom if denom else 0.0
    return {"precision": round(precision, 6), "recall": round(recall, 6), "mcc": round(mcc, 6)}


@dataclass
class TabularAttackOutcome:
    """Per malicious row, for one (attack, eps): the adversarial rows and whether each evaded validly."""

    x_adv: Tensor
    evaded: Tensor
    valid: Tensor


def valid_records(domain: TabularDomain, x_adv: Tensor, x: Tensor, raw: pd.DataFrame) -> Tensor:
    """(N,) bool: the raw record passes ``validate_raw`` against the original row and the point is feasible."""
    schema = domain.preprocessor.schema
    ok = validate_raw(domain.raw_records(x_adv), schema, reference=raw) & domain.is_feasible(x_adv, x).cpu().numpy()
    return torch.as_tensor(ok)


def _attack_rows(
    model: nn.Module,
    x: Tensor,
    target: Tensor,
    attack: Attack,
    threat: ThreatModel,
    *,
    seed: int,
    batch_size: int,
) -> tuple[Tensor, Tensor, dict[str, float]]:
    rng = torch.Generator(device=x.device).manual_seed(seed)
    out, success = [], []
    cost = {"forward_passes": 0.0, "backward_passes": 0.0, "wall_time_s": 0.0}
    for start in range(0, len(x), batch_size):
        xb, tb = x[start : start + batch_size], target[start : start + batch_size]
        result = attack(model, xb, Reach(tb), threat, rng=rng)
        out.append(result.x_adv)
        success.append(result.success)
        cost["forward_passes"] += result.n_forward
        cost["backward_passes"] += result.n_backward
        cost["wall_time_s"] += result.wall_time_s
    cost["wall_time_s"] = round(cost["wall_time_s"], 4)
    return torch.cat(out), torch.cat(success), cost


def evaluate_tabular(
    model: nn.Module,
    test: Split,
    raw: pd.DataFrame,
    domain: TabularDomain,
    benign: int,
    attacks: dict[str, Attack],
    norm: str,
    eps_values: Sequence[float],
    *,
    seed: int = 0,
    batch_size: int = 256,
    unconstrained: bool = True,
    on_cell: CellHook | None = None,
) -> tuple[dict[str, Any], dict[tuple[str, float], TabularAttackOutcome]]:
    """Attack the malicious rows of ``test`` toward ``benign``; return a results.json model entry and
    the outcomes per (attack, eps).

    Args:
        raw: the original raw records of ``test`` (row-aligned), the validator's reference.
        domain: the constrained domain (the model's own preprocessing).
        unconstrained: also run every attack with a plain [0, 1] box domain (what it would claim).
    """
    device = next(model.parameters()).device
    test = test.to(device)
    raw = raw.reset_index(drop=True)
    schema = domain.preprocessor.schema
    pred = predict(model, test.x)
    malicious = (test.y != benign).cpu().numpy()
    n, n_mal = len(test), int(malicious.sum())
    clean_correct = (pred == test.y).cpu().numpy()
    idx = torch.as_tensor(np.flatnonzero(malicious), device=device)
    x_mal = test.x[idx]
    target = torch.full((n_mal,), benign, dtype=torch.long, device=device)
    raw_mal = raw.iloc[idx.cpu().numpy()].reset_index(drop=True)
    pred_np = pred.cpu().numpy()
    clean_detected = pred_np[malicious] != benign
    entry: dict[str, Any] = {
        "clean_accuracy": round(float(clean_correct.mean()), 6) if n else 0.0,
        "clean_accuracy_ci": [round(v, 6) for v in wilson(int(clean_correct.sum()), n)],
        "n_examples": n,
        "robust_accuracy": {},
        "robust_accuracy_ci": {},
        "attack_cost": {},
    }
    tab: dict[str, Any] = {
        "n_malicious": n_mal,
        "benign_class": benign,
        "clean": {
            **detection_metrics(pred_np != benign, malicious),
            "detection_rate": round(float(clean_detected.mean()), 6) if n_mal else None,
        },
        "evasion_rate": {},
        "evasion_rate_ci": {},
        "valid_share": {},
        "precision": {},
        "recall": {},
        "mcc": {},
        "unconstrained_robust_accuracy": {},
        "unconstrained_valid_share": {},
        "goal": "Reach(benign) on malicious rows",
    }
    outcomes: dict[tuple[str, float], TabularAttackOutcome] = {}
    box = BoxDomain(torch.zeros(domain.n_features), torch.ones(domain.n_features))
    total = len(attacks) * len(eps_values)
    done = 0
    for eps in eps_values:
        key = eps_key(eps)
        worst = torch.zeros(n_mal, dtype=torch.bool)
        worst_free = torch.zeros(n_mal, dtype=torch.bool)
        for name, attack in attacks.items():
            threat = ThreatModel(norm=Norm(norm), eps=eps, domain=domain)
            x_adv, _, cost = _attack_rows(model, x_mal, target, attack, threat, seed=seed, batch_size=batch_size)
            evaded_pred = (predict(model, x_adv) == benign).cpu()
            valid = valid_records(domain, x_adv, x_mal, raw_mal)
            evaded = evaded_pred & valid
            outcomes[(name, eps)] = TabularAttackOutcome(x_adv.cpu(), evaded, valid)
            worst |= evaded
            _record(entry, tab, name, key, evaded, pred_np, malicious)
            tab["valid_share"].setdefault(name, {})[key] = round(float(valid.float().mean()), 6) if n_mal else None
            entry["attack_cost"].setdefault(name, {})[key] = cost
            if unconstrained:
                free = ThreatModel(norm=Norm(norm), eps=eps, domain=box)
                x_free, _, _ = _attack_rows(model, x_mal, target, attack, free, seed=seed, batch_size=batch_size)
                free_evaded = (predict(model, x_free) == benign).cpu()
                free_valid = (
                    validate_raw(
                        pd.DataFrame(domain.preprocessor.inverse_transform(x_free.cpu().double().numpy())),
                        schema,
                        reference=raw_mal,
                    )
                    & domain.is_feasible(x_free, x_mal).cpu().numpy()
                )
                worst_free |= free_evaded
                tab["unconstrained_robust_accuracy"].setdefault(name, {})[key] = (
                    round(1 - float(free_evaded.float().mean()), 6) if n_mal else None
                )
                tab["unconstrained_valid_share"].setdefault(name, {})[key] = (
                    round(float(free_valid.mean()), 6) if n_mal else None
                )
            done += 1
            log.info("%s eps=%s: evasion %.4f", name, key, float(evaded.float().mean()) if n_mal else 0.0)
            if on_cell is not None:
                on_cell(done, total)
        if len(attacks) > 1:
            _record(entry, tab, ENSEMBLE, key, worst, pred_np, malicious)
            if unconstrained:
                tab["unconstrained_robust_accuracy"].setdefault(ENSEMBLE, {})[key] = (
                    round(1 - float(worst_free.float().mean()), 6) if n_mal else None
                )
    entry["tabular"] = tab
    return entry, outcomes


def _record(
    entry: dict[str, Any],
    tab: dict[str, Any],
    name: str,
    key: str,
    evaded: Tensor,
    pred: np.ndarray,
    malicious: np.ndarray,
) -> None:
    n_mal = int(evaded.numel())
    k = int(evaded.sum())
    robust = 1 - k / n_mal if n_mal else 0.0
    entry["robust_accuracy"].setdefault(name, {})[key] = round(robust, 6)
    entry["robust_accuracy_ci"].setdefault(name, {})[key] = [round(v, 6) for v in wilson(n_mal - k, n_mal)]
    tab["evasion_rate"].setdefault(name, {})[key] = round(k / n_mal, 6) if n_mal else None
    tab["evasion_rate_ci"].setdefault(name, {})[key] = [round(v, 6) for v in wilson(k, n_mal)]
    pred_mal = pred != tab["benign_class"]
    under_attack = pred_mal.copy()
    under_attack[np.flatnonzero(malicious)[evaded.numpy()]] = False
    metrics = detection_metrics(under_attack, malicious)
    for metric in ("precision", "recall", "mcc"):
        tab[metric].setdefault(name, {})[key] = metrics[metric]


def evaluate_tabular_detector(
    defense: Defense,
    test: Split,
    raw: pd.DataFrame,
    domain: TabularDomain,
    benign: int,
    outcomes: dict[tuple[str, float], TabularAttackOutcome],
    norm: str,
    eps_values: Sequence[float],
    *,
    adaptive: dict[str, Attack] | None = None,
    seed: int = 0,
    batch_size: int = 256,
) -> dict[str, Any]:
    """A runtime detector on tabular data, judged by what an evader gets: a valid record, classified
    benign, and not flagged.

    ``outcomes`` are :func:`evaluate_tabular`'s, of the attacks that ignore the detector (run on the
    defense's bare model, whose labels the defense returns unchanged when it has no transforms). The
    detector-aware ``adaptive`` attacks run on the whole defense, toward ``benign``, within the same
    constrained threat model: :class:`AdaptivePGD` reads the detector itself; any other attack (the
    search) attacks :class:`DetectorPenalty` of the defense. Default: PGD-50 with the detection term
    (lambda 2) and the search (20 x 8) on the penalized logits. Per (attack, eps), over
    the malicious rows: ``failure_rate`` (valid, evaded, unflagged), ``detection_rate`` (share of the
    valid evasions flagged) and ``auroc`` (detector score, clean test rows vs valid evasions);
    ``failure_rate["ensemble"]`` is the per-row worst case over all attacks. ``false_positive_rate`` is
    measured on every clean test row (and on the benign ones alone).
    """
    if defense.detector is None:
        raise ConfigError("evaluate_tabular_detector needs a defense with a detector")
    if adaptive is None:
        adaptive = {
            "detector-aware pgd-50": AdaptivePGD(n_steps=50, detector_weight=2.0),
            "detector-aware search": CoordinateSearch(n_iters=20, n_candidates=8),
        }
    device = next(defense.parameters()).device
    test = test.to(device)
    raw = raw.reset_index(drop=True)
    malicious = (test.y != benign).cpu()
    idx = malicious.nonzero().squeeze(1)
    x_mal = test.x[idx.to(device)]
    raw_mal = raw.iloc[idx.numpy()].reset_index(drop=True)
    n_mal = len(x_mal)
    clean = defense.decide(test.x)
    flagged_clean = clean.flagged.cpu()
    n_benign = int((~malicious).sum())
    fp, fp_benign = int(flagged_clean.sum()), int(flagged_clean[~malicious].sum())
    report: dict[str, Any] = {
        "description": defense.describe(),
        "false_positive_rate": round(fp / len(test), 6) if len(test) else None,
        "false_positive_rate_ci": [round(v, 6) for v in wilson(fp, len(test))],
        "false_positive_rate_benign": round(fp_benign / n_benign, 6) if n_benign else None,
        "n_malicious": n_mal,
        "adaptive_attacks": list(adaptive),
        "failure_rate": {},
        "failure_rate_ci": {},
        "detection_rate": {},
        "auroc": {},
        "evasion_rate": {},
    }
    target = torch.full((n_mal,), benign, dtype=torch.long, device=device)
    for eps in eps_values:
        key = eps_key(eps)
        cells = {name: (o.x_adv, o.evaded) for (name, e), o in outcomes.items() if e == eps}
        threat = ThreatModel(norm=Norm(norm), eps=eps, domain=domain)
        for name, attack in adaptive.items():
            surface = defense if isinstance(attack, AdaptivePGD) else DetectorPenalty(defense, benign)
            x_adv, _, _ = _attack_rows(surface, x_mal, target, attack, threat, seed=seed, batch_size=batch_size)
            evaded = (predict(defense, x_adv) == benign).cpu() & valid_records(domain, x_adv, x_mal, raw_mal)
            cells[name] = (x_adv.cpu(), evaded)
        worst = torch.zeros(n_mal, dtype=torch.bool)
        for name, (xa, ev) in cells.items():
            d = defense.decide(xa.to(device))
            failed = ev & ~d.flagged.cpu()
            worst |= failed
            k = int(failed.sum())
            flagged_evasions = d.flagged.cpu()[ev]
            report["failure_rate"].setdefault(name, {})[key] = round(k / n_mal, 6) if n_mal else None
            report["failure_rate_ci"].setdefault(name, {})[key] = [round(v, 6) for v in wilson(k, n_mal)]
            report["evasion_rate"].setdefault(name, {})[key] = round(float(ev.float().mean()), 6) if n_mal else None
            report["detection_rate"].setdefault(name, {})[key] = (
                round(float(flagged_evasions.float().mean()), 6) if flagged_evasions.numel() else None
            )
            report["auroc"].setdefault(name, {})[key] = auroc(clean.scores.cpu(), d.scores.cpu()[ev])
        k = int(worst.sum())
        report["failure_rate"].setdefault(ENSEMBLE, {})[key] = round(k / n_mal, 6) if n_mal else None
        report["failure_rate_ci"].setdefault(ENSEMBLE, {})[key] = [round(v, 6) for v in wilson(k, n_mal)]
    return report
