"""Asymmetric evasion evaluation for tabular security data.

Only malicious rows are attacked, toward the benign class (``Reach(benign)``). Every adversarial example
is written back as a raw record (``inverse_transform``) and re-checked by the independent raw validator
(``validate_raw`` with the original rows as reference, so immutable features are checked too); an
evasion counts only if that record is valid. The same attacks are re-run with a plain [0, 1] box as the
domain to show, beside it, what an unconstrained attack would claim.

One denominator per entry (``denominator``: "detection rate on malicious rows"): ``clean_accuracy`` is
the clean detection rate of the malicious rows and ``robust_accuracy`` their detection rate under attack
(1 - evasion rate), both over ``n_examples`` = the malicious rows, so robust can never exceed clean. The
``tabular`` section adds the false-positive rate on the benign rows (not attacked, so the same under
attack) and, labelled as such, ``accuracy_all_rows``. Precision, recall and MCC treat "malicious"
(any non-benign class) as positive, with the malicious rows replaced by their adversarial versions.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
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
from bastion.evaluation.accuracy import RobustResult, predict, robust_accuracy
from bastion.evaluation.defense import auroc
from bastion.evaluation.plain import cost_entry
from bastion.evaluation.record import (
    ENSEMBLE,
    Evaluation,
    eps_key,
    put,
    stored,
    stored_fraction,
    stored_interval,
    stored_mean,
    worst_case,
)
from bastion.evaluation.runner import CellHook, model_device, run_grid, seeded
from bastion.goals import Goal, Reach
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
    return {"precision": stored(precision), "recall": stored(recall), "mcc": stored(mcc)}


#: The one denominator of a tabular evasion entry.
DENOMINATOR = "detection rate on malicious rows"


@dataclass
class TabularAttackOutcome:
    """Per malicious row, for one (attack, eps): the adversarial rows, whether each evaded validly, whether
    the model detected the clean row (else the "evasion" is the model's own miss, not the attack's), and
    the benign margin p(benign) - max p(other) at the adversarial row."""

    x_adv: Tensor
    evaded: Tensor
    valid: Tensor
    clean_detected: Tensor | None = None
    margin: Tensor | None = None

    def real_evasions(self, min_margin: float = 0.0) -> Tensor:
        """(N,) bool: clean-detected rows the attack turned into valid evasions with at least ``min_margin``."""
        real = self.evaded.clone()
        if self.clean_detected is not None:
            real &= self.clean_detected
        if self.margin is not None and min_margin > 0:
            real &= self.margin >= min_margin
        return real


def benign_margin(model: nn.Module, x: Tensor, benign: int, batch_size: int = 512) -> Tensor:
    """(N,) p(benign) - max p(other class) at x (CPU): how far from a coin flip an evasion is."""
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            p = model(x[i : i + batch_size]).softmax(-1)
            others = torch.cat([p[:, :benign], p[:, benign + 1 :]], dim=1)
            out.append((p[:, benign] - others.max(dim=1).values).cpu())
    return torch.cat(out) if out else torch.zeros(0)


def valid_records(domain: TabularDomain, x_adv: Tensor, x: Tensor, raw: pd.DataFrame) -> Tensor:
    """(N,) bool: the raw record passes ``validate_raw`` against the original row and the point is feasible."""
    schema = domain.preprocessor.schema
    records = domain.raw_records(x_adv)
    ok = validate_raw(records, schema, reference=raw, constraints=domain.constraints)
    ok &= domain.is_feasible(x_adv, x).cpu().numpy()
    return torch.as_tensor(ok)


#: Why the unbounded-eps check does not apply to constrained tabular evasion.
CONSTRAINED_REACH = (
    "the tabular domain (immutable features, one-hot groups, relations, integer values) bounds what any "
    "budget can reach, so an unbounded attack need not evade every malicious row"
)


@dataclass(frozen=True)
class MaliciousRows:
    """The target of tabular evasion: the malicious rows, attacked toward ``benign``; the model holds on a
    row unless it is classified benign AND its raw record is valid (:func:`valid_records`)."""

    split: Split
    raw: pd.DataFrame
    domain: TabularDomain
    benign: int
    unbounded_exemption: str | None = CONSTRAINED_REACH

    def goal(self, y: Tensor) -> Goal:
        return Reach(torch.full_like(y, self.benign))

    def run(
        self, model: nn.Module, attack: Attack, threat: ThreatModel, *, seed: int, batch_size: int = 256
    ) -> RobustResult:
        """``attack`` on the rows toward benign, its raw result (success before the raw validator)."""
        rng = seeded(self.split.x.device, seed)
        return robust_accuracy(model, self.split, attack, threat, rng=rng, batch_size=batch_size, goal=self.goal)

    def judge(self, model: nn.Module, x_adv: Tensor) -> tuple[Tensor, Tensor]:
        """(evaded, valid) per row (CPU): classified benign by ``model`` with a valid raw record; valid."""
        valid = valid_records(self.domain, x_adv, self.split.x, self.raw)
        return (predict(model, x_adv) == self.benign).cpu() & valid, valid

    def attack(
        self, model: nn.Module, attack: Attack, threat: ThreatModel, *, seed: int, batch_size: int = 256
    ) -> tuple[RobustResult, Tensor]:
        result = self.run(model, attack, threat, seed=seed, batch_size=batch_size)
        evaded, _ = self.judge(model, result.x_adv)
        return result, ~evaded

    def holds(self, model: nn.Module, x: Tensor) -> Tensor:
        evaded, _ = self.judge(model, x)
        return ~evaded

    def take(self, n: int) -> MaliciousRows:
        return MaliciousRows(self.split.take(n), self.raw.iloc[:n], self.domain, self.benign)

    def on(self, device: torch.device) -> MaliciousRows:
        return MaliciousRows(self.split.to(device), self.raw, self.domain, self.benign)


def malicious_rows(test: Split, raw: pd.DataFrame, domain: TabularDomain, benign: int) -> MaliciousRows:
    """The malicious rows of ``test`` (any class but ``benign``) with their raw records (row-aligned)."""
    malicious = test.y != benign
    idx = malicious.nonzero().squeeze(1)
    raw_mal = raw.reset_index(drop=True).iloc[idx.cpu().numpy()].reset_index(drop=True)
    return MaliciousRows(Split(test.x[idx], test.y[idx]), raw_mal, domain, benign)


def tabular_section(pred: np.ndarray, malicious: np.ndarray, benign: int, y: np.ndarray) -> dict[str, Any]:
    """The ``tabular`` section before any attack: the clean detection numbers and the empty tables."""
    n_mal = int(malicious.sum())
    n_benign = len(pred) - n_mal
    false_pos = int((pred[~malicious] != benign).sum())
    correct = int((pred == y).sum())
    tables: dict[str, dict[str, Any]] = {
        key: {}
        for key in (
            "evasion_rate",
            "evasion_rate_ci",
            "valid_share",
            "precision",
            "recall",
            "mcc",
            "unconstrained_robust_accuracy",
            "unconstrained_valid_share",
        )
    }
    return {
        "denominator": DENOMINATOR,
        "n_malicious": n_mal,
        "n_benign": n_benign,
        "n_rows": len(pred),
        "benign_class": benign,
        "false_positive_rate_benign": stored_fraction(false_pos, n_benign),
        "false_positive_rate_benign_ci": stored_interval(false_pos, n_benign),
        "accuracy_all_rows": stored_fraction(correct, len(pred)),
        "clean": {
            **detection_metrics(pred != benign, malicious),
            "detection_rate": stored_fraction(int((pred[malicious] != benign).sum()), n_mal),
        },
        **tables,
        "goal": "Reach(benign) on malicious rows",
    }


@dataclass
class EvasionCells:
    """Measure: each attack on the malicious rows within the constrained domain (and, when ``unconstrained``,
    within a plain [0, 1] box: what it would claim); the ensemble is the per-row worst case."""

    model: nn.Module
    target: MaliciousRows
    norm: str
    ev: Evaluation
    pred: np.ndarray
    malicious: np.ndarray
    seed: int = 0
    batch_size: int = 256
    unconstrained: bool = True
    outcomes: dict[tuple[str, float], TabularAttackOutcome] = field(default_factory=dict)
    always_ensemble: bool = False

    @property
    def tab(self) -> dict[str, Any]:
        assert self.ev.tabular is not None
        return self.ev.tabular

    @property
    def n_mal(self) -> int:
        return len(self.target.split)

    def threat(self, eps: float, free: bool = False) -> ThreatModel:
        n = self.target.domain.n_features
        domain = BoxDomain(torch.zeros(n), torch.ones(n)) if free else self.target.domain
        return ThreatModel(norm=Norm(self.norm), eps=eps, domain=domain)

    def cell(self, name: str, attack: Attack, eps: float) -> tuple[Tensor, Tensor | None]:
        """(evaded, evaded without constraints or None) per malicious row."""
        t = self.target
        result = t.run(self.model, attack, self.threat(eps), seed=self.seed, batch_size=self.batch_size)
        evaded, valid = t.judge(self.model, result.x_adv)
        clean_detected = torch.as_tensor(self.pred[self.malicious] != t.benign)
        margin = benign_margin(self.model, result.x_adv, t.benign)
        self.outcomes[(name, eps)] = TabularAttackOutcome(result.x_adv.cpu(), evaded, valid, clean_detected, margin)
        self.record(name, eps, evaded)
        put(self.tab["valid_share"], name, eps, stored_mean(valid))
        cost = cost_entry(float(result.n_forward), float(result.n_backward), result.wall_time_s)
        put(self.ev.attack_cost, name, eps, cost)
        free_evaded = self.unconstrained_cell(name, attack, eps) if self.unconstrained else None
        log.info("%s eps=%s: evasion %.4f", name, eps_key(eps), float(evaded.float().mean()) if self.n_mal else 0.0)
        return evaded, free_evaded

    def unconstrained_cell(self, name: str, attack: Attack, eps: float) -> Tensor:
        t = self.target
        x_free = t.run(self.model, attack, self.threat(eps, free=True), seed=self.seed, batch_size=self.batch_size)
        free_evaded = (predict(self.model, x_free.x_adv) == t.benign).cpu()
        free_valid = valid_records(t.domain, x_free.x_adv, t.split.x, t.raw)
        self.record_unconstrained(name, eps, free_evaded)
        put(self.tab["unconstrained_valid_share"], name, eps, stored_fraction(int(free_valid.sum()), self.n_mal))
        return free_evaded

    def record(self, name: str, eps: float, evaded: Tensor) -> None:
        """Detection rate under attack (robust accuracy), evasion rate and the detection metrics of all rows."""
        k, n_mal = int(evaded.sum()), self.n_mal
        self.ev.record(name, eps, ~evaded, accuracy=1 - k / n_mal if n_mal else 0.0)
        put(self.tab["evasion_rate"], name, eps, stored_fraction(k, n_mal))
        put(self.tab["evasion_rate_ci"], name, eps, stored_interval(k, n_mal))
        under_attack = self.pred != self.target.benign
        under_attack[np.flatnonzero(self.malicious)[evaded.numpy()]] = False
        for metric, value in detection_metrics(under_attack, self.malicious).items():
            put(self.tab[metric], name, eps, value)

    def record_unconstrained(self, name: str, eps: float, free_evaded: Tensor) -> None:
        value = stored(1 - float(free_evaded.float().mean())) if self.n_mal else None
        put(self.tab["unconstrained_robust_accuracy"], name, eps, value)

    def ensemble(self, eps: float, cells: Sequence[tuple[Tensor, Tensor | None]]) -> None:
        self.record(ENSEMBLE, eps, any_row(evaded for evaded, _ in cells))
        if self.unconstrained:
            self.record_unconstrained(ENSEMBLE, eps, any_row(free for _, free in cells if free is not None))


def any_row(evaded: Any) -> Tensor:
    """Per row, evaded by some attack: the attacker's side of :func:`~bastion.evaluation.record.worst_case`."""
    masks = list(evaded)
    if not masks:
        raise ValueError("any_row needs at least one cell")
    return ~worst_case((~m for m in masks), torch.ones_like(masks[0]))


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
) -> tuple[Evaluation, dict[tuple[str, float], TabularAttackOutcome]]:
    """Attack the malicious rows of ``test`` toward ``benign``; return the evaluation (``to_dict()`` is the
    results.json model entry, with its ``tabular`` section) and the outcomes per (attack, eps).

    Args:
        raw: the original raw records of ``test`` (row-aligned), the validator's reference.
        domain: the constrained domain (the model's own preprocessing).
        unconstrained: also run every attack with a plain [0, 1] box domain (what it would claim).
    """
    test = test.to(model_device(model))
    target = malicious_rows(test, raw, domain, benign)
    pred = predict(model, test.x).cpu().numpy()
    malicious = (test.y != benign).cpu().numpy()
    n_mal = int(malicious.sum())
    detected = int((pred[malicious] != benign).sum())
    ev = Evaluation(clean_accuracy=detected / n_mal if n_mal else 0.0, n_examples=n_mal, denominator=DENOMINATOR)
    ev.tabular = tabular_section(pred, malicious, benign, test.y.cpu().numpy())
    ev.attacked_clean_accuracy = detected / n_mal if n_mal else None
    cells = EvasionCells(model, target, norm, ev, pred, malicious, seed, batch_size, unconstrained)
    run_grid(attacks, eps_values, cells, on_cell=on_cell)
    return ev, cells.outcomes


