"""Evaluate a model (or a defended model) under an attack suite at several budgets.

Results keep per-example outcomes so worst cases over attacks are exact, and every accuracy carries n
and a Wilson interval.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from bastion.attacks import Attack
from bastion.data.spec import Split
from bastion.evaluation.accuracy import predict, robust_accuracy
from bastion.evaluation.stats import wilson
from bastion.threat import ThreatModel

log = logging.getLogger(__name__)

#: Called once per finished (attack, eps) cell with (cells done, cells total).
CellHook = Callable[[int, int], None]

ENSEMBLE = "ensemble"


def eps_key(eps: float) -> str:
    """EPS as a decimal string, the key format of results.json (e.g. 0.1 -> "0.1", 8/255 -> "0.0313725")."""
    return f"{eps:.6g}"


@dataclass
class Evaluation:
    """Clean and robust accuracy of one model; maps are attack -> eps key -> value."""

    clean_accuracy: float
    n_examples: int
    robust_accuracy: dict[str, dict[str, float]] = field(default_factory=dict)
    robust_accuracy_ci: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    attack_cost: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    defense: dict[str, Any] | None = None
    #: Per-example records of a sequential (worst-case) suite; written next to results.json, not into it.
    records: dict[str, Any] | None = None
    #: Per-example outcomes (attack -> eps key -> (N,) bool, CPU) and labels: McNemar tests and per-class rates.
    outcomes: dict[str, dict[str, Tensor]] = field(default_factory=dict)
    clean_correct: Tensor | None = None
    labels: Tensor | None = None
    #: Sanity checks (bastion.evaluation.checks): code -> {status, detail, measured}.
    checks: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "clean_accuracy": round(self.clean_accuracy, 6),
            "clean_accuracy_ci": [
                round(v, 6) for v in wilson(round(self.clean_accuracy * self.n_examples), self.n_examples)
            ],
            "n_examples": self.n_examples,
            "robust_accuracy": self.robust_accuracy,
            "robust_accuracy_ci": self.robust_accuracy_ci,
            "attack_cost": self.attack_cost,
        }
        if self.defense is not None:
            out["defense"] = self.defense
        out.update(self.per_class())
        if self.checks is not None:
            out["checks"] = self.checks
        return out

    def per_class(self) -> dict[str, Any]:
        """Clean and worst-case robust accuracy per class (None for a class absent from the test set)."""
        if self.labels is None or self.clean_correct is None:
            return {}
        labels: Tensor = self.labels
        n_classes = int(labels.max()) + 1 if labels.numel() else 0

        def rates(correct: Tensor) -> list[float | None]:
            out: list[float | None] = []
            for c in range(n_classes):
                mask = labels == c
                out.append(round(float(correct[mask].float().mean()), 6) if mask.any() else None)
            return out

        worst = ENSEMBLE if ENSEMBLE in self.outcomes else next(iter(self.outcomes), None)
        return {
            "clean_accuracy_per_class": rates(self.clean_correct),
            "robust_accuracy_per_class": {
                "attack": worst,
                "by_eps": {e: rates(c) for e, c in self.outcomes.get(worst, {}).items()} if worst else {},
            },
        }


def _set(table: dict[str, dict[str, Any]], attack: str, eps: float, value: Any) -> None:
    table.setdefault(attack, {})[eps_key(eps)] = value


def evaluate(
    model: nn.Module,
    test: Split,
    attacks: dict[str, Attack],
    threat: ThreatModel,
    eps_values: Sequence[float],
    *,
    seed: int = 0,
    batch_size: int = 256,
    on_cell: CellHook | None = None,
    keep_adversarial: bool = False,
) -> tuple[Evaluation, dict[tuple[str, float], Tensor]]:
    """Run every attack at every eps on ``test``.

    Returns the evaluation and, when ``keep_adversarial``, the adversarial inputs per (attack, eps).
    An :class:`~bastion.attacks.worst_case.AttackSequence` runs as a worst-case sequence instead.
    """
    from bastion.attacks.worst_case import AttackSequence

    if isinstance(attacks, AttackSequence):
        from bastion.evaluation.sequential import evaluate_sequential

        return evaluate_sequential(
            model,
            test,
            attacks,
            threat,
            eps_values,
            seed=seed,
            batch_size=batch_size,
            on_cell=on_cell,
            keep_adversarial=keep_adversarial,
        )
    device = next(model.parameters()).device
    test = test.to(device)
    clean_correct = predict(model, test.x) == test.y
    n = len(test)
    ev = Evaluation(clean_accuracy=float(clean_correct.float().mean()), n_examples=n)
    ev.clean_correct, ev.labels = clean_correct.cpu(), test.y.cpu()
    adversarial: dict[tuple[str, float], Tensor] = {}
    total, done = len(attacks) * len(eps_values), 0
    for eps in eps_values:
        worst = clean_correct.clone()
        for name, attack in attacks.items():
            rng = torch.Generator(device=device).manual_seed(seed)
            result = robust_accuracy(model, test, attack, threat.with_eps(eps), rng=rng, batch_size=batch_size)
            worst &= result.correct
            _record(ev, name, eps, result.correct)
            _set(
                ev.attack_cost,
                name,
                eps,
                {
                    "forward_passes": result.n_forward,
                    "backward_passes": result.n_backward,
                    "wall_time_s": round(result.wall_time_s, 4),
                },
            )
            if keep_adversarial:
                adversarial[(name, eps)] = result.x_adv
            done += 1
            log.info("%s eps=%s: robust accuracy %.4f", name, eps_key(eps), result.accuracy)
            if on_cell is not None:
                on_cell(done, total)
        if len(attacks) > 1:
            _record(ev, ENSEMBLE, eps, worst)
    return ev, adversarial


def _record(ev: Evaluation, name: str, eps: float, correct: Tensor) -> None:
    k, n = int(correct.sum()), int(correct.numel())
    ev.outcomes.setdefault(name, {})[eps_key(eps)] = correct.detach().cpu()
    _set(ev.robust_accuracy, name, eps, round(k / n, 6) if n else float("nan"))
    _set(ev.robust_accuracy_ci, name, eps, [round(v, 6) for v in wilson(k, n)])


def __getattr__(name: str) -> Any:
    """``evaluate_defense`` lives in bastion.evaluation.defense; re-exported here (lazily: no import cycle)."""
    if name == "evaluate_defense":
        from bastion.evaluation.defense import evaluate_defense

        return evaluate_defense
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
