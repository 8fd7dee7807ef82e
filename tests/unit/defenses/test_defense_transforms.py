"""Input transforms: JPEG-like quantization, noise, smoothing votes, domain repair; all round-trip by name."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from bastion.defenses.transforms import (
    TRANSFORMS,
    DomainRepair,
    GaussianNoise,
    JPEGQuantize,
    SmoothedClassifier,
    jpeg_table,
    transform_from_dict,
)
from bastion.domain import BoxDomain
from bastion.errors import ConfigError


@settings(max_examples=20, deadline=None)
@given(h=st.integers(1, 20), w=st.integers(1, 20), c=st.integers(1, 3), quality=st.integers(1, 100))
def test_jpeg_keeps_shape_and_range(h: int, w: int, c: int, quality: int) -> None:
    x = torch.rand(2, c, h, w, generator=torch.Generator().manual_seed(h * w))
    out = JPEGQuantize(quality)(x)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1


def test_jpeg_error_grows_as_quality_drops_and_gradient_is_identity() -> None:
    x = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(0), requires_grad=True)
    errors = [float((JPEGQuantize(q)(x) - x).detach().abs().mean()) for q in (100, 75, 25, 5)]
    assert errors == sorted(errors) and errors[0] < 0.01 and errors[-1] > 0.05
    (grad,) = torch.autograd.grad(JPEGQuantize(10)(x).sum(), x)
    assert torch.equal(grad, torch.ones_like(x))  # BPDA: straight-through
    # A constant block is exactly representable by its DC coefficient.
    flat = torch.full((1, 1, 8, 8), 0.5)
    assert torch.allclose(JPEGQuantize(50).compress(flat), flat, atol=1 / 255)
    assert jpeg_table(50)[0, 0] == 16 and (jpeg_table(100) == 1).all()


def test_gaussian_noise_is_random_and_differentiable() -> None:
    x = torch.zeros(2, 3, requires_grad=True)
    noise = GaussianNoise(0.5)
    a, b = noise(x), noise(x)
    assert not torch.equal(a, b) and noise.randomized
    (grad,) = torch.autograd.grad(a.sum(), x)
    assert torch.equal(grad, torch.ones_like(x))
    with pytest.raises(ConfigError, match="sigma"):
        GaussianNoise(0.0)


class _Threshold(nn.Module):
    """Two classes: class 1 iff the first feature exceeds 0.5."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = 20 * (x[:, :1] - 0.5)
        return torch.cat([-z, z], dim=1)


def test_smoothed_classifier_votes_by_majority_with_surrogate_gradient() -> None:
    torch.manual_seed(0)
    smoothed = SmoothedClassifier(_Threshold(), sigma=0.1, n_samples=64)
    x = torch.tensor([[0.1, 0.0], [0.9, 0.0], [0.5, 0.0]], requires_grad=True)
    out = smoothed(x)
    assert out.argmax(1)[:2].tolist() == [0, 1]
    assert torch.allclose(out.exp().sum(1), torch.ones(3))  # log vote frequencies
    votes = (out.exp() * (64 + 2 * smoothed.alpha) - smoothed.alpha).round()
    assert votes.sum(1).tolist() == [64, 64, 64]
    (grad,) = torch.autograd.grad(out[:, 1].sum(), x)
    assert grad[2, 0] > 0 and torch.isfinite(grad).all()  # the soft vote moves toward class 1


def test_domain_repair_clips_to_the_domain() -> None:
    domain = BoxDomain(torch.tensor([0.0, -1.0]), torch.tensor([1.0, 1.0]))
    x = torch.tensor([[2.0, -3.0], [0.5, 0.5]], requires_grad=True)
    out = DomainRepair(domain)(x)
    assert torch.equal(out.detach(), torch.tensor([[1.0, -1.0], [0.5, 0.5]]))
    assert domain.is_feasible(out).all()


@pytest.mark.parametrize("name", TRANSFORMS.names())
def test_every_transform_round_trips_through_its_dict(name: str) -> None:
    t = TRANSFORMS.create(name)
    again = transform_from_dict(t.to_dict())
    assert again.to_dict() == t.to_dict()
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    if not getattr(t, "randomized", False):
        assert torch.equal(t(x), again(x))
