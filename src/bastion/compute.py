"""Counting forward and backward passes, so compute claims are measurements.

Counts are per example: a batch of 128 through the model adds 128 forward passes, and one backward
through that output adds 128 backward passes (whether the gradient goes to the input, the weights, or
both). "Gradient evaluations" in reports are these per-example backward passes.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from bastion._typing import Classifier


@dataclass
class PassCounter:
    """Mutable tally of per-example forward and backward passes."""

    forward: int = 0
    backward: int = 0

    def reset(self) -> None:
        self.forward = 0
        self.backward = 0

    def snapshot(self) -> tuple[int, int]:
        return self.forward, self.backward


class CountingModel(nn.Module):
    """Wraps a classifier; every call adds to ``counter``, and so does every backward through its output.

    The backward count uses a hook on the output tensor, which fires once per backward pass that
    reaches it, whether started by ``loss.backward()`` or ``torch.autograd.grad``.
    """

    def __init__(self, model: Classifier, counter: PassCounter | None = None) -> None:
        super().__init__()
        self.inner = model
        self.counter = counter if counter is not None else PassCounter()

    def forward(self, x: Tensor) -> Tensor:
        out = self.inner(x)
        n = int(x.shape[0])
        self.counter.forward += n
        if out.requires_grad:
            counter = self.counter

            def count_backward(grad: Tensor) -> None:
                counter.backward += n

            out.register_hook(count_backward)
        return out
