"""Sanity checks run on every evaluation: the classic signs that a robustness number is not to be believed.

After Carlini et al. 2019 ("On evaluating adversarial robustness", arXiv:1902.06705) and Athalye et al.
2018 (obfuscated gradients): accuracy must not rise with eps; an unbounded attack must reach ~0%; more
steps and restarts must not find much more; white-box attacks must beat transfer and black-box ones;
random noise must hurt less than the attack; FGSM must not beat PGD; input gradients must be non-zero and
finite; randomized defenses need EOT and detectors a detector-aware attack.

Each check returns ``pass``, ``SUSPECT`` or ``skipped`` with the numbers it measured (docs/checks.md).
The checks that attack do so on the first ``n_examples`` examples the evaluation attacked only, so they
stay cheap, and through the same :class:`~bastion.evaluation.runner.Target`: the same goal and the same
judge of success (tabular evasion: malicious rows toward benign, valid raw records only).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch
from torch import Tensor, nn

from bastion._typing import Norm
from bastion.attacks import PGD, Attack
from bastion.attacks.base import evaluating, loss_gradient
from bastion.attacks.losses import cross_entropy
from bastion.data.spec import Split
from bastion.defenses.pipeline import DefendedClassifier
from bastion.evaluation.defense import is_randomized_defense
from bastion.evaluation.record import ENSEMBLE, Evaluation, eps_key, stored
from bastion.evaluation.runner import EveryExample, Target, model_device
from bastion.goals import Goal
from bastion.threat import ThreatModel

log = logging.getLogger(__name__)

Status = Literal["pass", "SUSPECT", "skipped"]
PASS: Status = "pass"
SUSPECT: Status = "SUSPECT"
SKIPPED: Status = "skipped"

#: Attacks that see only outputs (or another model's gradients): white-box attacks should beat them.
BLACK_BOX = ("transfer-pgd", "square", "search")


@dataclass(frozen=True, kw_only=True)
class CheckSettings:
    """Budget and thresholds of the checks.

    Args:
        n_examples: test examples the attacking checks use (0 turns those checks off).
        n_steps: PGD steps of the unbounded-eps check.
        convergence_factor: the convergence check reruns the suite's strongest iterative attack with this
            many times the steps and one more restart.
        tolerance: accuracy slack (a share) for the ordering checks, for sampling noise and ties.
        unbounded_max_accuracy: highest accuracy an unbounded attack may leave.
        max_bad_gradient_share: highest share of examples with all-zero input gradients.
        seed: seed of the checks' attacks and noise.
    """

    n_examples: int = 100
    n_steps: int = 20
    convergence_factor: int = 2
    tolerance: float = 0.03
    unbounded_max_accuracy: float = 0.05
    max_bad_gradient_share: float = 0.1
    seed: int = 0


@dataclass(frozen=True)
class Check:
    """One check: a stable code, its status, the numbers it measured and one sentence why."""

    code: str
    status: Status
    detail: str
    measured: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "detail": self.detail, "measured": self.measured}


def _beyond(excess: float, tolerance: float) -> bool:
    """excess > tolerance, with float round-off ignored (a 3-point drop is not beyond a 0.03 tolerance)."""
    return excess > tolerance + 1e-9


def _table(ev: Evaluation) -> dict[str, dict[float, float]]:
    """attack -> eps (float) -> robust accuracy, without NaNs."""
    return {
        a: {float(e): v for e, v in by.items() if v is not None and not math.isnan(v)}
        for a, by in ev.robust_accuracy.items()
    }


def monotone_in_eps(ev: Evaluation, tol: float) -> Check:
    """Accuracy never rises with eps (and never exceeds clean accuracy) beyond ``tol``."""
    rises = []
    for attack, by_eps in _table(ev).items():
        previous, prev_eps = ev.unattacked_accuracy, 0.0
        for eps in sorted(by_eps):
            if _beyond(by_eps[eps] - previous, tol):
                rises.append(
                    {"attack": attack, "from_eps": prev_eps, "to_eps": eps, "rise": stored(by_eps[eps] - previous)}
                )
            previous, prev_eps = by_eps[eps], eps
    if not any(_table(ev).values()):
        return Check("accuracy-monotone-in-eps", SKIPPED, "no robust accuracy was measured")
    if rises:
        return Check(
            "accuracy-monotone-in-eps",
            SUSPECT,
            "accuracy rises with eps: the attack is failing at larger budgets (gradient masking or a weak attack)",
            {"rises": rises, "tolerance": tol},
        )
    return Check("accuracy-monotone-in-eps", PASS, "accuracy is non-increasing in eps", {"tolerance": tol})


def fgsm_not_stronger(ev: Evaluation, tol: float) -> Check:
    """FGSM is one PGD step: if it wins, PGD's later steps are lost in a masked landscape."""
    table = _table(ev)
    iterative = {a: v for a, v in table.items() if "pgd" in a and a not in BLACK_BOX}
    if "fgsm" not in table or not iterative:
        return Check("fgsm-not-stronger-than-pgd", SKIPPED, "the evaluation ran no FGSM and PGD pair")
    rows = []
    for eps, fgsm_acc in table["fgsm"].items():
        pgd_acc = min((v[eps] for v in iterative.values() if eps in v), default=None)
        if pgd_acc is not None:
            rows.append({"eps": eps, "fgsm": stored(fgsm_acc), "pgd": stored(pgd_acc)})
    bad = [r for r in rows if _beyond(r["pgd"] - r["fgsm"], tol)]
    status = SUSPECT if bad else PASS
    detail = "FGSM finds more than PGD" if bad else "PGD is at least as strong as FGSM"
    return Check("fgsm-not-stronger-than-pgd", status, detail, {"by_eps": rows, "tolerance": tol})


