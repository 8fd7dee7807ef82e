"""The threat model as an object: norm, budget and input domain travel together.

Every attack takes a :class:`ThreatModel` and never clamps or masks by itself, so one PGD serves pixels
and tabular rows alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from bastion._typing import Norm
from bastion.domain import BoxDomain, InputDomain
from bastion.errors import InputValidationError

_TINY = 1e-12


def _per_sample_view(v: Tensor, like: Tensor) -> Tensor:
    return v.view(-1, *([1] * (like.dim() - 1)))


@dataclass(frozen=True, kw_only=True)
class ThreatModel:
    """An ``eps``-ball in ``norm`` intersected with the input ``domain``.

    Args:
        norm: ``Norm.LINF`` or ``Norm.L2`` (strings accepted).
        eps: budget in model-space units (pixels in [0, 1] for images); must be finite and >= 0.
        domain: legal inputs; defaults to the [0, 1] box.
    """

    norm: Norm
    eps: float
    domain: InputDomain = BoxDomain.unit()  # noqa: RUF009 - immutable value object

    def __post_init__(self) -> None:
        object.__setattr__(self, "norm", Norm(self.norm))
        if not isinstance(self.eps, int | float) or isinstance(self.eps, bool):
            raise InputValidationError(f"eps must be a number, got {type(self.eps).__name__}")
        if not math.isfinite(self.eps) or self.eps < 0:
            raise InputValidationError(f"eps must be finite and >= 0, got {self.eps}")
        object.__setattr__(self, "eps", float(self.eps))

    def steepest(self, grad: Tensor) -> Tensor:
        """The unit-norm direction of steepest ascent for this norm (sign, or L2-normalised)."""
        if self.norm is Norm.LINF:
            return grad.sign()
        norms = grad.flatten(1).norm(dim=1).clamp_min(_TINY)
        return grad / _per_sample_view(norms, grad)

    def project_ball(self, x_adv: Tensor, x: Tensor) -> Tensor:
        """Project onto the eps-ball around x (ignores the domain)."""
        delta = x_adv - x
        if self.norm is Norm.LINF:
            delta = delta.clamp(-self.eps, self.eps)
        else:
            norms = delta.flatten(1).norm(dim=1)
            factor = torch.where(norms > self.eps, self.eps / norms.clamp_min(_TINY), torch.ones_like(norms))
            delta = delta * _per_sample_view(factor, delta)
        return x + delta

    def project(self, x_adv: Tensor, x: Tensor) -> Tensor:
        """Onto ball(x, eps) ∩ domain.

        Clamping into the domain after the ball projection only moves coordinates toward x (which is in
        the domain), so the result stays inside the ball: both constraints hold, in any norm here.
        """
        return self.domain.project(self.project_ball(x_adv, x), x)

    def random_start(self, x: Tensor, rng: torch.Generator | None) -> Tensor:
        """A uniform point of the ball around x (L-inf: uniform in the cube; L2: uniform in the ball)."""
        if self.norm is Norm.LINF:
            u = torch.rand(x.shape, generator=rng, device=x.device, dtype=x.dtype)
            return self.project(x + (2 * u - 1) * self.eps, x)
        direction = torch.randn(x.shape, generator=rng, device=x.device, dtype=x.dtype)
        direction = direction / _per_sample_view(direction.flatten(1).norm(dim=1).clamp_min(_TINY), x)
        d = x[0].numel()
        radius = torch.rand(x.shape[0], generator=rng, device=x.device, dtype=x.dtype) ** (1.0 / d)
        return self.project(x + direction * _per_sample_view(radius * self.eps, x), x)

    def distance(self, x_adv: Tensor, x: Tensor) -> Tensor:
        """(N,) distance between x_adv and x in this norm."""
        delta = (x_adv - x).flatten(1)
        if self.norm is Norm.LINF:
            return delta.abs().amax(dim=1)
        return delta.norm(dim=1)

    def contains(self, x_adv: Tensor, x: Tensor, atol: float = 1e-6) -> Tensor:
        """(N,) bool: inside the ball (within float tolerance) and feasible for the domain."""
        return (self.distance(x_adv, x) <= self.eps + atol) & self.domain.is_feasible(x_adv, x)

    def with_eps(self, eps: float) -> ThreatModel:
        """The same threat model at another budget."""
        return ThreatModel(norm=self.norm, eps=eps, domain=self.domain)
