"""The runtime defense's configuration, validated against the registries that build it."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from bastion.config import StrictConfig
from bastion.defenses.detectors.registry import DETECTORS


class DefenseConfig(StrictConfig):
    """The runtime defense: squeezers before the model, detectors at a target FPR, adaptive evaluation.

    ``detectors`` are names in :data:`~bastion.defenses.detectors.registry.DETECTORS`.
    """

    bit_depth: int | None = Field(default=3, ge=1, le=16)
    median: int | None = Field(default=None, ge=2)
    target_fpr: float = Field(default=0.05, gt=0, lt=1)
    jpeg_quality: int | None = Field(default=None, ge=1, le=100)
    detectors: list[str] = Field(default_factory=lambda: ["mahalanobis"])
    reject_fpr: float | None = Field(default=None, gt=0, lt=1)
    adaptive: bool = True
    adaptive_steps: int = Field(default=50, ge=1)

    @field_validator("detectors")
    @classmethod
    def _registered(cls, names: list[str]) -> list[str]:
        unknown = [n for n in names if n not in DETECTORS]
        if unknown:
            raise ValueError(f"unknown detector {unknown[0]!r}; available: {', '.join(DETECTORS.names())}")
        return names

    def transform_specs(self) -> list[dict[str, Any]]:
        """The input transforms in the order they run (bit depth, median, JPEG), as TRANSFORMS specs."""
        chosen = (
            ("bit-depth", "bits", self.bit_depth),
            ("median", "size", self.median),
            ("jpeg", "quality", self.jpeg_quality),
        )
        return [{"name": name, option: value} for name, option, value in chosen if value is not None]
