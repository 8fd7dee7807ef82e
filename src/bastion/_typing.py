"""Shared type aliases and the few protocols every layer agrees on."""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum

from torch import Tensor

#: Anything mapping a batch ``x`` of shape (N, *S) to logits (N, C). Every ``nn.Module`` model fits.
Classifier = Callable[[Tensor], Tensor]

#: A per-sample loss ``(logits (N, C), reference) -> (N,)``; reference is labels or probabilities.
Loss = Callable[[Tensor, Tensor], Tensor]


class Norm(StrEnum):
    """The norm an attack's budget is measured in. Accepts strings: ``Norm("linf")``."""

    LINF = "linf"
    L2 = "l2"

    @classmethod
    def _missing_(cls, value: object) -> Norm:
        aliases = {"inf": cls.LINF, "l_inf": cls.LINF, "linfty": cls.LINF, "2": cls.L2}
        if isinstance(value, str) and value.lower() in aliases:
            return aliases[value.lower()]
        if isinstance(value, str) and value.lower() in {m.value for m in cls}:
            return cls(value.lower())
        raise ValueError(f"unknown norm {value!r}; expected one of {[m.value for m in cls]}")