def white_box_beats_black_box(ev: Evaluation, tol: float) -> Check:
    """Transfer and query-only attacks should not beat white-box gradients (masking sign otherwise)."""
    table = _table(ev)
    black = {a: v for a, v in table.items() if a in BLACK_BOX}
    white = {a: v for a, v in table.items() if a not in BLACK_BOX and a != ENSEMBLE}
    if not black or not white:
        return Check("white-box-beats-black-box", SKIPPED, "the evaluation ran no white-box and black-box pair")
    rows = []
    for eps in sorted({e for v in black.values() for e in v}):
        w = {a: v[eps] for a, v in white.items() if eps in v}
        b = {a: v[eps] for a, v in black.items() if eps in v}
        if w and b:
            rows.append({"eps": eps, "white_box": stored(min(w.values())), "black_box": stored(min(b.values()))})
    bad = [r for r in rows if _beyond(r["white_box"] - r["black_box"], tol)]
    status = SUSPECT if bad else PASS
    detail = "a black-box or transfer attack beats every white-box one" if bad else "white-box attacks are strongest"
    return Check("white-box-beats-black-box", status, detail, {"by_eps": rows, "tolerance": tol})


def _defense(model: nn.Module) -> DefendedClassifier | None:
    return model if isinstance(model, DefendedClassifier) else None


def _adaptive_attack_ran(code: str, ev: Evaluation, attack: str, applies: str | None, ok: str, missing: str) -> Check:
    """``attack`` must be among the evaluation's adaptive attacks; ``applies`` None = the check does not apply."""
    if applies is not None:
        return Check(code, SKIPPED, applies)
    used = list((ev.defense or {}).get("adaptive_attacks", []))
    return Check(
        code, PASS if attack in used else SUSPECT, ok if attack in used else missing, {"adaptive_attacks": used}
    )


def eot_for_randomized(model: nn.Module, ev: Evaluation) -> Check:
    defended = _defense(model)
    randomized = defended is not None and is_randomized_defense(defended)
    return _adaptive_attack_ran(
        "eot-for-randomized-defense",
        ev,
        "eot-pgd",
        None if randomized else "the model is not randomized",
        "EOT-PGD attacked the randomized defense",
        "a randomized defense was attacked without EOT",
    )


def detector_aware(model: nn.Module, ev: Evaluation) -> Check:
    defended = _defense(model)
    has_detector = defended is not None and defended.detector is not None
    return _adaptive_attack_ran(
        "detector-aware-attack",
        ev,
        "detector-aware-pgd",
        None if has_detector else "the model has no detector",
        "a detector-aware attack was run",
        "the detector was only attacked by attacks that ignore it",
    )


