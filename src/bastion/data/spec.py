"""What every dataset hands to the rest of bastion: a spec (metadata + input domain) and tensor splits."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from bastion.data.tabular.domain import TabularDomain
from bastion.domain import BoxDomain, InputDomain
from bastion.errors import InputValidationError


@dataclass(frozen=True, kw_only=True)
class DatasetSpec:
    """Metadata a model and an attack need about the data, independent of any split.

    Attributes:
        name: dataset family, e.g. ``"digits"``.
        source: the data SPEC string it was loaded from, e.g. ``"mnist:/data/mnist"``.
        modality: ``"image"`` or ``"tabular"``.
        classes: class names; ``len(classes)`` is the number of classes.
        input_shape: shape of one example, e.g. (1, 8, 8).
        domain: legal inputs in model space ([0, 1] pixels for images; a TabularDomain for tabular data).
        benign: index of the benign class for security data (attacks target it); None otherwise.
        feature_names: tabular column names in model space (empty for images).
        flip_preserves_label: a horizontal mirror image keeps the class (CIFAR-10 yes; digits and
            traffic signs no: a mirrored "turn left" sign means "turn right"). Augmentation reads it.
        preprocessing: decoding options that change the pixels a model sees (e.g. GTSRB's ROI crop);
            part of the fingerprint, so a model is never evaluated on differently prepared data.
    """

    name: str
    source: str
    modality: Literal["image", "tabular"]
    classes: tuple[str, ...]
    input_shape: tuple[int, ...]
    domain: InputDomain
    benign: int | None = None
    feature_names: tuple[str, ...] = ()
    flip_preserves_label: bool = False
    preprocessing: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to_dict(self) -> dict[str, Any]:
        d = {
            "name": self.name,
            "source": self.source,
            "modality": self.modality,
            "classes": list(self.classes),
            "input_shape": list(self.input_shape),
            "domain": self.domain.to_dict(),
            "benign": self.benign,
            "feature_names": list(self.feature_names),
        }
        # Written only when set, so specs saved before these keys existed keep their fingerprint.
        if self.flip_preserves_label:
            d["flip_preserves_label"] = True
        if self.preprocessing:
            d["preprocessing"] = dict(self.preprocessing)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DatasetSpec:
        return cls(
            name=d["name"],
            source=d["source"],
            modality=d["modality"],
            classes=tuple(d["classes"]),
            input_shape=tuple(d["input_shape"]),
            domain=domain_from_dict(d["domain"]),
            benign=d.get("benign"),
            feature_names=tuple(d.get("feature_names", ())),
            flip_preserves_label=bool(d.get("flip_preserves_label", False)),
            preprocessing=dict(d.get("preprocessing", {})),
        )

    def fingerprint(self) -> str:
        """Stable hash of everything but the source path: a model trained on one copy fits another."""
        d = self.to_dict()
        d.pop("source")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    def check_inputs(self, x: Tensor, what: str = "x") -> None:
        """Raise a clear error unless x is a finite float batch of this spec's shape inside the domain."""
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise InputValidationError(f"{what} must be a floating-point tensor")
        if tuple(x.shape[1:]) != self.input_shape:
            raise InputValidationError(
                f"{what} has shape {tuple(x.shape)}; {self.name} expects (N, {', '.join(map(str, self.input_shape))})"
            )
        self.domain.check(x, what)  # type: ignore[attr-defined]


def domain_from_dict(d: dict[str, Any]) -> InputDomain:
    """Rebuild a saved domain: ``box`` or ``tabular`` (a TabularDomain with its fitted preprocessing)."""
    if isinstance(d, dict) and d.get("kind") == "tabular":
        return TabularDomain.from_dict(d)
    return BoxDomain.from_dict(d)


@dataclass(frozen=True)
class Split:
    """Inputs x (N, *S) float32 inside the domain, labels y (N,) int64."""

    x: Tensor
    y: Tensor

    def __post_init__(self) -> None:
        if self.x.shape[0] != self.y.shape[0]:
            raise InputValidationError(f"split has {self.x.shape[0]} inputs but {self.y.shape[0]} labels")
        if self.y.dtype != torch.int64 or self.y.dim() != 1:
            raise InputValidationError(f"labels must be int64 of shape (N,), got {self.y.dtype} {tuple(self.y.shape)}")

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def take(self, n: int | None) -> Split:
        """The first n examples (all when n is None): splits are already shuffled by their seed."""
        return self if n is None or n >= len(self) else Split(self.x[:n], self.y[:n])

    def to(self, device: torch.device | str) -> Split:
        return Split(self.x.to(device), self.y.to(device))


@dataclass(frozen=True)
class Dataset:
    """A spec with train / validation / test splits, rebuilt identically from ``seed``."""

    spec: DatasetSpec
    train: Split
    val: Split
    test: Split
    seed: int
    split_info: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """What a run folder records so the same data can be rebuilt."""
        return {
            "spec": self.spec.source,
            "seed": self.seed,
            "sizes": {"train": len(self.train), "val": len(self.val), "test": len(self.test)},
            **self.split_info,
        }
