"""The one result model of an evaluation: the :class:`Evaluation` record, its keys and its stored numbers.

Every evaluator (plain, sequential, defense, tabular) fills the same tables, ``attack -> eps key -> value``,
with the helpers here, so the key format (:func:`eps_key`), the worst case over a suite (:data:`ENSEMBLE`,
:func:`worst_case`) and the rounding of every stored number (:func:`stored`) are decided once.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, SupportsFloat

from torch import Tensor

from bastion.errors import ConfigError
from bastion.evaluation.stats import wilson

#: The extra attack name of the per-example worst case over a whole suite.
ENSEMBLE = "ensemble"

#: Decimal places of every rate and share in results.json.
DIGITS = 6
#: Decimal places of stored wall-clock seconds.
SECONDS_DIGITS = 4

#: attack -> eps key -> value: the shape of every per-cell table in results.json.
Table = dict[str, dict[str, Any]]


def eps_key(eps: float) -> str:
    """EPS as a decimal string, the key format of results.json (e.g. 0.1 -> "0.1", 8/255 -> "0.0313725")."""
    return f"{eps:.6g}"


def check_eps_keys(eps_values: Sequence[float]) -> None:
    """Refuse budgets that are not finite and >= 0, or that share one results.json key (agree to 6 digits):
    two budgets must never be merged into one row.

    Raises:
        ConfigError: naming the budgets.
    """
    seen: dict[str, float] = {}
    for eps in eps_values:
        if not math.isfinite(eps) or eps < 0:
            raise ConfigError(f"eps must be finite and >= 0, got {eps}")
        key = eps_key(eps)
        if key in seen and seen[key] != eps:
            raise ConfigError(
                f"eps {seen[key]!r} and {eps!r} agree to 6 significant digits (both are reported as {key!r}); "
                "give budgets that differ within 6 digits"
            )
        seen[key] = eps


def stored(value: SupportsFloat, digits: int = DIGITS) -> float:
    """``value`` as results.json stores it: rounded to ``digits`` places (rates and shares: 6)."""
    return round(float(value), digits)


def stored_seconds(seconds: float) -> float:
    return stored(seconds, SECONDS_DIGITS)


def stored_interval(successes: int, n: int) -> list[float]:
    """The stored 95% Wilson interval of ``successes`` out of ``n``."""
    return [stored(v) for v in wilson(successes, n)]


def stored_fraction(k: int, n: int) -> float | None:
    """``k / n`` as stored, None when there is nothing to count."""
    return stored(k / n) if n else None


def stored_mean(mask: Tensor) -> float | None:
    """The share of True in a boolean tensor (float32 mean, as every per-example rate is taken), None if empty."""
    return stored(mask.float().mean()) if mask.numel() else None


def put(table: Table, attack: str, eps: float, value: Any) -> None:
    """``table[attack][eps_key(eps)] = value``."""
    table.setdefault(attack, {})[eps_key(eps)] = value


def worst_case(robust: Iterable[Tensor], start: Tensor) -> Tensor:
    """Per example, robust under every attack: the suite's worst case (``ensemble``), from ``start`` on."""
    out = start.clone()
    for mask in robust:
        out &= mask.to(out.device)
    return out


@dataclass
class Evaluation:
    """Clean and robust accuracy of one model; maps are attack -> eps key -> value."""

    clean_accuracy: float
    n_examples: int
    robust_accuracy: Table = field(default_factory=dict)
    robust_accuracy_ci: Table = field(default_factory=dict)
    attack_cost: Table = field(default_factory=dict)
    defense: dict[str, Any] | None = None
    #: Per-example records of a sequential (worst-case) suite; written next to results.json, not into it.
    records: dict[str, Any] | None = None
    #: Per-example outcomes (attack -> eps key -> (N,) bool, CPU) and labels: McNemar tests and per-class rates.
    outcomes: dict[str, dict[str, Tensor]] = field(default_factory=dict)
    clean_correct: Tensor | None = None
    labels: Tensor | None = None
    #: Sanity checks (bastion.evaluation.checks): code -> {status, detail, measured}.
    checks: dict[str, Any] | None = None
    #: Accuracy before any attack on the examples the attacks target, when they are not all of them
    #: (tabular evasion: the clean detection rate of the malicious rows); None means ``clean_accuracy``.
    attacked_clean_accuracy: float | None = None
    #: The tabular evasion section (bastion.evaluation.tabular), written as the entry's ``tabular`` key.
    tabular: dict[str, Any] | None = None
    #: The figure the run states about this model (bastion.evaluation.headline), set by whoever knows the suite.
    headline: dict[str, Any] | None = None
    #: What clean and robust accuracy are shares of, when not "all test examples, classified correctly"
    #: (tabular evasion: "detection rate on malicious rows"); one denominator for the whole entry.
    denominator: str | None = None

    def record(self, attack: str, eps: float, robust: Tensor, *, accuracy: float | None = None) -> None:
        """Store one cell's per-example outcome, its robust accuracy and interval.

        ``accuracy`` replaces ``robust``'s share when the evaluator defines it otherwise (tabular: 1 - evasion
        rate, 0 without malicious rows).
        """
        k, n = int(robust.sum()), int(robust.numel())
        self.outcomes.setdefault(attack, {})[eps_key(eps)] = robust.detach().cpu()
        if accuracy is None:
            accuracy = k / n if n else float("nan")
        put(self.robust_accuracy, attack, eps, stored(accuracy))
        put(self.robust_accuracy_ci, attack, eps, stored_interval(k, n))

    @property
    def unattacked_accuracy(self) -> float:
        """What robust accuracy starts from at eps 0 (see ``attacked_clean_accuracy``)."""
        return self.clean_accuracy if self.attacked_clean_accuracy is None else self.attacked_clean_accuracy

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "clean_accuracy": stored(self.clean_accuracy),
            "clean_accuracy_ci": stored_interval(round(self.clean_accuracy * self.n_examples), self.n_examples),
            "n_examples": self.n_examples,
            "robust_accuracy": self.robust_accuracy,
            "robust_accuracy_ci": self.robust_accuracy_ci,
            "attack_cost": self.attack_cost,
        }
        if self.denominator is not None:
            out["denominator"] = self.denominator
        if self.defense is not None:
            out["defense"] = self.defense
        out.update(self.per_class())
        if self.tabular is not None:
            out["tabular"] = self.tabular
        if self.checks is not None:
            out["checks"] = self.checks
        if self.headline is not None:
            out["headline"] = self.headline
        return out

    def per_class(self) -> dict[str, Any]:
        """Clean and worst-case robust accuracy per class (None for a class absent from the test set)."""
        if self.labels is None or self.clean_correct is None:
            return {}
        labels: Tensor = self.labels
        n_classes = int(labels.max()) + 1 if labels.numel() else 0

        def rates(correct: Tensor) -> list[float | None]:
            return [stored_mean(correct[labels == c]) for c in range(n_classes)]

        worst = ENSEMBLE if ENSEMBLE in self.outcomes else next(iter(self.outcomes), None)
        return {
            "clean_accuracy_per_class": rates(self.clean_correct),
            "robust_accuracy_per_class": {
                "attack": worst,
                "by_eps": {e: rates(c) for e, c in self.outcomes.get(worst, {}).items()} if worst else {},
            },
        }