@dataclass
class DetectorCells:
    """Measure of a runtime detector on tabular data: per cell, the adversarial rows (replayed from the
    detector-blind ``outcomes`` when the attack is None, else crafted against the defense) and what the
    defense decides on them; the ensemble is the per-row worst failure."""

    defense: Defense
    target: MaliciousRows
    norm: str
    outcomes: Mapping[tuple[str, float], TabularAttackOutcome]
    clean_scores: Tensor
    report: dict[str, Any]
    seed: int = 0
    batch_size: int = 256
    always_ensemble: bool = True

    def rows(self, name: str, attack: Attack | None, eps: float) -> tuple[Tensor, Tensor] | None:
        """(adversarial rows, valid evasions) of one cell; None for a replay ``outcomes`` lack at ``eps``."""
        if attack is None:
            o = self.outcomes.get((name, eps))
            return None if o is None else (o.x_adv, o.evaded)
        t = self.target
        surface = self.defense if isinstance(attack, AdaptivePGD) else DetectorPenalty(self.defense, t.benign)
        threat = ThreatModel(norm=Norm(self.norm), eps=eps, domain=t.domain)
        x_adv = t.run(surface, attack, threat, seed=self.seed, batch_size=self.batch_size).x_adv
        evaded, _ = t.judge(self.defense, x_adv)
        return x_adv.cpu(), evaded

    def cell(self, name: str, attack: Attack | None, eps: float) -> Tensor | None:
        """Per row: failed = a valid evasion the detector did not flag (None: nothing to replay)."""
        rows = self.rows(name, attack, eps)
        if rows is None:
            return None
        x_adv, evaded = rows
        d = self.defense.decide(x_adv.to(self.target.split.x.device))
        flagged = d.flagged.cpu()
        failed = evaded & ~flagged
        self.record_failure(name, eps, failed)
        put(self.report["evasion_rate"], name, eps, stored_mean(evaded))
        put(self.report["detection_rate"], name, eps, stored_mean(flagged[evaded]))
        put(self.report["auroc"], name, eps, auroc(self.clean_scores, d.scores.cpu()[evaded]))
        return failed

    def record_failure(self, name: str, eps: float, failed: Tensor) -> None:
        k, n_mal = int(failed.sum()), len(self.target.split)
        put(self.report["failure_rate"], name, eps, stored_fraction(k, n_mal))
        put(self.report["failure_rate_ci"], name, eps, stored_interval(k, n_mal))

    def ensemble(self, eps: float, cells: Sequence[Tensor | None]) -> None:
        ran = [c for c in cells if c is not None]
        failed = any_row(ran) if ran else torch.zeros(len(self.target.split), dtype=torch.bool)
        self.record_failure(ENSEMBLE, eps, failed)