def gradient_health(model: nn.Module, x: Tensor, goal: Goal, max_share: float) -> Check:
    """Share of examples whose input gradient of the cross-entropy toward ``goal`` is all zero, or has
    NaN/inf entries."""
    with evaluating(model):
        _, grad, _ = loss_gradient(model, x, goal, cross_entropy)
    flat = grad.flatten(1)
    zero = float((flat == 0).all(dim=1).float().mean())
    nonfinite = float((~torch.isfinite(flat)).any(dim=1).float().mean())
    norms = flat.norm(dim=1)
    median_norm = float(norms[torch.isfinite(norms)].median()) if torch.isfinite(norms).any() else float("nan")
    measured = {
        "n_examples": len(x),
        "zero_gradient_share": stored(zero),
        "nonfinite_gradient_share": stored(nonfinite),
        "median_gradient_norm": stored(median_norm) if math.isfinite(median_norm) else None,
        "max_share": max_share,
    }
    if zero > max_share or nonfinite > 0:
        return Check(
            "gradient-health",
            SUSPECT,
            "input gradients are zero or non-finite for many examples: gradient attacks cannot work here "
            "(rounded or saturated outputs, non-differentiable layers); use BPDA, a margin loss or Square",
            measured,
        )
    return Check("gradient-health", PASS, "input gradients are finite and non-zero", measured)


def _domain_width(threat: ThreatModel, x: Tensor) -> float | None:
    lower, upper = getattr(threat.domain, "lower", None), getattr(threat.domain, "upper", None)
    if not isinstance(lower, Tensor) or not isinstance(upper, Tensor):
        return None
    width = float((upper - lower).max())
    return width if threat.norm is Norm.LINF else width * math.sqrt(x[0].numel())


def _accuracy(model: nn.Module, target: Target, attack: Attack, threat: ThreatModel, seed: int) -> float:
    """Share of the target's examples where the model holds against ``attack``."""
    _, robust = target.attack(model, attack, threat, seed=seed)
    return _share(robust)


def unbounded_eps(
    model: nn.Module, target: Target, threat: ThreatModel, s: CheckSettings, ev: Evaluation | None = None
) -> Check:
    """PGD whose ball covers the whole input domain must reach ~0% accuracy (constrained tabular evasion:
    the constraint limit, see :func:`constraint_limit`)."""
    split = target.split
    if target.unbounded_exemption is not None:
        if ev is None:
            return Check("unbounded-eps-reaches-zero", SKIPPED, target.unbounded_exemption)
        return constraint_limit(model, target, threat, ev, s)
    eps = _domain_width(threat, split.x)
    if eps is None:
        return Check("unbounded-eps-reaches-zero", SKIPPED, "the input domain has no box bounds")
    acc = _accuracy(model, target, PGD(n_steps=s.n_steps), threat.with_eps(eps), s.seed)
    measured = {"eps": stored(eps), "n_steps": s.n_steps, "n_examples": len(split), "accuracy": stored(acc)}
    if acc > s.unbounded_max_accuracy:
        return Check(
            "unbounded-eps-reaches-zero",
            SUSPECT,
            f"PGD with eps = the whole domain leaves {100 * acc:.1f}% accuracy (expected ~0%): gradients do not "
            "lead the attack anywhere",
            {**measured, "max_accuracy": s.unbounded_max_accuracy},
        )
    return Check("unbounded-eps-reaches-zero", PASS, "an unbounded attack reaches ~0% accuracy", measured)


def constraint_limit(model: nn.Module, target: Target, threat: ThreatModel, ev: Evaluation, s: CheckSettings) -> Check:
    """Under constraints an unbounded budget need not reach 0%, but it reaches the constraint limit: PGD and
    the gradient-free search with a ball covering the whole domain must do at least as well as the
    evaluation's attacks did at its largest budget on the same rows (else they have not converged)."""
    from bastion.attacks.search import CoordinateSearch

    code = "unbounded-eps-reaches-zero"
    split = target.split
    eps = _domain_width(threat, split.x)
    table = _table(ev)
    largest = max((e for v in table.values() for e in v), default=None)
    if eps is None or largest is None:
        return Check(code, SKIPPED, "no box bounds or no attacked budget to compare with")
    held = torch.ones(len(split), dtype=torch.bool)
    for attack in (PGD(n_steps=s.n_steps), CoordinateSearch(n_iters=2 * s.n_steps, n_candidates=16)):
        _, robust = target.attack(model, attack, threat.with_eps(eps), seed=s.seed)
        held &= robust.cpu()
    unbounded = float(held.float().mean()) if len(held) else float("nan")
    reported = [v.get(eps_key(largest)) for a, v in ev.outcomes.items() if a != ENSEMBLE]
    rows = [r[: len(split)].cpu() for r in reported if r is not None and len(r) >= len(split)]
    bounded = float(torch.stack(rows).all(dim=0).float().mean()) if rows else min(v[largest] for v in table.values())
    measured = {
        "eps": stored(eps),
        "n_examples": len(split),
        "accuracy": stored(unbounded),
        "bounded_eps": eps_key(largest),
        "bounded_accuracy": stored(bounded),
        "tolerance": s.tolerance,
    }
    if _beyond(unbounded - bounded, s.tolerance):
        return Check(
            code,
            SUSPECT,
            f"with an unbounded budget PGD and the search leave {100 * unbounded:.1f}% detected, more than the "
            f"{100 * bounded:.1f}% at eps {eps_key(largest)}: the attacks have not converged",
            measured,
        )
    limit = "~0%" if unbounded <= s.unbounded_max_accuracy else f"the constraint limit, {100 * unbounded:.1f}% detected"
    return Check(
        code, PASS, f"an unbounded attack reaches {limit} (immutable features and rules bound the rest)", measured
    )


