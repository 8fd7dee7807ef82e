"""Input transformations (feature squeezing) for the runtime defense: ``x -> x`` inside the domain.

Non-differentiable squeezers pass gradients straight through (BPDA with the identity, Athalye et al.
2018): an attack on the defended model then sees useful gradients, which is what an adaptive attacker
would do. ``differentiable = False`` records that the gradient is this approximation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.domain import BoxDomain, InputDomain
from bastion.errors import ConfigError, InputValidationError
from bastion.registry import Registry


class InputTransform(Protocol):
    """``x -> x``. ``differentiable = False``: the backward pass is an approximation (BPDA) or blocked.

    A transform with ``randomized = True`` draws fresh noise on every call: attacks need EOT.
    """

    @property
    def differentiable(self) -> bool: ...

    def __call__(self, x: Tensor) -> Tensor: ...

    def to_dict(self) -> dict[str, Any]: ...


def straight_through(x: Tensor, squeezed: Tensor) -> Tensor:
    """Forward: ``squeezed``; backward: identity (BPDA)."""
    return x + (squeezed - x).detach()


@dataclass(frozen=True)
class BitDepth:
    """Reduce each value to ``bits`` bits: round(x * (2^bits - 1)) / (2^bits - 1) (Xu et al. 2018).

    Assumes inputs in [0, 1] (images).
    """

    bits: int = 4
    differentiable: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.bits <= 16:
            raise ConfigError(f"bits must be in 1..16, got {self.bits}")

    def __call__(self, x: Tensor) -> Tensor:
        levels = 2**self.bits - 1
        return straight_through(x, torch.round(x * levels) / levels)

    def to_dict(self) -> dict[str, Any]:
        return {"name": "bit-depth", "bits": self.bits}


@dataclass(frozen=True)
class MedianFilter:
    """k x k median smoothing per channel with reflect padding (Xu et al. 2018), for (N, C, H, W) images.

    The median selects one input value per window, so gradients flow to it: differentiable almost
    everywhere, no approximation needed.
    """

    size: int = 2
    differentiable: bool = True

    def __post_init__(self) -> None:
        if self.size < 2:
            raise ConfigError(f"median filter size must be >= 2, got {self.size}")

    def __call__(self, x: Tensor) -> Tensor:
        if x.dim() != 4:
            raise ConfigError(f"median filter needs (N, C, H, W) images, got shape {tuple(x.shape)}")
        k = self.size
        pad_before, pad_after = (k - 1) // 2, k // 2
        padded = F.pad(x, (pad_before, pad_after, pad_before, pad_after), mode="reflect")
        patches = padded.unfold(2, k, 1).unfold(3, k, 1)  # (N, C, H, W, k, k)
        return patches.reshape(*patches.shape[:4], k * k).median(dim=-1).values

    def to_dict(self) -> dict[str, Any]:
        return {"name": "median", "size": self.size}


def is_randomized(transform: object) -> bool:
    """True when a transform (or classifier wrapper) draws fresh randomness per call."""
    return bool(getattr(transform, "randomized", False))


@dataclass(frozen=True)
class GaussianNoise:
    """Add i.i.d. N(0, sigma^2) noise on every call (the randomized half of randomized smoothing).

    The output is not clipped to the domain: the model sees the noisy point, as in Cohen et al. 2019.
    Noise comes from torch's default generator (never seeded here); attacks on it need EOT.
    """

    sigma: float = 0.1
    differentiable: bool = True
    randomized: bool = True

    def __post_init__(self) -> None:
        if not (math.isfinite(self.sigma) and self.sigma > 0):
            raise ConfigError(f"noise sigma must be finite and > 0, got {self.sigma}")

    def __call__(self, x: Tensor) -> Tensor:
        return x + self.sigma * torch.randn_like(x)

    def to_dict(self) -> dict[str, Any]:
        return {"name": "gaussian-noise", "sigma": self.sigma}


# The JPEG luminance quantization table (ITU-T T.81, Annex K.1).
_JPEG_LUMA = (
    (16, 11, 10, 16, 24, 40, 51, 61),
    (12, 12, 14, 19, 26, 58, 60, 55),
    (14, 13, 16, 24, 40, 57, 69, 56),
    (14, 17, 22, 29, 51, 87, 80, 62),
    (18, 22, 37, 56, 68, 109, 103, 77),
    (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101),
    (72, 92, 95, 98, 112, 100, 103, 99),
)


@cache
def _dct_matrix(n: int = 8) -> Tensor:
    """Orthonormal DCT-II matrix D (n, n): coefficients = D @ block @ D.T."""
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    d = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2 / n)
    d[0] /= math.sqrt(2)
    return d.float()


def jpeg_table(quality: int) -> Tensor:
    """(8, 8) quantization steps for ``quality`` in 1..100, scaled as in the IJG reference encoder."""
    scale = 5000 / quality if quality < 50 else 200 - 2 * quality
    table = torch.floor((torch.tensor(_JPEG_LUMA, dtype=torch.float64) * scale + 50) / 100)
    return table.clamp(1, 255).float()


@dataclass(frozen=True)
class JPEGQuantize:
    """JPEG-like lossy compression in torch: 8x8 block DCT per channel, quantize, inverse DCT (Das et al. 2017).

    Works on (N, C, H, W) images in [0, 1]; sides that are not multiples of 8 are padded by replication
    and cropped back. Each channel uses the luminance table (no chroma subsampling, no entropy coding:
    only the lossy step matters for a defense). Rounding has zero gradient, so the backward pass is the
    identity (BPDA, Athalye et al. 2018); ``differentiable = False`` records it.
    """

    quality: int = 75
    differentiable: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.quality <= 100:
            raise ConfigError(f"JPEG quality must be in 1..100, got {self.quality}")

    def __call__(self, x: Tensor) -> Tensor:
        if x.dim() != 4:
            raise ConfigError(f"JPEG quantization needs (N, C, H, W) images, got shape {tuple(x.shape)}")
        return straight_through(x, self.compress(x.detach()))

    def compress(self, x: Tensor) -> Tensor:
        """The lossy round trip itself (no gradient)."""
        n, c, h, w = x.shape
        ph, pw = (-h) % 8, (-w) % 8
        padded = F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x
        hh, ww = h + ph, w + pw
        blocks = padded.reshape(n, c, hh // 8, 8, ww // 8, 8).permute(0, 1, 2, 4, 3, 5)  # (..., 8, 8)
        d = _dct_matrix().to(x.device, x.dtype)
        q = jpeg_table(self.quality).to(x.device, x.dtype)
        coeffs = d @ (blocks * 255 - 128) @ d.T
        restored = (d.T @ (torch.round(coeffs / q) * q) @ d + 128) / 255
        out = restored.permute(0, 1, 2, 4, 3, 5).reshape(n, c, hh, ww)[:, :, :h, :w]
        return out.clamp(0, 1)

    def to_dict(self) -> dict[str, Any]:
        return {"name": "jpeg", "quality": self.quality}


@dataclass(frozen=True)
class DomainRepair:
    """Snap inputs onto the input domain: clip to bounds and round integer/one-hot features (tabular).

    Uses the domain's own ``repair`` (with x as its own reference), so whatever the dataset declares
    (box, integer, one-hot, immutable) is enforced. Straight-through gradient (BPDA).
    """

    domain: InputDomain = field(default_factory=BoxDomain.unit)
    differentiable: bool = False

    def __call__(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            repaired = self.domain.repair(self.domain.project(x, x), x)
        return straight_through(x, repaired)

    def to_dict(self) -> dict[str, Any]:
        return {"name": "domain-repair", "domain": self.domain.to_dict()}


class SmoothedClassifier(nn.Module):
    """Randomized-smoothing-style majority vote over ``n_samples`` Gaussian-noised copies (Cohen et al. 2019).

    Forward value: log of the vote frequencies (with ``alpha`` add-one style smoothing so it is finite),
    so ``argmax`` is the majority vote. Backward: the gradient of the log of the mean softmax over the
    same noisy copies (a straight-through surrogate of the hard vote). Randomized: attacks need EOT.

    Args:
        model: the base classifier.
        sigma: noise standard deviation in input units.
        n_samples: noisy copies per input and call.
        alpha: pseudo-count added to every class before normalising the votes.
    """

    randomized = True

    def __init__(self, model: nn.Module, *, sigma: float = 0.1, n_samples: int = 16, alpha: float = 0.5) -> None:
        super().__init__()
        if n_samples < 1:
            raise ConfigError(f"n_samples must be >= 1, got {n_samples}")
        if not alpha > 0:
            raise ConfigError(f"alpha must be > 0, got {alpha}")
        self.model = model
        self.noise = GaussianNoise(sigma)
        self.n_samples = n_samples
        self.alpha = alpha

    def features(self, x: Tensor) -> Tensor:
        """The base model's penultimate features of the clean input (what feature detectors read)."""
        return self.model.features(x)  # type: ignore[operator]

    def forward(self, x: Tensor) -> Tensor:
        n = x.shape[0]
        noisy = self.noise(x.repeat(self.n_samples, *[1] * (x.dim() - 1)))
        logits = self.model(noisy).view(self.n_samples, n, -1)
        soft = logits.softmax(dim=2).mean(dim=0).clamp_min(1e-12).log()
        votes = F.one_hot(logits.argmax(dim=2), logits.shape[2]).sum(dim=0).to(x.dtype)
        hard = ((votes + self.alpha) / (self.n_samples + self.alpha * logits.shape[2])).log()
        return soft + (hard - soft).detach()


TRANSFORMS: Registry[InputTransform] = Registry("input transform")
TRANSFORMS.register("bit-depth")(BitDepth)
TRANSFORMS.register("median")(MedianFilter)
TRANSFORMS.register("gaussian-noise")(GaussianNoise)
TRANSFORMS.register("jpeg")(JPEGQuantize)
TRANSFORMS.register("domain-repair")(DomainRepair)


def transform_from_dict(d: dict[str, Any]) -> InputTransform:
    options = {k: v for k, v in d.items() if k != "name"}
    if "domain" in options:
        options["domain"] = BoxDomain.from_dict(options["domain"])
    return TRANSFORMS.create(str(d.get("name")), **options)


def check_in_domain(x: Tensor, domain: InputDomain, what: str = "x") -> None:
    """Raise a clear error if x is non-finite or outside ``domain``."""
    check = getattr(domain, "check", None)
    if check is not None:
        check(x, what)
        return
    if not torch.isfinite(x).all():
        raise InputValidationError(f"{what} contains NaN or infinite values")
    bad = ~domain.is_feasible(x, x)
    if bad.any():
        raise InputValidationError(f"{what}[{int(bad.nonzero()[0])}] lies outside the input domain")
