"""The set of legal inputs, in model space. Attacks read it from the dataset; none hard-codes [0, 1].

A :class:`BoxDomain` is per-feature lower/upper bounds (images: the pixel box). Tabular data adds
integer, one-hot and immutable constraints on top of the same interface (``project`` each step,
``repair`` once at the end, ``is_feasible`` as the final judge).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from bastion.errors import InputValidationError


@runtime_checkable
class InputDomain(Protocol):
    """Legal inputs. ``x_ref`` is the clean input an adversarial example starts from."""

    def project(self, x: Tensor, x_ref: Tensor) -> Tensor: ...

    def repair(self, x: Tensor, x_ref: Tensor) -> Tensor: ...

    def is_feasible(self, x: Tensor, x_ref: Tensor | None = None) -> Tensor: ...

    def to_dict(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class BoxDomain:
    """Per-feature bounds ``lower <= x <= upper``; bounds broadcast against one example's shape.

    Args:
        lower: scalar or tensor broadcastable to the example shape (e.g. (C, 1, 1) for images).
        upper: same; must be >= lower everywhere.
    """

    lower: Tensor
    upper: Tensor

    def __post_init__(self) -> None:
        lower = torch.as_tensor(self.lower, dtype=torch.float32)
        upper = torch.as_tensor(self.upper, dtype=torch.float32)
        if not (torch.isfinite(lower).all() and torch.isfinite(upper).all()):
            raise InputValidationError("domain bounds must be finite")
        if (lower > upper).any():
            raise InputValidationError("domain lower bound exceeds upper bound for some feature")
        object.__setattr__(self, "lower", lower)
        object.__setattr__(self, "upper", upper)

    @classmethod
    def unit(cls) -> BoxDomain:
        """The [0, 1] pixel box."""
        return cls(torch.tensor(0.0), torch.tensor(1.0))

    def _bounds(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.lower.to(x.device, x.dtype), self.upper.to(x.device, x.dtype)

    def project(self, x: Tensor, x_ref: Tensor) -> Tensor:
        """Clamp into the box (the exact Euclidean projection onto a box)."""
        lower, upper = self._bounds(x)
        return torch.maximum(torch.minimum(x, upper), lower)

    def repair(self, x: Tensor, x_ref: Tensor) -> Tensor:
        """A box has no discrete structure: repair is projection."""
        return self.project(x, x_ref)

    def is_feasible(self, x: Tensor, x_ref: Tensor | None = None, atol: float = 1e-6) -> Tensor:
        """(N,) bool: every feature of the example lies inside the bounds (within ``atol``)."""
        lower, upper = self._bounds(x)
        inside = (x >= lower - atol) & (x <= upper + atol)
        return inside.flatten(1).all(dim=1)

    def check(self, x: Tensor, what: str = "x") -> None:
        """Raise a clear error if a batch is non-finite or leaves the domain."""
        if not torch.isfinite(x).all():
            raise InputValidationError(f"{what} contains NaN or infinite values")
        bad = ~self.is_feasible(x)
        if bad.any():
            idx = int(bad.nonzero()[0])
            lower, upper = self._bounds(x)
            lo, hi = float(lower.min()), float(upper.max())
            raise InputValidationError(
                f"{what}[{idx}] lies outside the input domain (values in "
                f"[{float(x[idx].min()):.4g}, {float(x[idx].max()):.4g}], domain within [{lo:.4g}, {hi:.4g}])"
            )

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "box", "lower": self.lower.tolist(), "upper": self.upper.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BoxDomain:
        if d.get("kind") != "box":
            raise InputValidationError(f"unknown domain kind {d.get('kind')!r}")
        return cls(torch.tensor(d["lower"]), torch.tensor(d["upper"]))