def _iterative(attacks: dict[str, Attack]) -> tuple[str, Any] | None:
    """The suite's attack with the most steps that can be given more steps and restarts."""
    candidates = []
    for name, attack in attacks.items():
        names = set(getattr(attack, "__dataclass_fields__", {}))
        if {"n_steps", "n_restarts"} <= names:
            tunable: Any = attack
            candidates.append((tunable.n_steps * tunable.n_restarts, name, attack))
    if not candidates:
        return None
    _, name, attack = max(candidates, key=lambda c: c[0])
    return name, attack


def converged(
    model: nn.Module,
    target: Target,
    ev: Evaluation,
    attacks: dict[str, Attack],
    threat: ThreatModel,
    eps: float,
    s: CheckSettings,
) -> Check:
    """The strongest iterative attack with more steps and one more restart must not move the worst case.

    What the check protects is the reported figure: the suite's per-example worst case. An example the
    stronger attack breaks counts against it only if every attack of the suite left it robust; one a later
    attack (APGD-T after APGD-CE) already broke does not overstate anything. The attack's own gap is still
    measured and named. The baseline is what the evaluation itself reported for these examples (its
    per-example outcomes; in a sequential suite, robust after this attack and the earlier ones), rerun only
    when absent.
    """
    found = _iterative(attacks)
    if found is None:
        return Check("attack-converged", SKIPPED, "the suite has no iterative attack with steps and restarts")
    name, attack = found
    n = len(target.split)
    stronger = replace(attack, n_steps=attack.n_steps * s.convergence_factor, n_restarts=attack.n_restarts + 1)
    at_eps = threat.with_eps(eps)
    reported = _reported(ev, name, eps, n)
    if reported is None:
        _, reported = target.attack(model, attack, at_eps, seed=s.seed)
    worst = _reported(ev, ENSEMBLE, eps, n)
    worst = reported if worst is None else worst
    _, robust_stronger = target.attack(model, stronger, at_eps, seed=s.seed)
    robust_stronger = robust_stronger.to(reported.device)
    attack_gap = _share(reported) - _share(reported & robust_stronger)
    worst_gap = _share(worst) - _share(worst & robust_stronger)
    measured = {
        "attack": name,
        "eps": eps_key(eps),
        "n_examples": n,
        "accuracy": stored(_share(reported)),
        "accuracy_stronger": stored(_share(robust_stronger)),
        "worst_case": stored(_share(worst)),
        "worst_case_with_stronger": stored(_share(worst & robust_stronger)),
        "stronger": {"n_steps": stronger.n_steps, "n_restarts": stronger.n_restarts},
        "tolerance": s.tolerance,
    }
    if _beyond(worst_gap, s.tolerance):
        return Check(
            "attack-converged",
            SUSPECT,
            f"{name} has not converged: more steps and restarts lower the worst-case accuracy by "
            f"{100 * worst_gap:.1f} points",
            measured,
        )
    if _beyond(attack_gap, s.tolerance):
        return Check(
            "attack-converged",
            PASS,
            f"more steps and restarts lower {name}'s own accuracy by {100 * attack_gap:.1f} points, but the suite's "
            f"other attacks already broke those examples: the worst case moves by {100 * worst_gap:.1f}",
            measured,
        )
    return Check("attack-converged", PASS, "more steps and restarts find no more than the tolerance", measured)


