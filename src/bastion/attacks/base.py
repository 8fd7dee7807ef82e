"""The attack contract. The base checks inputs, owns eval mode, projection, repair, success and counting;
a subclass writes only its math in ``_perturb``.
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, final

import torch
from torch import Tensor, nn

from bastion._typing import Classifier, Norm
from bastion.attacks.losses import cross_entropy
from bastion.compute import CountingModel, PassCounter
from bastion.errors import InputValidationError
from bastion.goals import Diverge, Goal
from bastion.threat import ThreatModel


@dataclass(frozen=True)
class AttackResult:
    """x_adv (N, *S) inside the threat model; success (N,) bool; pass counts are per example, in total.

    ``n_queries`` (N,) counts the forward passes spent on each example (the clean and the final check
    included) when the attack tracks them (None otherwise). ``min_norm`` (N,) is, for minimum-norm
    attacks (CW, DeepFool), the norm of the smallest misclassifying perturbation found before the
    budget projection (inf where none was found); ``success`` still only counts within eps. ``logits``
    (N, C) are the model's logits at x_adv, the ones ``success`` was judged on.
    """

    x_adv: Tensor
    success: Tensor
    n_forward: int
    n_backward: int
    wall_time_s: float
    n_queries: Tensor | None = None
    min_norm: Tensor | None = None
    logits: Tensor | None = None

    @property
    def robust(self) -> Tensor:
        """(N,) bool: the attack failed on this example."""
        return ~self.success


@contextmanager
def evaluating(model: Classifier) -> Iterator[None]:
    """Put a module in eval mode for the duration; restore its previous mode (and its children's)."""
    if not isinstance(model, nn.Module):
        yield
        return
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for m, mode in modes.items():
            m.training = mode


@dataclass(frozen=True)
class Perturbation:
    """What ``_perturb`` may return instead of a bare tensor, for attacks that track more per example.

    x_adv: (n, *S) candidates. n_queries: (n,) forward passes spent per example. min_norm: (n,) norm of
    the smallest successful perturbation found (inf: none), before any budget projection. logits: (n, C)
    the model's logits at x_adv when the attack already computed them; the base then skips its final
    success forward if projection and repair leave x_adv unchanged (one forward less per call).
    """

    x_adv: Tensor
    n_queries: Tensor | None = None
    min_norm: Tensor | None = None
    logits: Tensor | None = None


def keep_best(best: Tensor, candidate: Tensor, better: Tensor) -> Tensor:
    """Row-wise select; ``better`` (N,) broadcasts over candidate (N, *S)."""
    return torch.where(better.view(-1, *[1] * (candidate.dim() - 1)), candidate, best)


def check_batch(x: Tensor, goal: Goal, threat: ThreatModel) -> None:
    """Clear errors for the classic mistakes: wrong dtype/shape, NaN, mismatched sizes, x outside domain."""
    if not isinstance(x, Tensor):
        raise InputValidationError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise InputValidationError(f"x must be a floating-point tensor, got dtype {x.dtype}")
    if x.dim() < 2:
        raise InputValidationError(f"x must be a batch of shape (N, ...), got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise InputValidationError(f"x is an empty batch (shape {tuple(x.shape)}); pass at least one example")
    if not torch.isfinite(x).all():
        raise InputValidationError("x contains NaN or infinite values")
    ref = goal.reference
    if ref.shape[0] != x.shape[0]:
        raise InputValidationError(
            f"batch size mismatch: x has {x.shape[0]} examples, the goal's reference has {ref.shape[0]}"
        )
    if not isinstance(goal, Diverge) and ref.dim() != 1:
        raise InputValidationError(f"labels must have shape (N,), got {tuple(ref.shape)}")
    try:
        infeasible = ~threat.domain.is_feasible(x, x)
    except RuntimeError as exc:  # a shape the domain cannot broadcast against
        raise InputValidationError(
            f"x of shape {tuple(x.shape)} does not fit the threat model's input domain: {exc}"[:500]
        ) from None
    if infeasible.any():
        raise InputValidationError(
            f"x[{int(infeasible.nonzero()[0])}] is outside the input domain; attacks start from legal inputs"
        )


def model_dtype(model: Classifier) -> torch.dtype | None:
    """The floating dtype of the model's first floating parameter or buffer (None: no parameters)."""
    if isinstance(model, nn.Module):
        for t in itertools.chain(model.parameters(), model.buffers()):
            if t.is_floating_point():
                return t.dtype
    return None


def checked_logits(model: Classifier, x: Tensor, what: str = "x", *, finite: bool = True) -> Tensor:
    """``model(x)``, with clear errors instead of a traceback from deep inside the model.

    Raises:
        InputValidationError: x's dtype differs from the model's, x's shape does not fit the model, or the
            model returns NaN / infinite logits (a broken model is refused, never reported on; pass
            ``finite=False`` to get them, e.g. to reject those inputs instead).
    """
    dtype = model_dtype(model)
    if dtype is not None and x.dtype != dtype:
        raise InputValidationError(
            f"{what} is {x.dtype} but the model computes in {dtype}; convert the batch first (e.g. x.to({dtype}))"
        )
    try:
        logits = model(x)
    except RuntimeError as exc:
        raise InputValidationError(f"{what} of shape {tuple(x.shape)} does not fit the model: {exc}"[:500]) from None
    if logits.dim() != 2 or logits.shape[0] != x.shape[0]:
        raise InputValidationError(
            f"the model returned logits of shape {tuple(logits.shape)} for {what} of shape {tuple(x.shape)}; "
            "expected (N, C)"
        )
    bad = ~torch.isfinite(logits).all(dim=1)
    if finite and bad.any():
        raise InputValidationError(
            f"the model returned NaN or infinite logits for {int(bad.sum())} of {len(bad)} inputs "
            f"(first: {what}[{int(bad.nonzero()[0])}]); a broken model cannot be evaluated"
        )
    return logits


def check_labels(logits: Tensor, goal: Goal) -> None:
    if isinstance(goal, Diverge):
        if goal.reference.shape != logits.shape:
            raise InputValidationError(
                f"reference probabilities have shape {tuple(goal.reference.shape)}, logits {tuple(logits.shape)}"
            )
        return
    n_classes = logits.shape[1]
    ref = goal.reference
    if ref.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise InputValidationError(f"labels must be integers, got dtype {ref.dtype}")
    if ref.numel() and (int(ref.min()) < 0 or int(ref.max()) >= n_classes):
        raise InputValidationError(
            f"labels out of range: got values in [{int(ref.min())}, {int(ref.max())}], model has {n_classes} classes"
        )


#: Dtypes whose rounding can push x + delta past the budget: the final projection runs in float32.
LOW_PRECISION = (torch.float16, torch.bfloat16)


def project_legal(threat: ThreatModel, x_adv: Tensor, x: Tensor) -> Tensor:
    """``x_adv`` projected onto the threat model and repaired into the domain, in ``x_adv``'s dtype.

    In float16 / bfloat16, rounding the projected point can land one ulp outside the ball (~1e-4 at eps
    0.1). There the projection runs in float32 and each element is rounded toward ``x`` instead, so
    ``|x_adv - x|`` never grows in any coordinate and the budget holds in every norm.
    """
    if x_adv.dtype not in LOW_PRECISION:
        return threat.domain.repair(threat.project(x_adv, x), x)
    x32 = x.float()
    legal32 = threat.domain.repair(threat.project(x_adv.float(), x32), x32)
    rounded = legal32.to(x_adv.dtype)
    outward = (rounded.float() - x32).abs() > (legal32 - x32).abs()
    return torch.where(outward, torch.nextafter(rounded, x.to(x_adv.dtype)), rounded)


class Attack(ABC):
    """Subclasses are frozen keyword-only dataclasses of hyperparameters; model, data and budget per call.

    ``early_stop`` (on subclasses) skips examples that already satisfy the goal: the attack stops
    working on an example once it is misclassified.
    """

    name: str = "attack"
    #: Norms the attack is defined for; a threat model in another norm is refused by ``check``.
    norms: ClassVar[frozenset[Norm]] = frozenset({Norm.LINF, Norm.L2})

    @final
    def __call__(
        self,
        model: Classifier,
        x: Tensor,
        goal: Goal,
        threat: ThreatModel,
        *,
        rng: torch.Generator | None = None,
        prior_score: Tensor | None = None,
    ) -> AttackResult:
        """Attack ``x`` toward ``goal`` within ``threat``.

        ``prior_score`` (N,) is the lowest :func:`~bastion.attacks.losses.goal_score` earlier attacks
        reached on each example; an attack that spends its budget nearest-first (:class:`Probed`) orders
        by it, every other attack ignores it.
        """
        check_batch(x, goal, threat)
        if prior_score is not None and prior_score.shape != (x.shape[0],):
            raise InputValidationError(
                f"prior_score has shape {tuple(prior_score.shape)}, expected ({x.shape[0]},): one per example"
            )
        start = time.perf_counter()
        counter = PassCounter()
        counted = CountingModel(model, counter)
        with evaluating(model):
            x = x.detach()
            with torch.no_grad():
                clean_logits = checked_logits(counted, x)
            check_labels(clean_logits, goal)
            self.check(goal, threat, clean_logits.shape[1])
            todo = (
                ~goal.satisfied(clean_logits)
                if self._skips_satisfied()
                else torch.ones_like(clean_logits[:, 0], dtype=torch.bool)
            )
            x_adv = x.clone()
            adv_logits = clean_logits.clone()
            scored = True  # adv_logits are the model's logits at x_adv
            n_queries: Tensor | None = None
            min_norm: Tensor | None = None
            if todo.any() and threat.eps > 0:
                idx = todo.nonzero().squeeze(1)
                prior = prior_score[idx] if prior_score is not None else None
                out = self._perturb_after(counted, x[idx], goal.subset(idx), threat, rng, prior)
                sub = (out.x_adv if isinstance(out, Perturbation) else out).detach()
                legal = project_legal(threat, sub, x[idx])
                x_adv[idx] = legal
                scored = isinstance(out, Perturbation) and out.logits is not None and torch.equal(legal, sub)
                if scored:
                    adv_logits[idx] = out.logits.detach().to(adv_logits.dtype)  # type: ignore[union-attr]
                if isinstance(out, Perturbation) and out.n_queries is not None:
                    n_queries = torch.full((x.shape[0],), 2, dtype=torch.long, device=x.device)
                    n_queries[idx] += out.n_queries.to(device=x.device, dtype=torch.long)
                if isinstance(out, Perturbation) and out.min_norm is not None:
                    min_norm = torch.full((x.shape[0],), float("inf"), device=x.device)
                    min_norm[~todo] = 0.0
                    min_norm[idx] = out.min_norm.to(device=x.device, dtype=min_norm.dtype)
            if not scored:
                with torch.no_grad():
                    adv_logits = counted(x_adv)
            success = goal.satisfied(adv_logits)
        return AttackResult(
            x_adv=x_adv.detach(),
            success=success,
            n_forward=counter.forward,
            n_backward=counter.backward,
            wall_time_s=time.perf_counter() - start,
            n_queries=n_queries,
            min_norm=min_norm,
            logits=adv_logits.detach(),
        )

    def perturb(
        self,
        model: Classifier,
        x: Tensor,
        goal: Goal,
        threat: ThreatModel,
        *,
        rng: torch.Generator | None = None,
    ) -> Tensor:
        """The lean path for training loops: adversarial examples only, no checks, no success pass.

        Still in eval mode (batch-norm statistics are not touched by the attack) and still projected
        and repaired, so the examples are inside the threat model.
        """
        with evaluating(model):
            x = x.detach()
            if threat.eps == 0:
                return x.clone()
            out = self._perturb(model, x, goal, threat, rng)
            x_adv = (out.x_adv if isinstance(out, Perturbation) else out).detach()
            return threat.domain.repair(threat.project(x_adv, x), x)

    def describe(self) -> dict[str, Any]:
        """A stable, JSON-ready description: ``{"class": ..., **hyperparameters}``, losses by their name and
        nested attacks described the same way (no memory addresses, so two runs record the same text)."""
        return describe_value(self)

    def check(self, goal: Goal, threat: ThreatModel, n_classes: int) -> None:  # noqa: B027 - optional hook
        """Raise a clear error if this attack cannot serve this goal, threat model or number of classes."""

    def supports(self, norm: Norm | str) -> bool:
        """Whether this attack is defined for ``norm`` (registry-wide tests and suites ask before calling)."""
        return Norm(norm) in self.norms

    def _skips_satisfied(self) -> bool:
        return bool(getattr(self, "early_stop", True))

    def _perturb_after(
        self,
        model: Classifier,
        x: Tensor,
        goal: Goal,
        threat: ThreatModel,
        rng: torch.Generator | None,
        prior_score: Tensor | None,
    ) -> Tensor | Perturbation:
        """``_perturb`` for an attack told how near earlier attacks got (``prior_score``, or None); only
        attacks that order their work by it override this."""
        return self._perturb(model, x, goal, threat, rng)

    @abstractmethod
    def _perturb(
        self, model: Classifier, x: Tensor, goal: Goal, threat: ThreatModel, rng: torch.Generator | None
    ) -> Tensor | Perturbation:
        """Return candidate adversarial examples for x (or a Perturbation); the base projects and repairs them."""


def describe_value(value: Any) -> Any:
    """``value`` as JSON-ready data that is the same in every run: attacks and other dataclasses as their
    class name plus fields, callables by ``__name__``, modules by class name, objects with ``to_dict`` by it."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else str(value)
    if isinstance(value, enum.Enum):
        return describe_value(value.value)
    if isinstance(value, list | tuple):
        return [describe_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): describe_value(v) for k, v in value.items()}
    if isinstance(value, Tensor):
        return f"tensor{tuple(value.shape)}"
    if isinstance(value, nn.Module):
        return {"class": type(value).__name__}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: describe_value(getattr(value, f.name)) for f in dataclasses.fields(value) if f.repr}
        return {"class": type(value).__name__, **fields}
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        return describe_value(to_dict())
    name = getattr(value, "__name__", None)
    if isinstance(name, str) and callable(value):
        return name
    return type(value).__name__


def gradient_shares(model: Classifier, x: Tensor, goal: Goal) -> tuple[float, float, Tensor]:
    """(share of examples whose cross-entropy input gradient toward ``goal`` is all zero, share with a
    non-finite entry, clean logits): the signs that gradient attacks cannot work on these examples."""
    with evaluating(model):
        _, grad, logits = loss_gradient(model, x, goal, cross_entropy)
    flat = grad.flatten(1)
    zero = float((flat == 0).all(dim=1).float().mean()) if len(flat) else 0.0
    nonfinite = float((~torch.isfinite(flat)).any(dim=1).float().mean()) if len(flat) else 0.0
    return zero, nonfinite, logits


def loss_gradient(model: Classifier, x_adv: Tensor, goal: Goal, loss_fn: object) -> tuple[Tensor, Tensor, Tensor]:
    """One forward+backward: (loss (N,), gradient of the goal-oriented loss wrt x_adv, logits).

    The gradient points in the direction that *improves* the goal (ascend or descend the loss).
    """
    x_adv = x_adv.detach().requires_grad_(True)
    logits = model(x_adv)
    loss = loss_fn(logits, goal.reference)  # type: ignore[operator]
    objective = loss.sum() if goal.ascend else -loss.sum()
    (grad,) = torch.autograd.grad(objective, x_adv)
    return loss.detach(), grad, logits.detach()
