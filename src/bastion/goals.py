"""What an attack is trying to achieve, as a value: the loss reference, its direction, and success.

``Misclassify(y)`` (untargeted), ``Reach(target)`` (targeted), ``Diverge(p)`` (push predictions away from
reference probabilities: the TRADES inner problem).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from torch import Tensor


class Goal(Protocol):
    """reference feeds the loss; ascend says whether to maximise (True) or minimise it."""

    @property
    def reference(self) -> Tensor: ...

    @property
    def ascend(self) -> bool: ...

    def satisfied(self, logits: Tensor) -> Tensor: ...

    def subset(self, index: Tensor) -> Goal: ...


@dataclass(frozen=True)
class Misclassify:
    """Untargeted: any label but ``y`` (N,)."""

    reference: Tensor
    ascend: bool = True

    def satisfied(self, logits: Tensor) -> Tensor:
        return logits.argmax(dim=1) != self.reference

    def subset(self, index: Tensor) -> Misclassify:
        return Misclassify(self.reference[index])


@dataclass(frozen=True)
class Reach:
    """Targeted: predict ``target`` (N,). Loss is minimised."""

    reference: Tensor
    ascend: bool = False

    def satisfied(self, logits: Tensor) -> Tensor:
        return logits.argmax(dim=1) == self.reference

    def subset(self, index: Tensor) -> Reach:
        return Reach(self.reference[index])


@dataclass(frozen=True)
class Diverge:
    """Move the output distribution away from ``reference`` probabilities (N, C); success = top-1 changed."""

    reference: Tensor
    ascend: bool = True

    def satisfied(self, logits: Tensor) -> Tensor:
        return logits.argmax(dim=1) != self.reference.argmax(dim=1)

    def subset(self, index: Tensor) -> Diverge:
        return Diverge(self.reference[index])
