"""Tiny models and cheap attack options for the attack tests."""

from __future__ import annotations

import torch
from torch import Tensor, nn

#: Options that keep every registered attack fast in the contract tests.
CHEAP: dict[str, dict[str, object]] = {
    "pgd": {"n_steps": 3},
    "mifgsm": {"n_steps": 3},
    "apgd": {"n_steps": 4},
    "apgd-ce": {"n_steps": 4},
    "apgd-dlr": {"n_steps": 4},
    "apgd-margin": {"n_steps": 4},
    "apgd-t": {"n_steps": 3, "n_targets": 2},
    "square": {"n_queries": 12},
    "cw": {"n_steps": 4, "n_search": 2},
    "deepfool": {"n_steps": 4, "n_candidates": 3},
}


class Linear(nn.Module):
    """f(x) = W flatten(x) + b: gradients and optimal perturbations are known in closed form."""

    def __init__(self, weight: Tensor, bias: Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.clone())
        self.bias = nn.Parameter(bias.clone())

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(1) @ self.weight.T + self.bias


class NoBackward(torch.autograd.Function):
    """Identity whose backward raises: a model built on it cannot be differentiated."""

    @staticmethod
    def forward(ctx: object, x: Tensor) -> Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx: object, grad: Tensor) -> Tensor:
        raise RuntimeError("this model's gradients must never be read")


class GradientFree(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: Tensor) -> Tensor:
        return self.inner(NoBackward.apply(x))


def small_mlp(n_features: int, n_classes: int, seed: int = 0) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(n_features, 16), nn.Tanh(), nn.Linear(16, n_classes))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.8)
    return model.eval()