def detector_report(
    defense: Defense, test: Split, malicious: Tensor, flagged: Tensor, adaptive: list[str]
) -> dict[str, Any]:
    """The detector report before any attack: false positives on every clean row and on the benign ones."""
    n_benign = int((~malicious).sum())
    fp, fp_benign = int(flagged.sum()), int(flagged[~malicious].sum())
    return {
        "description": defense.describe(),
        "false_positive_rate": stored_fraction(fp, len(test)),
        "false_positive_rate_ci": stored_interval(fp, len(test)),
        "false_positive_rate_benign": stored_fraction(fp_benign, n_benign),
        "n_malicious": int(malicious.sum()),
        "adaptive_attacks": adaptive,
        "failure_rate": {},
        "failure_rate_ci": {},
        "detection_rate": {},
        "auroc": {},
        "evasion_rate": {},
    }


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
    test = test.to(model_device(defense))
    target = malicious_rows(test, raw, domain, benign)
    clean = defense.decide(test.x)
    report = detector_report(defense, test, (test.y != benign).cpu(), clean.flagged.cpu(), list(adaptive))
    cells = DetectorCells(defense, target, norm, outcomes, clean.scores.cpu(), report, seed, batch_size)
    replayed: dict[str, Attack | None] = {name: None for name, _ in outcomes}
    run_grid({**replayed, **adaptive}, eps_values, cells)
    return report