def _reported(ev: Evaluation, attack: str, eps: float, n: int) -> Tensor | None:
    """The evaluation's own per-example outcome of ``attack`` at ``eps`` on the first ``n`` examples, if stored."""
    outcome = ev.outcomes.get(attack, {}).get(eps_key(eps))
    return outcome[:n].bool() if outcome is not None and len(outcome) >= n else None


def _share(robust: Tensor) -> float:
    """Share of True in a per-example outcome (nan when empty)."""
    return float(robust.float().mean()) if robust.numel() else float("nan")


def noise_weaker(
    model: nn.Module, target: Target, ev: Evaluation, threat: ThreatModel, eps: float, s: CheckSettings
) -> Check:
    """Random noise of the same norm (ball corners for L-inf, the sphere for L2) must hurt less than the attack."""
    attacked = {a: v[eps] for a, v in _table(ev).items() if eps in v}
    if not attacked:
        return Check("noise-weaker-than-attack", SKIPPED, f"no attack ran at eps {eps_key(eps)}")
    split = target.split
    g = torch.Generator(device=split.x.device).manual_seed(s.seed)
    x = split.x
    if threat.norm is Norm.LINF:
        noise = (torch.randint(0, 2, x.shape, generator=g, device=x.device).to(x.dtype) * 2 - 1) * eps
    else:
        noise = torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype)
        noise = noise / noise.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (x.dim() - 1)) * eps
    t = threat.with_eps(eps)
    x_noisy = t.domain.repair(t.project(x + noise, x), x)
    noise_acc = float(target.holds(model, x_noisy).float().mean())
    best = min(attacked.values())
    measured = {
        "eps": eps_key(eps),
        "n_examples": len(split),
        "noise_accuracy": stored(noise_acc),
        "attack_accuracy": stored(best),
        "tolerance": s.tolerance,
    }
    if _beyond(best - noise_acc, s.tolerance):
        return Check(
            "noise-weaker-than-attack",
            SUSPECT,
            "random noise hurts more than the attack: the attack is broken",
            measured,
        )
    return Check("noise-weaker-than-attack", PASS, "the attack hurts more than random noise of the same norm", measured)


def run_checks(
    model: nn.Module,
    test: Split,
    ev: Evaluation,
    attacks: dict[str, Attack],
    threat: ThreatModel,
    eps_values: Sequence[float],
    settings: CheckSettings | None = None,
    *,
    target: Target | None = None,
) -> dict[str, dict[str, Any]]:
    """Every check on one evaluated model: code -> {status, detail, measured} (the results.json block).

    ``target`` is what the evaluation attacked (default: every example of ``test``, untargeted); the
    attacking checks use its first ``settings.n_examples`` examples.
    """
    s = settings or CheckSettings()
    checks: list[Check] = [
        monotone_in_eps(ev, s.tolerance),
        fgsm_not_stronger(ev, s.tolerance),
        white_box_beats_black_box(ev, s.tolerance),
        eot_for_randomized(model, ev),
        detector_aware(model, ev),
    ]
    attacking: list[tuple[str, Callable[[Target], Check]]] = []
    if eps_values:
        eps = max(eps_values)
        attacking = [
            (
                "gradient-health",
                lambda sub: gradient_health(model, sub.split.x, sub.goal(sub.split.y), s.max_bad_gradient_share),
            ),
            ("unbounded-eps-reaches-zero", lambda sub: unbounded_eps(model, sub, threat, s, ev)),
            ("attack-converged", lambda sub: converged(model, sub, ev, attacks, threat, eps, s)),
            ("noise-weaker-than-attack", lambda sub: noise_weaker(model, sub, ev, threat, eps, s)),
        ]
    subset: Target | None = None
    if s.n_examples > 0:
        subset = target.take(s.n_examples) if target is not None else EveryExample(test.take(s.n_examples))
        subset = subset.on(model_device(model))
    for code, run in attacking:
        checks.append(run(subset) if subset is not None else Check(code, SKIPPED, "checks_examples = 0"))
    for c in checks:
        if c.status == SUSPECT:
            log.warning("check %s is SUSPECT: %s", c.code, c.detail)
    return {c.code: c.to_dict() for c in checks}


def suspects(checks: dict[str, dict[str, Any]]) -> list[str]:
    """Codes of the checks that failed."""
    return [code for code, c in checks.items() if c["status"] == SUSPECT]
